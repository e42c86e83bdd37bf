"""Two sessions talking through the network simulator on a simulated clock.

The same chain as `voip loopback` (encode, packetize, network, jitter buffer,
decode) with no sockets and no sleeping: minutes of call in a fraction of the
time, deterministic for a seed. Tests and benchmarks use it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.netsim import NetworkSimulator, NetworkSpec
from voip.session import Session, SessionConfig
from voip.stats import StreamStats

SENDER: tuple[str, int] = ("sender", 1)
RECEIVER: tuple[str, int] = ("receiver", 2)


@dataclass(frozen=True)
class SimulationResult:
    output: Pcm  # what the receiver played, from its first pull after playout started
    sender: StreamStats
    receiver: StreamStats


def simulate(
    source: Pcm,
    config: SessionConfig,
    network: NetworkSpec,
    seed: int = 0,
    tail_s: float = 1.0,
) -> SimulationResult:
    """Stream `source` one way through `network`, then BYE; return what was played.

    The sender and the receiver each keep their own frame clock: with `network.drift_ppm`,
    the sender's runs that much fast (or slow, when negative) against the receiver's.
    """
    rng = random.Random(seed)
    now = 0.0
    sender = Session(_with_remote(config, RECEIVER), random.Random(rng.getrandbits(32)), now)
    receiver = Session(_with_remote(config, SENDER), random.Random(rng.getrandbits(32)), now)
    forward: NetworkSimulator[bytes] = NetworkSimulator(network, random.Random(rng.getrandbits(32)))
    backward: NetworkSimulator[bytes] = NetworkSimulator(network, random.Random(rng.getrandbits(32)))
    frame = sender.frame_samples
    step = frame / SAMPLE_RATE
    send_step = step / (1.0 + network.drift_ppm * 1e-6)  # the sender's 20 ms, on the receiver's clock
    frames_in = -(-len(source) // frame)
    played: list[Pcm] = []
    sent = pulls = 0
    max_pulls = frames_in + int(tail_s / step) + int(network.delay_ms / 1000 / step) + 100
    while pulls < max_pulls:
        send_at, pull_at = sent * send_step, pulls * step
        now = min(send_at, pull_at) if sent < frames_in else pull_at
        if sent < frames_in and send_at <= now:
            sender.send_audio(source[sent * frame : (sent + 1) * frame], now)
            sent += 1
            if sent == frames_in:
                sender.flush_audio(now)
                sender.hang_up(now)
        for session, link in ((sender, forward), (receiver, backward)):
            session.handle_deadline(now)
            for data, _ in session.datagrams_to_send(now):
                link.send(data, now)
        for when, data in forward.deliver_timed(now):
            receiver.receive_datagram(data, SENDER, when)
        for when, data in backward.deliver_timed(now):
            sender.receive_datagram(data, RECEIVER, when)
        if pull_at > now:
            continue
        pcm = receiver.pull_audio(frame, now)
        if receiver.jitter.started:
            played.append(pcm)
        if receiver.receive_finished:
            break
        pulls += 1
    output = np.concatenate(played) if played else np.zeros(0, dtype=np.float32)
    return SimulationResult(output, sender.stats(now), receiver.stats(now))


def _with_remote(config: SessionConfig, remote: tuple[str, int]) -> SessionConfig:
    return replace(config, remote=remote)
