#!/usr/bin/env python3
"""Our jitter buffer against simple designs, on the same seeded packet traces.

Per trace (the bundled sentence three times over, Opus 24 kbit/s with in-band FEC, 20 ms
packets, impaired by `voip.netsim`; our buffer pulled every 10 ms on a simulated clock):
  ours      voip.jitter.JitterBuffer
  oracle    a fixed playout delay, the smallest (1 ms steps) with <= 1% of packets late on that trace
  fixed200  a fixed 200 ms playout delay (GStreamer's rtpjitterbuffer default latency)
  seq4      a sequence-only buffer with a prefetch of 4 packets and no clock (aiortc's design):
            it waits for a missing packet until 4 later ones are buffered, then gives it up
Columns: mean buffer delay (arrival to playout of played packets), late (packets that arrived
but too late to play, % of sent), concealed (PLC, % of the stream; FEC-rebuilt frames are not
counted), PESQ-WB against the source.

  gst       GStreamer's own receiver (rtpjitterbuffer latency=200 do-lost=true, opusdec plc=true
            use-inband-fec=true), fed the same packets over UDP on 127.0.0.1 at their arrival times,
            in real time (so this column takes the length of the speech per trace). Its audio goes
            to a file, unpaced (--gst-output file: a stall leaves no gap), or to the sound device,
            recorded back (--gst-output device): what a listener hears, and about when: the delay
            column then is first packet sent to first sample recorded, the device's own path
            (a few tens of ms) included.
Drift traces run the sender's clock 1000 ppm fast or slow (24 ms over the 24 s).

    scripts/setup --bench   # GStreamer, for the gst column
    eval "$(scripts/virtual-audio start)"   # for --gst-output device
    .venv/bin/python scripts/bench_jitter.py [--seed 1] [--no-gstreamer] [--gst-output device]
        [--jitter FIELD=VALUE ...]   # our buffer with other JitterConfig settings
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import OpusDecoder, OpusEncoder, OpusSettings
from voip.io.files import bundled_speech, read_48k
from voip.jitter import JitterBuffer, JitterConfig
from voip.netsim import NetworkSimulator, NetworkSpec
from voip.quality import align, pesq_wb
from voip.rtp import Packetizer

FRAME = 960
STEP = FRAME / SAMPLE_RATE
PULL = SAMPLE_RATE // 100  # our buffer is asked for 10 ms at a time, as WebRTC's audio device asks NetEq
TRACES = [
    ("jitter 10 ms", "jitter=10ms"),
    ("jitter 30 ms", "jitter=30ms"),
    ("jitter 60 ms", "jitter=60ms"),
    ("spikes", "spikes"),
    ("loss 5%", "loss=5%"),
    ("loss 10%", "loss=10%"),
    ("bursty loss", "loss=10%,burst=3"),
    ("reordering", "jitter=5ms,reorder=5%"),
    ("drift +1000 ppm", "jitter=5ms,drift=1000ppm"),
    ("drift -1000 ppm", "jitter=5ms,drift=-1000ppm"),
]
MAX_LAG_S = 2.0  # PESQ alignment: within this, not one repetition of the sentence off
REPEATS = 3  # the bundled sentence three times over (24 s): time to learn, and to drift 24 ms


@dataclass
class Arrival:
    index: int
    time: float


def encode(audio: np.ndarray, expected_loss_percent: int) -> list[bytes]:
    """As a sender would after RTCP told it the loss: FEC bits only when there is loss."""
    encoder = OpusEncoder(OpusSettings(fec=True, expected_loss_percent=expected_loss_percent))
    frames = len(audio) // FRAME
    return [encoder.encode(audio[i * FRAME : (i + 1) * FRAME]) for i in range(frames)]


def trace(spec: str, count: int, seed: int) -> list[Arrival]:
    """When each packet arrives (lost ones do not), sent every 20 ms of the sender's clock from t = 0."""
    if spec == "spikes":  # every 3 s the path stalls for 300 ms, then releases what it held
        arrivals = []
        for i in range(count):
            sent = i * STEP
            phase = sent % 3.0
            arrivals.append(Arrival(i, sent + (1.3 - phase if 1.0 <= phase < 1.3 else 0.0) + 0.001))
        return arrivals
    network = NetworkSpec.parse(spec)
    net: NetworkSimulator[int] = NetworkSimulator(network, random.Random(seed))
    send_step = STEP / (1 + network.drift_ppm * 1e-6)
    arrivals = []
    for i in range(count):
        net.send(i, i * send_step)
        arrivals += [Arrival(item, when) for when, item in net.deliver_timed(i * send_step)]
    arrivals += [Arrival(item, when) for when, item in net.deliver_timed(float("inf"))]
    first: dict[int, Arrival] = {}
    for a in arrivals:  # duplicates: the first copy counts
        first.setdefault(a.index, a)
    return sorted(first.values(), key=lambda a: a.time)


