#!/usr/bin/env python3
"""CPU time per 20 ms frame: bare Opus encode+decode against our whole send->receive path.

All run side by side in one process on the same speech, frame by frame in turn, so the
ratios hold on any machine: (a) libopus encode + decode, (b) encode, packetize, UDP sendto on 127.0.0.1,
recvfrom, parse, statistics, jitter buffer, decode; (c) the same in an encrypted call
(SRTP with AEAD_AES_128_GCM both ways, keys agreed by the call set-up); (d) (c) with the
speakerphone stage on one side (echo cancellation, noise suppression, gain control: render
what it plays, capture what it sends). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import socket
import time

import numpy as np

from voip.codec import OpusDecoder, OpusEncoder, OpusSettings
from voip.control import CallSettings
from voip.io.files import FileSource, bundled_speech
from voip.processing import AudioProcessor, ProcessingSettings
from voip.session import Session, SessionConfig

FRAME = 960


def speech_frames(count: int) -> list[np.ndarray]:
    source = FileSource(bundled_speech())
    audio = np.concatenate([source.read(48000 * 60)])
    reps = -(-count * FRAME // len(audio))
    audio = np.tile(audio, reps)
    return [audio[i * FRAME : (i + 1) * FRAME] for i in range(count)]


class BareCodec:
    """(a): libopus encode + decode, nothing else."""

    def __init__(self, complexity: int) -> None:
        self.encoder, self.decoder = OpusEncoder(OpusSettings(complexity=complexity)), OpusDecoder()

    def step(self, frame: np.ndarray, now: float) -> None:
        self.decoder.decode(self.encoder.encode(frame))

    def close(self) -> None:
        pass


def encrypted_call(opus: OpusSettings, tx: tuple[str, int], rx: tuple[str, int]) -> tuple[Session, Session]:
    """Two sessions whose call set-up (and key agreement) has run in memory."""
    sender, receiver = (
        Session(SessionConfig(opus=opus), random.Random(seed), 0.0, call=CallSettings()) for seed in (1, 2)
    )
    assert sender.control is not None and receiver.control is not None
    sender.control.call(rx, 0.0)
    for _ in range(3):  # INVITE; RINGING; ACCEPT; REVEAL
        for data, _ in sender.datagrams_to_send(0.0):
            receiver.receive_datagram(data, tx, 0.0)
        receiver.control.accept(0.0)
        for data, _ in receiver.datagrams_to_send(0.0):
            sender.receive_datagram(data, rx, 0.0)
    assert sender.encryption is not None and receiver.encryption is not None
    return sender, receiver


class WholePath:
    """(b), (c), (d): a sender and a receiver session with real sockets on 127.0.0.1 between."""

    def __init__(self, complexity: int, encrypted: bool = False, processed: bool = False) -> None:
        self.rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx_sock.bind(("127.0.0.1", 0))
        self.tx_sock.bind(("127.0.0.1", 0))
        opus = OpusSettings(complexity=complexity)
        tx, rx = self.tx_sock.getsockname(), self.rx_sock.getsockname()
        if encrypted:
            self.sender, self.receiver = encrypted_call(opus, tx, rx)
        else:
            self.sender = Session(SessionConfig(opus=opus, remote=rx), random.Random(1), 0.0)
            self.receiver = Session(SessionConfig(opus=opus, remote=tx), random.Random(2), 0.0)
        self.processor = AudioProcessor(ProcessingSettings()) if processed else None
        self.frames = 0

    def step(self, frame: np.ndarray, now: float) -> None:
        processor = self.processor
        self.sender.send_audio(frame if processor is None else processor.capture(frame, 0.05), now)
        for data, addr in self.sender.datagrams_to_send(now):
            self.tx_sock.sendto(data, addr)
        data, addr = self.rx_sock.recvfrom(2048)
        self.receiver.receive_datagram(data, addr, now)
        played = self.receiver.pull_audio(FRAME, now)
        if processor is not None:
            processor.render(played)  # one side's both halves: what it plays is the echo reference
        self.frames += 1

    def close(self) -> None:
        self.rx_sock.close()
        self.tx_sock.close()
        assert self.receiver.stats(self.frames * 0.02).packets_received == self.frames


def lockstep(frames: list[np.ndarray], complexity: int) -> list[float]:
    """CPU seconds per frame of (a)-(d), run frame by frame in turn: a machine whose speed
    changes from second to second (a hypervisor's other guests) slows all four alike, where
    whole runs one after another would each catch a different phase."""
    pipelines: list[BareCodec | WholePath] = [
        BareCodec(complexity),
        WholePath(complexity),
        WholePath(complexity, encrypted=True),
        WholePath(complexity, encrypted=True, processed=True),
    ]
    spent = [0.0] * len(pipelines)
    clock = time.process_time
    for i, frame in enumerate(frames):
        now = i * 0.02  # a simulated clock: the benchmark measures CPU, not pacing
        for k, pipeline in enumerate(pipelines):
            start = clock()
            pipeline.step(frame, now)
            spent[k] += clock() - start
    for pipeline in pipelines:
        pipeline.close()
    return [total / len(frames) for total in spent]


class StageTimer:
    """Wall time spent inside chosen methods, by wrapping them: where the encrypted path's
    time goes beside libopus. Each wrapped call adds ~0.3 us of its own."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: object, method: str, stage: str) -> None:
        inner = getattr(owner, method)
        clock = time.perf_counter
        self.seconds[stage] = 0.0  # the table keeps the order stages are wrapped in

        def timed(*args: object, **kwargs: object) -> object:
            start = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + clock() - start

        setattr(owner, method, timed)


def stages(frames: list[np.ndarray], complexity: int) -> dict[str, float]:
    """Microseconds per frame in each part of (c), the encrypted whole path."""
    path = WholePath(complexity, encrypted=True)
    timer = StageTimer()
    sender, receiver = path.sender, path.receiver
    assert sender._srtp is not None and receiver._srtp is not None
    timer.wrap(path, "step", "the whole frame")
    timer.wrap(sender, "send_audio", "send_audio (encode, packetize)")
    timer.wrap(sender._encoder, "encode", "  of which libopus encode")
    timer.wrap(sender, "datagrams_to_send", "datagrams_to_send (SRTP protect)")
    timer.wrap(sender._srtp, "protect", "  of which pylibsrtp protect")
    timer.wrap(receiver, "receive_datagram", "receive_datagram (unprotect, parse, statistics, buffer)")
    timer.wrap(receiver._srtp, "unprotect", "  of which pylibsrtp unprotect")
    timer.wrap(receiver.jitter, "push", "  of which the jitter buffer's push")
    timer.wrap(receiver.jitter._delay, "observe", "    of which the delay model")
    timer.wrap(receiver, "pull_audio", "pull_audio (playout decision, decode)")
    timer.wrap(receiver.jitter._decoder, "decode", "  of which libopus decode")
    for i, frame in enumerate(frames):
        path.step(frame, i * 0.02)
    path.close()
    micros = {stage: seconds / len(frames) * 1e6 for stage, seconds in timer.seconds.items()}
    parts = [stage for stage in micros if not stage.startswith(" ") and stage != "the whole frame"]
    micros["the rest: sendto, recvfrom, the loop"] = micros["the whole frame"] - sum(micros[p] for p in parts)
    return micros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=3000, help="frames per measurement (20 ms each)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the one with the least bare Opus time is kept")
    parser.add_argument(
        "--stages", action="store_true", help="instead: where (c)'s time goes, part by part, at complexity 10"
    )
    args = parser.parse_args()
    frames = speech_frames(args.frames)
    if args.stages:
        print("| part of (c) | us/frame |\n|---|---:|")
        for stage, micros in stages(frames, 10).items():
            print(f"| {stage} | {micros:.1f} |")
        return
    print(
        "| complexity | (a) bare Opus enc+dec, us/frame | (b) whole path, us/frame | (c) with SRTP, us/frame "
        "| (d) with SRTP and speakerphone processing, us/frame | (b)/(a) | (c)/(a) | (d)/(a) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for complexity in (10, 5):
        rounds = [lockstep(frames, complexity) for _ in range(args.rounds)]
        a, b, c, d = (seconds * 1e6 for seconds in min(rounds))  # the round the machine ran fastest
        print(f"| {complexity} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} | {b / a:.3f} | {c / a:.3f} | {d / a:.3f} |")


if __name__ == "__main__":
    main()
