#!/usr/bin/env python3
"""Playout judged by what a listener hears: our jitter buffer against the best fixed delay in hindsight.

For each trace and seed, a conversation of several voices (scripts/speech_corpus.py: espeak-ng
voices, women and men, and the bundled sample; 60 s, 120 s for the non-stationary trace) is
encoded with Opus 24 kbit/s in 20 ms packets (in-band FEC tuned to the trace's loss, as RTCP
would have it), and the packets arrive as the trace says. Receivers, all with the same decoder,
PLC and FEC:
  ours      voip.playout.JitterBuffer pulled every 10 ms (NetEq's cadence)
  ours@20   the same pulled every 20 ms (a device with 20 ms blocks)
  best N    a fixed playout delay of N ms after the fastest path: the one delay with the best
            mean MOS_CQ over the trace's seeds (a sweep in 20 ms steps, then the neighbours of
            the best, 10 ms either side): the bar
  per seed  the best delay of the 20 ms sweep for each seed on its own: a bound no receiver
            can reach, as it picks, on the very score it is judged by, what suited each seed's chance
  fixed200  a fixed 200 ms (GStreamer's rtpjitterbuffer default, the way `gst` below plays it)
  seq4      a sequence-only buffer with a prefetch of 4 packets and no clock (aiortc's design)
  gst       with --gstreamer: GStreamer's own receiver (rtpjitterbuffer latency=200, opusdec
            plc=true use-inband-fec=true) fed the packets over UDP on 127.0.0.1 in real time
Columns, the mean over seeds (and the worst seed for MOS_CQ):
  PESQ      PESQ-WB (P.862.2) of each utterance aligned on its own, averaged
  PLCMOS    PLCMOS v2 of the whole output (non-intrusive; speechmos), from 0.1 s before its first
            sound, the mean over 8 shifts (voip.quality.plcmos)
  Ta        one-way mouth-to-ear delay, ms: frame + codec lookahead + path + buffer + 40 ms of
            devices (voip.emodel.mouth_to_ear_ms), averaged over played packets
  MOS_CQ    conversational quality: MOS(R(PESQ) - Idd(Ta)), ITU-T G.107 (voip.emodel)
  late      packets that arrived too late to play, % of sent; conc. PLC, % of the stream
  warp      ours only: time-stretched audio, ms (accelerated + expanded)

    scripts/setup --bench
    .venv/bin/python scripts/bench_jitter.py [--seeds 1 2 3] [--traces wifi lte ...] [--gstreamer]
        [--jitter FIELD=VALUE ...]   # our buffer with other JitterConfig settings
        [--ours-only]                # and only it: a setting's A/B in minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speech_corpus import conversation

from voip import SAMPLE_RATE
from voip.codec import OpusDecoder, OpusEncoder, OpusSettings
from voip.emodel import conversational_mos, mouth_to_ear_ms
from voip.io.files import read_48k
from voip.playout import JitterBuffer, JitterConfig
from voip.quality import plcmos, utterance_pesq
from voip.rtp import Packetizer

FRAME = 960
FRAME_MS = 20.0
STEP = FRAME / SAMPLE_RATE
SWEEP_MAX_S = 0.6  # the fixed-delay sweep stops here, or where no packet is late any more


@dataclass(frozen=True)
class Path:
    """One state of a network path; a trace is a sequence of them in time."""

    base_ms: float = 0.0
    jitter_ms: float = 0.0  # Gaussian, standard deviation
    loss: float = 0.0
    burst: float = 1.0  # mean loss burst, packets (Gilbert)
    reorder: float = 0.0  # fraction held back behind one to three later packets
    spike_rate: float = 0.0  # fraction of packets held back alone by spike_ms (Wi-Fi retries)
    spike_ms: tuple[float, float] = (30.0, 150.0)
    stall_every_s: float = 0.0  # mean time between stalls (everything waits, then comes at once)
    stall_ms: tuple[float, float] = (100.0, 300.0)
    periodic_stalls: bool = False  # stalls exactly every stall_every_s, of stall_ms[1]


@dataclass(frozen=True)
class Trace:
    key: str  # what --traces takes
    name: str
    phases: tuple[tuple[float, Path], ...]  # (from second, path)
    drift_ppm: float = 0.0
    speech_s: float = 60.0

    @property
    def loss(self) -> float:
        return max(path.loss for _, path in self.phases)


def _one(key: str, name: str, path: Path, **kw: Any) -> Trace:
    return Trace(key, name, ((0.0, path),), **kw)


CALM = Path(base_ms=20, jitter_ms=3)
TRACES = [
    _one("jitter10", "jitter 10 ms", Path(jitter_ms=10)),
    _one("jitter30", "jitter 30 ms", Path(jitter_ms=30)),
    _one("jitter60", "jitter 60 ms", Path(jitter_ms=60)),
    _one("spikes", "spikes 300 ms / 3 s", Path(stall_every_s=3.0, stall_ms=(300, 300), periodic_stalls=True)),
    _one("loss5", "loss 5%", Path(loss=0.05)),
    _one("loss10", "loss 10%", Path(loss=0.10)),
    _one("bursty", "bursty loss", Path(jitter_ms=5, loss=0.10, burst=3)),
    _one("reorder", "reordering", Path(jitter_ms=5, reorder=0.05)),
    _one("drift+", "drift +1000 ppm", Path(jitter_ms=5), drift_ppm=1000),
    _one("drift-", "drift -1000 ppm", Path(jitter_ms=5), drift_ppm=-1000),
    _one("wifi", "Wi-Fi-like", Path(base_ms=5, jitter_ms=3, loss=0.01, burst=2, spike_rate=0.01, spike_ms=(30, 150))),
    _one(
        "lte", "LTE-like", Path(base_ms=60, jitter_ms=15, loss=0.015, burst=1.5, stall_every_s=15, stall_ms=(100, 300))
    ),
    Trace(
        "nonstationary",
        "calm, jittery minute, calm",
        ((0.0, CALM), (30.0, Path(base_ms=20, jitter_ms=40, spike_rate=0.02, spike_ms=(50, 200))), (90.0, CALM)),
        speech_s=120.0,
    ),
    Trace(
        "route", "route change +80 ms", ((0.0, Path(base_ms=20, jitter_ms=5)), (30.0, Path(base_ms=100, jitter_ms=5)))
    ),
]


@dataclass
class Arrival:
    index: int
    time: float
    sent: float


def arrivals_of(trace: Trace, count: int, seed: int) -> list[Arrival]:
    """When each packet arrives (lost ones do not), sent every 20 ms of the sender's clock from t = 0."""
    rng = random.Random(seed)
    send_step = STEP / (1 + trace.drift_ppm * 1e-6)
    end = count * send_step + 1.0
    stalls = _stalls(trace, end, rng)
    in_burst = False
    arrivals = []
    for i in range(count):
        sent = i * send_step
        path = next(p for start, p in reversed(trace.phases) if sent >= start)
        leave = 1.0 / path.burst
        enter = path.loss * leave / (1.0 - path.loss)
        in_burst = rng.random() >= leave if in_burst else rng.random() < enter
        delay = max(0.0, rng.gauss(path.base_ms, path.jitter_ms)) / 1000.0 if path.jitter_ms else path.base_ms / 1000
        if rng.random() < path.reorder:
            delay += rng.uniform(0.020, 0.060)
        if rng.random() < path.spike_rate:
            delay += rng.uniform(*path.spike_ms) / 1000.0
        when = sent + delay
        for start, stop in stalls:
            if start <= when < stop:
                when = stop + 0.0001 * (i % 10)
        if not in_burst:
            arrivals.append(Arrival(i, when, sent))
    return sorted(arrivals, key=lambda a: a.time)


