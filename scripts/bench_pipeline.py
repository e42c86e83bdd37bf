#!/usr/bin/env python3
"""CPU time per 20 ms frame: bare Opus encode+decode against our whole send->receive path.

Both run side by side in one process on the same speech, so the ratio holds on any
machine: (a) libopus encode + decode, (b) encode, packetize, UDP sendto on 127.0.0.1,
recvfrom, parse, statistics, jitter buffer, decode. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import socket
import time

import numpy as np

from voip.codec import OpusDecoder, OpusEncoder, OpusSettings
from voip.io.files import FileSource, bundled_speech
from voip.session import Session, SessionConfig

FRAME = 960


def speech_frames(count: int) -> list[np.ndarray]:
    source = FileSource(bundled_speech())
    audio = np.concatenate([source.read(48000 * 60)])
    reps = -(-count * FRAME // len(audio))
    audio = np.tile(audio, reps)
    return [audio[i * FRAME : (i + 1) * FRAME] for i in range(count)]


def bare_codec(frames: list[np.ndarray], complexity: int) -> float:
    encoder, decoder = OpusEncoder(OpusSettings(complexity=complexity)), OpusDecoder()
    start = time.process_time()
    for frame in frames:
        decoder.decode(encoder.encode(frame))
    return (time.process_time() - start) / len(frames)


def whole_path(frames: list[np.ndarray], complexity: int) -> float:
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    tx_sock.bind(("127.0.0.1", 0))
    config = SessionConfig(opus=OpusSettings(complexity=complexity))
    sender = Session(SessionConfig(opus=config.opus, remote=rx_sock.getsockname()), random.Random(1), 0.0)
    receiver = Session(SessionConfig(opus=config.opus, remote=tx_sock.getsockname()), random.Random(2), 0.0)
    start = time.process_time()
    for i, frame in enumerate(frames):
        now = i * 0.02  # a simulated clock: the benchmark measures CPU, not pacing
        sender.send_audio(frame, now)
        for data, addr in sender.datagrams_to_send(now):
            tx_sock.sendto(data, addr)
        data, addr = rx_sock.recvfrom(2048)
        receiver.receive_datagram(data, addr, now)
        receiver.pull_audio(FRAME, now)
    elapsed = (time.process_time() - start) / len(frames)
    rx_sock.close()
    tx_sock.close()
    assert receiver.stats(len(frames) * 0.02).packets_received == len(frames)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=3000, help="frames per measurement (20 ms each)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()
    frames = speech_frames(args.frames)
    print("| complexity | (a) bare Opus enc+dec, us/frame | (b) whole path, us/frame | (b)-(a), us | (b)/(a) |")
    print("|---:|---:|---:|---:|---:|")
    for complexity in (10, 5):
        bare, path = [], []
        for _ in range(args.rounds):  # interleaved so that machine load hits both alike
            bare.append(bare_codec(frames, complexity))
            path.append(whole_path(frames, complexity))
        a, b = min(bare) * 1e6, min(path) * 1e6
        print(f"| {complexity} | {a:.1f} | {b:.1f} | {b - a:.1f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