@dataclass
class Result:
    delay_ms: float
    late_percent: float
    concealed_percent: float
    output: np.ndarray


def run_ours(packets: list[bytes], arrivals: list[Arrival], config: JitterConfig) -> Result:
    jb = JitterBuffer(OpusDecoder(), config)
    last = arrivals[-1].index

    def push(i: int, payload: bytes, now: float) -> None:
        jb.push(i * FRAME, payload, FRAME, now)
        if i == last:
            jb.end_of_stream()  # as the sender's BYE would

    out = _drive(arrivals, packets, push, jb.pull, lambda: jb.drained, PULL)
    stats = jb.stats(0.0)
    total_ms = len(packets) * STEP * 1000
    late = 100 * stats.packets_late / len(packets)
    return Result(stats.buffer_delay_ms, late, 100 * stats.concealed_ms / total_ms, out)


def _drive(
    arrivals: list[Arrival],
    packets: list[bytes],
    push: Callable[[int, bytes, float], object],
    pull: Callable[[int, float], np.ndarray],
    done: Callable[[], bool],
    pull_samples: int = FRAME,
) -> np.ndarray:
    """Push packets as they arrive, pull every `pull_samples`, until the buffer has played everything."""
    out, k, tick = [], 0, 0
    while k < len(arrivals) or not done():
        now = tick * pull_samples / SAMPLE_RATE
        while k < len(arrivals) and arrivals[k].time <= now:
            push(arrivals[k].index, packets[arrivals[k].index], arrivals[k].time)
            k += 1
        out.append(pull(pull_samples, now))
        tick += 1
    return np.concatenate(out)


class FixedDelay:
    """Packet i plays at first_arrival_of_packet_0_path + delay + i * 20 ms: no adaptation at all."""

    def __init__(self, packets: list[bytes], arrivals: list[Arrival], delay: float) -> None:
        self.decoder = OpusDecoder()
        self.packets = packets
        self.arrived = {a.index: a.time for a in arrivals}
        self.base = min(a.time - a.index * STEP for a in arrivals) + delay  # playout of packet 0
        self.late = self.concealed = 0
        self.delays: list[float] = []

    def run(self) -> Result:
        out = []
        for i in range(len(self.packets)):
            due = self.base + i * STEP
            when = self.arrived.get(i)
            if when is not None and when <= due:
                out.append(self.decoder.decode(self.packets[i]))
                self.delays.append(due - when)
                continue
            if when is not None:
                self.late += 1
            following = self.arrived.get(i + 1)
            if following is not None and following <= due and self.decoder.has_fec(self.packets[i + 1]):
                out.append(self.decoder.decode_fec(self.packets[i + 1], FRAME))  # rebuilt, not concealed
            else:
                self.concealed += 1
                out.append(self.decoder.conceal(FRAME))
        n = len(self.packets)
        return Result(
            1000 * float(np.mean(self.delays)), 100 * self.late / n, 100 * self.concealed / n, np.concatenate(out)
        )


def late_fraction(arrivals: list[Arrival], delay: float) -> float:
    base = min(a.time - a.index * STEP for a in arrivals) + delay
    return sum(a.time > base + a.index * STEP for a in arrivals) / len(arrivals)


def oracle_delay(arrivals: list[Arrival]) -> float:
    delay = 0.0
    while late_fraction(arrivals, delay) > 0.01:
        delay += 0.001
    return delay