def _stalls(trace: Trace, end: float, rng: random.Random) -> list[tuple[float, float]]:
    stalls = []
    for index, (start, path) in enumerate(trace.phases):
        stop = trace.phases[index + 1][0] if index + 1 < len(trace.phases) else end
        t = start
        while path.stall_every_s:
            t += path.stall_every_s if path.periodic_stalls else rng.expovariate(1.0 / path.stall_every_s)
            if t >= stop:
                break
            length = path.stall_ms[1] if path.periodic_stalls else rng.uniform(*path.stall_ms)
            stalls.append((t, t + length / 1000.0))
    return stalls


def encode(audio: np.ndarray, expected_loss_percent: int) -> tuple[list[bytes], float]:
    """The packets, as a sender would send them after RTCP told it the loss; and the codec lookahead, ms."""
    encoder = OpusEncoder(OpusSettings(fec=True, expected_loss_percent=expected_loss_percent))
    frames = len(audio) // FRAME
    packets = [encoder.encode(audio[i * FRAME : (i + 1) * FRAME]) for i in range(frames)]
    return packets, encoder.lookahead_samples * 1000.0 / SAMPLE_RATE


@dataclass
class Played:
    """What a receiver played, and the delays to judge it by."""

    output: np.ndarray
    path_ms: float  # mean send-to-arrival of the packets
    buffer_ms: float  # mean arrival-to-playout of played packets
    late: int
    concealed: int  # 20 ms frames of PLC (FEC-rebuilt ones are not counted)
    warped_ms: float = 0.0


