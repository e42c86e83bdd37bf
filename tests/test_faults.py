"""The fault catalogue where the core decides (issue 12): a receiving Session fed crafted
RTP on a simulated clock. Each packet carries its own index in its samples (L16), so what
was played, in what order, is read back exactly. The cases with real processes (a peer
killed, SIGTERM, a full disk, a cut recording, a link down) are in test_call.py,
test_files.py and test_reach.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np

from voip.codec import L16Encoder
from voip.rtp import RtpPacket
from voip.session import Session, SessionConfig, StreamStarted

FRAME = 960
STEP = FRAME / 48000
PEER = ("127.0.0.1", 40000)
SSRC = 0x1234
Datagrams = Iterator[tuple[float, bytes]]


def payload(i: int) -> bytes:
    """Samples that all equal (i + 1) / 1024: the packet's index, read back from the audio."""
    assert i < 1000
    return L16Encoder(FRAME).encode(np.full(FRAME, (i + 1) / 1024, dtype=np.float32))


def stream(count: int, first_sequence: int = 1000, first_timestamp: int = 0, ssrc: int = SSRC) -> Datagrams:
    """A packet every 20 ms, as (arrival time, datagram): sequence and timestamp wrap as RTP's do."""
    for i in range(count):
        sequence, timestamp = (first_sequence + i) & 0xFFFF, (first_timestamp + i * FRAME) & 0xFFFFFFFF
        yield i * STEP, RtpPacket(96, sequence, timestamp, ssrc, payload(i)).serialize()


def receive(datagrams: Datagrams, seconds: float) -> tuple[Session, np.ndarray]:
    """Deliver the datagrams at their times and pull every 20 ms; what played from the start."""
    receiver = Session(SessionConfig(codec="l16", payload_type=96, remote=PEER), random.Random(1), 0.0)
    pending = sorted(datagrams, key=lambda item: item[0])
    played: list[np.ndarray] = []
    k = 0
    for tick in range(round(seconds / STEP)):
        now = tick * STEP
        while k < len(pending) and pending[k][0] <= now:
            receiver.receive_datagram(pending[k][1], PEER, pending[k][0])
            k += 1
            if k == len(pending):
                receiver.jitter.end_of_stream(now)  # as the sender's BYE would: nothing to conceal after
        frame = receiver.pull_audio(FRAME, now)
        if receiver.jitter.started:
            played.append(frame)
    return receiver, np.concatenate(played)


def indices(audio: np.ndarray) -> list[int]:
    """The packets heard, in the order heard: runs of one level (a stretched packet is still one
    run; the few samples of a cross-fade between two packets are not a packet)."""
    levels = np.rint(audio * 1024).astype(int) - 1
    starts = np.flatnonzero(np.diff(levels, prepend=-2))
    runs = np.diff(np.append(starts, len(levels)))
    heard = [int(levels[start]) for start, run in zip(starts, runs, strict=True) if run >= 48 and levels[start] >= 0]
    return [i for n, i in enumerate(heard) if n == 0 or heard[n - 1] != i]


def test_sequence_and_timestamp_wrap_inside_a_call_change_nothing():
    _, clean = receive(stream(200), 5.0)
    wrapped_session, wrapped = receive(stream(200, first_sequence=0xFFF0, first_timestamp=2**32 - 10 * FRAME), 5.0)
    assert np.array_equal(wrapped, clean)  # every sample the same, at the same pull
    assert indices(wrapped) == list(range(200))
    stats = wrapped_session.stats(5.0)
    assert stats.packets_lost == 0 and stats.concealed_ms == 0 and stats.packets_invalid == 0


def test_a_timestamp_jump_of_a_minute_costs_no_minute_of_buffer():
    def jumped() -> Datagrams:
        for i, (when, data) in enumerate(stream(300)):
            packet = RtpPacket.parse(data)
            if i >= 100:  # the sender's clock leaps a minute ahead; its sequence goes on
                packet = RtpPacket(
                    96, packet.sequence, (packet.timestamp + 60 * 48000) & 0xFFFFFFFF, SSRC, packet.payload
                )
            yield when, packet.serialize()

    session, played = receive(jumped(), 8.0)
    heard = indices(played)
    # The buffer starts over on the new timeline: what it held at the jump (two packets at
    # its 40 ms) is dropped, not played a minute late.
    assert heard == [i for i in range(300) if i not in (98, 99)]
    last_heard_at = np.flatnonzero(np.rint(played * 1024) == 300)[0] / 48000  # packet 299, sent at 5.98 s
    assert last_heard_at < 299 * STEP + 0.2  # played a moment after it came, not a minute
    assert session.stats(8.0).buffer_delay_ms < 200


def test_every_packet_ten_times_plays_once():
    tenfold = ((when, data) for when, data in stream(200) for _ in range(10))
    session, played = receive(tenfold, 5.0)
    _, clean = receive(stream(200), 5.0)
    assert np.array_equal(played, clean)
    assert session.stats(5.0).packets_duplicate == 9 * 200


def test_a_reordering_burst_is_put_back_in_order():
    def burst() -> Datagrams:
        for i, (when, data) in enumerate(stream(300)):
            if 100 <= i < 110:  # ten packets come back to front, all with the last of them
                yield 109 * STEP + (109 - i) * 1e-4, data
            else:
                yield when, data

    session, played = receive(burst(), 7.0)
    heard = indices(played)
    # Never out of order: the burst's packets that came after their turn (all but its last
    # two at a 40 ms buffer) are late, concealed and dropped; everything after it plays.
    assert heard == sorted(heard)
    assert set(range(100)) | set(range(110, 300)) <= set(heard)
    stats = session.stats(7.0)
    assert stats.packets_reordered == 9 and stats.packets_late == 8 and stats.packets_lost == 0


def test_datagrams_of_64_kib_are_counted_and_dropped():
    huge_rtp = RtpPacket(96, 5000, 0, SSRC, bytes(65507 - 12)).serialize()  # the most a UDP datagram holds
    junk = bytes([0x80]) + random.Random(0).randbytes(65506)

    def with_huge() -> Datagrams:
        for i, (when, data) in enumerate(stream(200)):
            yield when, data
            if i % 20 == 10:
                yield when, huge_rtp if i % 40 == 10 else junk

    session, played = receive(with_huge(), 5.0)
    assert indices(played) == list(range(200))
    stats = session.stats(5.0)
    assert stats.packets_invalid == 10 and stats.concealed_ms == 0


def test_a_restarted_sender_is_followed_once_the_old_stream_is_quiet():
    def restarted() -> Datagrams:
        yield from stream(100)
        for when, data in stream(200, first_sequence=40000, first_timestamp=123456789, ssrc=0x5678):
            packet = RtpPacket.parse(data)
            if packet.sequence >= 40100:  # the new sender's audio carries indices 100..199
                yield 5.0 + when - 100 * STEP, data  # 3 s after the old stream stopped

    session, played = receive(restarted(), 9.0)
    assert indices(played) == list(range(200))
    assert session.remote_ssrc == 0x5678
    started = [event for event in iter(session.next_event, None) if isinstance(event, StreamStarted)]
    assert [event.ssrc for event in started] == [SSRC, 0x5678]


def test_a_second_stream_beside_a_live_one_is_dropped():
    intruder = (
        (when + 0.005, RtpPacket(96, 7000 + i, 999 + i * FRAME, 0x5678, payload(500)).serialize())
        for i, (when, _) in enumerate(stream(100))
    )
    session, played = receive(iter(sorted([*stream(200), *intruder])), 5.0)
    assert indices(played) == list(range(200))
    assert session.stats(5.0).packets_wrong_ssrc == 100