class SequenceOnly:
    """aiortc's idea: no clock; start after 4 packets, wait for a missing one until 4 later are here."""

    PREFETCH = 4

    def __init__(self) -> None:
        self.decoder = OpusDecoder()
        self.buffer: dict[int, tuple[bytes, float]] = {}
        self.next: int | None = None
        self.late = self.concealed = 0
        self.delays: list[float] = []

    def push(self, index: int, payload: bytes, now: float) -> None:
        if self.next is not None and index < self.next:
            self.late += 1
            return
        self.buffer[index] = (payload, now)

    def drained(self, last: int) -> bool:
        return self.next is not None and self.next > last

    def pull(self, samples: int, now: float) -> np.ndarray:
        if self.next is None:
            if len(self.buffer) < self.PREFETCH:
                return np.zeros(samples, dtype=np.float32)
            self.next = min(self.buffer)
        packet = self.buffer.pop(self.next, None)
        if packet is not None:
            self.next += 1
            self.delays.append(now - packet[1])
            return self.decoder.decode(packet[0])
        self.concealed += 1
        if sum(1 for i in self.buffer if i > self.next) >= self.PREFETCH:
            self.next += 1  # give the missing packet up; the delay it built up stays
        return self.decoder.conceal(samples)


def run_sequence_only(packets: list[bytes], arrivals: list[Arrival]) -> Result:
    buffer = SequenceOnly()
    last = max(a.index for a in arrivals)
    out = _drive(arrivals, packets, buffer.push, buffer.pull, lambda: buffer.drained(last))
    n = len(packets)
    return Result(1000 * float(np.mean(buffer.delays)), 100 * buffer.late / n, 100 * buffer.concealed / n, out)


GST_RECEIVER = (
    'udpsrc port={port} caps="application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=111" '
    "! rtpjitterbuffer latency=200 do-lost=true ! rtpopusdepay ! opusdec plc=true use-inband-fec=true "
    "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 ! "
)
GST_OUTPUTS = {
    "file": "wavenc ! filesink location={out}",  # as fast as it decodes: a stall leaves no gap
    "device": "alsasink device=default",  # paced by the sound card; we record what it plays
}


@dataclass
class Recording:
    audio: np.ndarray
    send_offset_s: float | None  # device output: when the first packet was sent, from the recording's start


def run_gstreamer(packets: list[bytes], arrivals: list[Arrival], output: str) -> Recording | None:
    """Replay the trace to gst-launch over UDP in real time; None when GStreamer is not installed.

    With output "device", GStreamer plays to the default ALSA device (the virtual PipeWire
    node of scripts/virtual-audio, which hands back what it plays) while we record it: what a
    listener would hear, stalls and all, and when.
    """
    if shutil.which("gst-launch-1.0") is None:
        return None
    packetizer = Packetizer(ssrc=0x6A57, payload_type=111, initial_sequence=1000, initial_timestamp=0)
    datagrams = [packetizer.packetize(payload, FRAME).serialize() for payload in packets]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        out = os.path.join(tmp, "gst.wav")
        recorded: list[np.ndarray] = []
        if output == "device":
            import sounddevice

            def capture(block: np.ndarray, frames: int, when: object, status: object) -> None:
                recorded.append(block[:, 0].copy())

            stack.enter_context(
                sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", callback=capture)
            )
        recording_started = time.monotonic()
        pipeline = GST_RECEIVER.format(port=port) + GST_OUTPUTS[output].format(out=out)
        gst = subprocess.Popen(f"gst-launch-1.0 -q -e {pipeline}", shell=True, start_new_session=True)
        try:
            time.sleep(1.0)  # let the pipeline reach PLAYING
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                start = time.monotonic()
                for a in arrivals:  # bounded: one datagram per packet of the trace
                    delay = start + a.time - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    sock.sendto(datagrams[a.index], ("127.0.0.1", port))
            time.sleep(0.5)  # the jitter buffer's latency drains
        finally:
            os.killpg(gst.pid, signal.SIGINT)  # -e: end of stream, so wavenc writes its header
            try:
                gst.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(gst.pid, signal.SIGKILL)
                gst.wait()
        if output == "device":
            return Recording(np.concatenate(recorded), start - recording_started) if recorded else None
        if not os.path.exists(out) or os.path.getsize(out) < 1000:
            return None
        return Recording(read_48k(out), None)