def run_ours(packets: list[bytes], arrivals: list[Arrival], config: JitterConfig, pull: int) -> Played:
    jb = JitterBuffer(OpusDecoder(), config)
    jb.observe_path_delay(min(a.time - a.sent for a in arrivals))  # what RTCP's RTT / 2 would tell it
    last = arrivals[-1].index

    def push(i: int, payload: bytes, now: float) -> None:
        jb.push(i * FRAME, payload, FRAME, now)
        if i == last:
            jb.end_of_stream(now)  # as the sender's BYE would

    out = _drive(arrivals, packets, push, jb.pull, lambda: jb.drained, pull)
    stats = jb.stats(0.0)
    return Played(
        out,
        _mean_path_ms(arrivals),
        stats.buffer_delay_ms,
        stats.packets_late,
        round(stats.concealed_ms / FRAME_MS),
        stats.accelerated_ms + stats.expanded_ms,
    )


def _mean_path_ms(arrivals: list[Arrival]) -> float:
    return 1000.0 * float(np.mean([a.time - a.sent for a in arrivals]))


def _drive(
    arrivals: list[Arrival],
    packets: list[bytes],
    push: Callable[[int, bytes, float], object],
    pull: Callable[[int, float], np.ndarray],
    done: Callable[[], bool],
    pull_samples: int = FRAME,
) -> np.ndarray:
    """Push packets as they arrive, pull every `pull_samples`, until the buffer has played
    everything; bounded at 10 s past the last arrival, whatever the receiver does."""
    out, k, tick = [], 0, 0
    last_tick = (arrivals[-1].time + 10.0) * SAMPLE_RATE / pull_samples
    while (k < len(arrivals) or not done()) and tick < last_tick:
        now = tick * pull_samples / SAMPLE_RATE
        while k < len(arrivals) and arrivals[k].time <= now:
            push(arrivals[k].index, packets[arrivals[k].index], arrivals[k].time)
            k += 1
        out.append(pull(pull_samples, now))
        tick += 1
    return np.concatenate(out)


def run_fixed(packets: list[bytes], arrivals: list[Arrival], delay: float) -> Played:
    """Packet i plays `delay` after the fastest path would have brought it: no adaptation at all."""
    decoder = OpusDecoder()
    arrived = {a.index: a.time for a in arrivals}
    base = min(a.time - a.index * STEP for a in arrivals) + delay  # playout of packet 0
    late = concealed = 0
    waits, out = [], []
    for i in range(len(packets)):
        due = base + i * STEP
        when = arrived.get(i)
        if when is not None and when <= due:
            out.append(decoder.decode(packets[i]))
            waits.append(due - when)
            continue
        late += when is not None
        following = arrived.get(i + 1)
        if following is not None and following <= due and i + 1 < len(packets) and decoder.has_fec(packets[i + 1]):
            out.append(decoder.decode_fec(packets[i + 1], FRAME))  # rebuilt, not concealed
        else:
            concealed += 1
            out.append(decoder.conceal(FRAME))
    return Played(np.concatenate(out), _mean_path_ms(arrivals), 1000 * float(np.mean(waits)), late, concealed)


class SequenceOnly:
    """aiortc's idea: no clock; start after 4 packets, wait for a missing one until 4 later are here."""

    PREFETCH = 4

    def __init__(self) -> None:
        self.decoder = OpusDecoder()
        self.buffer: dict[int, tuple[bytes, float]] = {}
        self.next: int | None = None
        self.late = self.concealed = 0
        self.delays: list[float] = []
        self.ended = False  # everything has arrived (as a BYE would say): nothing more to wait for

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
        if self.ended or sum(1 for i in self.buffer if i > self.next) >= self.PREFETCH:
            self.next += 1  # give the missing packet up; the delay it built up stays
        return self.decoder.conceal(samples)


def run_sequence_only(packets: list[bytes], arrivals: list[Arrival]) -> Played:
    buffer = SequenceOnly()
    last = max(a.index for a in arrivals)
    final = arrivals[-1].index

    def push(index: int, payload: bytes, now: float) -> None:
        buffer.push(index, payload, now)
        buffer.ended = buffer.ended or index == final

    out = _drive(arrivals, packets, push, buffer.pull, lambda: buffer.drained(last))
    return Played(out, _mean_path_ms(arrivals), 1000 * float(np.mean(buffer.delays)), buffer.late, buffer.concealed)


@dataclass
class Score:
    pesq: float
    plcmos: float
    ta_ms: float
    mos_cq: float
    late_percent: float
    concealed_percent: float
    warped_ms: float


@dataclass
class Case:
    """One trace and seed: the speech, its packets and when they arrive."""

    reference: np.ndarray
    utterances: list[tuple[int, int]]
    packets: list[bytes]
    arrivals: list[Arrival]
    lookahead_ms: float

    def ta_ms(self, played: Played) -> float:
        return mouth_to_ear_ms(FRAME_MS, self.lookahead_ms, played.path_ms, played.buffer_ms)

    def listening(self, played: Played) -> float:
        return float(np.mean(utterance_pesq(self.reference, played.output, self.utterances)))

    def score(self, played: Played, pesq: float | None = None, judge_plcmos: bool = True) -> Score:
        pesq = self.listening(played) if pesq is None else pesq
        ta = self.ta_ms(played)
        n = len(self.packets)
        return Score(
            pesq,
            plcmos(played.output) if judge_plcmos else math.nan,
            ta,
            conversational_mos(pesq, ta),
            100 * played.late / n,
            100 * played.concealed / n,
            played.warped_ms,
        )