def gstreamer_row(name: str, reference: np.ndarray, gst: Recording | None, output: str) -> str:
    """PESQ of what GStreamer played; from a device, also about how long after sending it played
    the first packet (like our buffer delay, plus the sound device's own path)."""
    design = f"gst (200 ms, {output})"
    if gst is None:
        return f"| {name} | {design} | | | | n/a (no GStreamer) |"
    # a device recording starts before GStreamer does: allow that in the alignment
    max_lag = MAX_LAG_S + (2.0 if gst.send_offset_s is not None else 0.0)
    _, _, lag = align(reference, gst.audio, max_lag)
    delay = f"~{(lag / SAMPLE_RATE - gst.send_offset_s) * 1000:.0f}" if gst.send_offset_s is not None else ""
    return f"| {name} | {design} | {delay} | | | {pesq_wb(reference, gst.audio, max_lag):.2f} |"


def jitter_config(items: list[str]) -> JitterConfig:
    """JitterConfig with FIELD=VALUE changes, each value of its field's type."""
    default = JitterConfig()
    changes: dict[str, Any] = {}  # float or int, as the field is
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not hasattr(default, name):
            raise ValueError(f"expected FIELD=VALUE with a JitterConfig field, not {item!r}")
        changes[name] = type(getattr(default, name))(value)
    return dataclasses.replace(default, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-gstreamer", dest="gstreamer", action="store_false", help="skip the real-time GStreamer column"
    )
    parser.add_argument(
        "--gst-output",
        choices=sorted(GST_OUTPUTS),
        default="file",
        help="where GStreamer's audio goes: a file, unpaced (default), or the default sound device, "
        "recorded back (run scripts/virtual-audio start first): what a listener hears",
    )
    parser.add_argument(
        "--jitter",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="a JitterConfig field for our buffer, e.g. --jitter shorten_min_ms=5 --jitter quantile=0.98 "
        "(repeatable): how the defaults were chosen",
    )
    args = parser.parse_args()
    try:
        config = jitter_config(args.jitter)
    except ValueError as exc:
        parser.error(f"--jitter: {exc}")
    if args.jitter:
        print("ours with " + ", ".join(args.jitter))
    sentence = read_48k(bundled_speech())
    source = np.tile(sentence[: len(sentence) // FRAME * FRAME], REPEATS)
    reference = source
    print(
        f"seed {args.seed}; bundled speech x{REPEATS}, {len(reference) / SAMPLE_RATE:.1f} s; Opus 24 kbit/s, "
        f"20 ms packets; our buffer pulled every {PULL * 1000 // SAMPLE_RATE} ms"
    )
    print("(FEC tuned to the trace's loss, as RTCP would have it; none on loss-free traces)\n")
    print("| trace | design | buffer delay ms | late % | concealed % | PESQ-WB |")
    print("|---|---|---:|---:|---:|---:|")
    for name, spec in TRACES:
        loss = NetworkSpec.parse(spec).loss if spec != "spikes" else 0.0
        packets = encode(source, round(loss * 100))
        arrivals = trace(spec, len(packets), args.seed)
        oracle = oracle_delay(arrivals)
        rows = [
            ("ours", run_ours(packets, arrivals, config)),
            (f"oracle ({oracle * 1000:.0f} ms)", FixedDelay(packets, arrivals, oracle).run()),
            ("fixed200", FixedDelay(packets, arrivals, 0.2).run()),
            ("seq4", run_sequence_only(packets, arrivals)),
        ]
        for design, r in rows:
            print(
                f"| {name} | {design} | {r.delay_ms:.0f} | {r.late_percent:.1f} | {r.concealed_percent:.1f} "
                f"| {pesq_wb(reference, r.output, MAX_LAG_S):.2f} |"
            )
        if args.gstreamer:
            print(gstreamer_row(name, reference, run_gstreamer(packets, arrivals, args.gst_output), args.gst_output))


if __name__ == "__main__":
    main()