def make_case(trace: Trace, seed: int, noise_dbfs: float | None = None) -> Case:
    """`noise_dbfs`: white noise under the speech, sent and judged with it (a noisy line,
    whose pauses are never digital silence); the utterances are those of the clean speech."""
    reference, utterances = conversation(trace.speech_s)
    reference = reference[: len(reference) // FRAME * FRAME]
    if noise_dbfs is not None:
        noise = np.random.default_rng(seed).standard_normal(len(reference)) * 10 ** (noise_dbfs / 20)
        reference = (reference + noise).astype(np.float32)
    packets, lookahead_ms = encode(reference, round(trace.loss * 100))
    return Case(reference, utterances, packets, arrivals_of(trace, len(packets), seed), lookahead_ms)


def fixed_sweep(case: Case, delays_ms: list[int] | None = None) -> dict[int, Score]:
    """Fixed delays scored without PLCMOS (the chosen one gets it later): by default 20 ms
    steps up to two frames past where nothing is late (beyond that only the delay grows:
    `fixed_score_at`). Delays that play and rebuild the same packets sound the same: their
    audio is judged once."""
    base = min(a.time - a.index * STEP for a in case.arrivals)
    if delays_ms is None:
        latest = max(a.time - base - a.index * STEP for a in case.arrivals)
        top = min(SWEEP_MAX_S, math.ceil(latest * 100) / 100 + 2 * STEP)  # past it: FEC needs the next packet
        delays_ms = list(range(0, round(top * 1000) + 20, 20))
    judged: dict[tuple[tuple[int, ...], int], float] = {}
    sweep = {}
    for delay_ms in delays_ms:
        delay = delay_ms / 1000
        played = run_fixed(case.packets, case.arrivals, delay)
        late = tuple(a.index for a in case.arrivals if a.time > base + delay + a.index * STEP)
        key = (late, played.concealed)  # the same late packets, the same FEC rebuilds
        if key not in judged:
            judged[key] = case.listening(played)
        sweep[delay_ms] = case.score(played, judged[key], judge_plcmos=False)
    return sweep


def fixed_score_at(sweep: dict[int, Score], delay_ms: int) -> Score:
    """A swept delay's score; past the sweep's end nothing more plays, it only plays later."""
    if delay_ms in sweep:
        return sweep[delay_ms]
    top = max(sweep)
    assert delay_ms > top, (delay_ms, top)
    last = sweep[top]
    ta = last.ta_ms + delay_ms - top
    return dataclasses.replace(last, ta_ms=ta, mos_cq=conversational_mos(last.pesq, ta))


def best_delay(sweeps: list[dict[int, Score]]) -> int:
    """The one fixed delay (ms) for a trace with the best mean MOS_CQ over its seeds."""
    delays = sorted(set().union(*sweeps))
    return max(delays, key=lambda d: float(np.mean([fixed_score_at(sweep, d).mos_cq for sweep in sweeps])))


def run_case(
    job: tuple[Trace, int, JitterConfig, bool, bool, int | None, bool, float | None],
) -> tuple[list[tuple[str, Score]], dict[int, Score]]:
    """Our receivers and the fixed ones on one trace and seed, and the whole fixed-delay sweep
    (with `ours_only`, our receiver pulled every 10 ms alone, and the fixed delay `fixed_ms`
    if given: for trying a setting against a known bar)."""
    trace, seed, config, gstreamer, ours_only, fixed_ms, judge_plcmos, noise_dbfs = job
    case = make_case(trace, seed, noise_dbfs)
    ours = ("ours", case.score(run_ours(case.packets, case.arrivals, config, SAMPLE_RATE // 100), None, judge_plcmos))
    if ours_only:
        if fixed_ms is None:
            return [ours], {}
        fixed = case.score(run_fixed(case.packets, case.arrivals, fixed_ms / 1000), None, judge_plcmos)
        return [ours, (f"fixed {fixed_ms} ms", fixed)], {}
    rows = [
        ours,
        ("ours@20", case.score(run_ours(case.packets, case.arrivals, config, FRAME))),
        ("fixed200", case.score(run_fixed(case.packets, case.arrivals, 0.2))),
        ("seq4", case.score(run_sequence_only(case.packets, case.arrivals))),
    ]
    if gstreamer:
        played = run_gstreamer(case.packets, case.arrivals)
        if played is not None:
            rows.append(("gst", case.score(played)))
    return rows, fixed_sweep(case)


def refine_case(job: tuple[Trace, int, list[int], float | None]) -> dict[int, Score]:
    """Fixed delays (ms) on one trace and seed, with both judges."""
    trace, seed, delays_ms, noise_dbfs = job
    case = make_case(trace, seed, noise_dbfs)
    return {d: case.score(run_fixed(case.packets, case.arrivals, d / 1000)) for d in delays_ms}


GST_RECEIVER = (
    'udpsrc port={port} caps="application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=111" '
    "! rtpjitterbuffer latency=200 do-lost=true ! rtpopusdepay ! opusdec plc=true use-inband-fec=true "
    "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 ! wavenc ! filesink location={out}"
)


def run_gstreamer(packets: list[bytes], arrivals: list[Arrival]) -> Played | None:
    """Replay the trace to gst-launch over UDP in real time; None when GStreamer is not installed.

    Its audio goes to a file, unpaced, so its delay cannot be read off the output: it is
    taken to be fixed200's (200 ms after the first packet), which is how rtpjitterbuffer plays.
    """
    if shutil.which("gst-launch-1.0") is None:
        return None
    packetizer = Packetizer(ssrc=0x6A57, payload_type=111, initial_sequence=1000, initial_timestamp=0)
    datagrams = [packetizer.packetize(payload, FRAME).serialize() for payload in packets]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gst.wav")
        pipeline = GST_RECEIVER.format(port=port, out=out)
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
        if not os.path.exists(out) or os.path.getsize(out) < 1000:
            return None
        fixed = run_fixed(packets, arrivals, 0.2)
        return Played(read_48k(out), fixed.path_ms, fixed.buffer_ms, fixed.late, fixed.concealed)


def jitter_config(items: list[str]) -> JitterConfig:
    """JitterConfig with FIELD=VALUE changes, each value of its field's type."""
    default = JitterConfig()
    changes: dict[str, Any] = {}  # float or int, as the field is
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not hasattr(default, name):
            raise ValueError(f"expected FIELD=VALUE with a JitterConfig field, not {item!r}")
        kind = type(getattr(default, name))
        changes[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return dataclasses.replace(default, **changes)


@dataclass
class Row:
    label: str
    scores: list[Score]
    ours: bool = False  # warping is ours alone

    def mean(self, name: str) -> float:
        return float(np.mean([getattr(s, name) for s in self.scores]))

    def line(self, trace: Trace) -> str:
        worst = min(s.mos_cq for s in self.scores)
        plc = self.mean("plcmos")
        return (
            f"| {trace.name} | {self.label} | {self.mean('pesq'):.2f} | {'' if math.isnan(plc) else f'{plc:.2f}'} | "
            f"{self.mean('ta_ms'):.0f} | {self.mean('mos_cq'):.2f} ({worst:.2f}) | "
            f"{self.mean('late_percent'):.2f} | {self.mean('concealed_percent'):.2f} | "
            + (f"{self.mean('warped_ms'):.0f} |" if self.ours else " |")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--traces", nargs="+", choices=[t.key for t in TRACES], help="a subset (default: all)")
    parser.add_argument("--gstreamer", action="store_true", help="also GStreamer's receiver, in real time")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--ours-only", action="store_true", help="our receiver alone, no fixed delays: for trying a setting"
    )
    parser.add_argument(
        "--fixed",
        metavar="TRACE=MS",
        action="append",
        default=[],
        help="with --ours-only: also a fixed delay of MS ms on TRACE (the bar a full run found), repeatable",
    )
    parser.add_argument("--pesq-only", action="store_true", help="with --ours-only: no PLCMOS (minutes, not hours)")
    parser.add_argument(
        "--jitter",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="a JitterConfig field for our buffer, e.g. --jitter margin_ms=5 (repeatable)",
    )
    parser.add_argument(
        "--noise-dbfs",
        type=float,
        help="white noise this loud under the speech (e.g. -40: a noisy line, with no silent pauses)",
    )
    args = parser.parse_args()
    try:
        config = jitter_config(args.jitter)
    except ValueError as exc:
        parser.error(f"--jitter: {exc}")
    traces = [t for t in TRACES if args.traces is None or t.key in args.traces]
    try:
        fixed = {key: int(ms) for key, _, ms in (item.partition("=") for item in args.fixed)}
    except ValueError:
        parser.error(f"--fixed: expected TRACE=MS, not {args.fixed}")
    if (fixed or args.pesq_only) and not args.ours_only:
        parser.error("--fixed and --pesq-only go with --ours-only")
    print(
        f"seeds {' '.join(map(str, args.seeds))}; Opus 24 kbit/s, 20 ms packets"
        + ("; ours with " + ", ".join(args.jitter) if args.jitter else "")
        + (f"; white noise at {args.noise_dbfs:g} dBFS under the speech" if args.noise_dbfs is not None else "")
    )
    for trace in traces:  # synthesize each conversation once, before the workers need it
        conversation(trace.speech_s)
    jobs = [
        (trace, seed, config, args.gstreamer, args.ours_only, fixed.get(trace.key), not args.pesq_only, args.noise_dbfs)
        for trace in traces
        for seed in args.seeds
    ]
    with multiprocessing.Pool(args.processes) as pool:
        results = pool.map(run_case, jobs, chunksize=1)
        if args.ours_only:
            print("\n| trace | receiver | PESQ | PLCMOS | Ta ms | MOS_CQ (worst) | late % | conc. % | warp ms |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for trace in traces:
                mine = [rows for job, (rows, _) in zip(jobs, results, strict=True) if job[0] is trace]
                for index, (name, _) in enumerate(mine[0]):
                    print(Row(name, [rows[index][1] for rows in mine], ours=index == 0).line(trace))
            return
        bars = {
            trace.key: best_delay([sweep for job, (_, sweep) in zip(jobs, results, strict=True) if job[0] is trace])
            for trace in traces
        }
        # The 20 ms sweep's best and its neighbours, now with both judges: the best of the three is the bar
        fixed_jobs = [
            (trace, seed, [d for d in (bars[trace.key] + step for step in (-10, 0, 10)) if d >= 0], args.noise_dbfs)
            for trace in traces
            for seed in args.seeds
        ]
        refined = pool.map(refine_case, fixed_jobs, chunksize=1)
    print("\n| trace | receiver | PESQ | PLCMOS | Ta ms | MOS_CQ (worst) | late % | conc. % | warp ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for trace in traces:
        mine = [result for job, result in zip(jobs, results, strict=True) if job[0] is trace]
        names = [name for name, _ in mine[0][0]]
        rows = [Row(name, [dict(rows)[name] for rows, _ in mine], ours=name.startswith("ours")) for name in names]
        near = [scores for job, scores in zip(fixed_jobs, refined, strict=True) if job[0] is trace]
        delay = max(near[0], key=lambda d: float(np.mean([scores[d].mos_cq for scores in near])))
        rows.insert(2, Row(f"best fixed ({delay} ms)", [scores[delay] for scores in near]))
        hindsight = [max(sweep.values(), key=lambda score: score.mos_cq) for _, sweep in mine]
        delays = "/".join(
            str(next(d for d, score in sweep.items() if score is best))
            for (_, sweep), best in zip(mine, hindsight, strict=True)
        )
        rows.insert(3, Row(f"best per seed ({delays} ms)", hindsight))
        for row in rows:
            print(row.line(trace))


if __name__ == "__main__":
    main()
