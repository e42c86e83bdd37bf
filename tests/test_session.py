"""Two sessions through the simulated network, on a simulated clock."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip.codec import OpusSettings
from voip.control import CallSettings, ControlMessage, MessageType, PeerMoved
from voip.netsim import NetworkSpec
from voip.playout import JitterConfig
from voip.quality import align, pesq_wb
from voip.rtp import RtpPacket, is_rtcp, is_rtp_or_rtcp
from voip.session import ByeReceived, Session, SessionConfig, StreamStarted
from voip.simulate import simulate
from voip.srtp import SrtpContext, sdes_keys

PEER = ("127.0.0.1", 4000)


def test_lossless_codec_on_a_clean_network_is_bit_exact(speech):
    clip = np.round(speech[: 48000 * 2] * 32768) / 32768
    # By default the buffer keeps a reserve (a margin over the delay histogram's bucket, 20 ms
    # at first), which it adjusts by stretching pauses; bounded to none, a clean network
    # needs no adjustment.
    no_reserve = JitterConfig(initial_delay_ms=0, margin_ms=0, max_delay_ms=0)
    result = simulate(
        clip.astype(np.float32), SessionConfig(codec="l16", payload_type=96, jitter=no_reserve), NetworkSpec()
    )
    ref, out, _ = align(clip, result.output)
    assert len(ref) >= len(clip) - 960
    assert np.array_equal(ref, out) or np.max(np.abs(ref - out)) == 0
    assert result.receiver.packets_lost == 0 and result.receiver.concealed_ms == 0


def test_rtt_and_loss_are_reported_back_to_the_sender(speech):
    spec = NetworkSpec.parse("delay=40ms,loss=10%")
    result = simulate(speech[: 48000 * 5], SessionConfig(), spec, seed=2)
    assert result.sender.rtt_ms is not None and 75 <= result.sender.rtt_ms <= 105
    assert result.sender.remote_fraction_lost is not None
    assert result.receiver.packets_lost > 0
    assert result.receiver.jitter_ms < 1


def test_fec_improves_quality_under_loss(speech):
    """Over three seeds: one whole-clip PESQ moves by 0.2 with where a single loss falls."""
    spec = NetworkSpec.parse("loss=10%")
    gains = []
    for seed in (5, 6, 7):
        with_fec = simulate(speech, SessionConfig(opus=OpusSettings(fec=True)), spec, seed=seed)
        without = simulate(speech, SessionConfig(opus=OpusSettings(fec=False)), spec, seed=seed)
        assert with_fec.receiver.fec_recovered > 5 and without.receiver.fec_recovered == 0
        gains.append(pesq_wb(speech, with_fec.output) - pesq_wb(speech, without.output))
    assert np.mean(gains) > 0.15


def test_events_for_stream_start_and_bye():
    now = 0.0
    sender = Session(SessionConfig(remote=PEER), random.Random(1), now)
    receiver = Session(SessionConfig(), random.Random(2), now)
    sender.send_audio(np.zeros(960 * 3, dtype=np.float32), now)
    sender.hang_up(now, "done")
    for data, _ in sender.datagrams_to_send(now):
        receiver.receive_datagram(data, PEER, now)
    assert receiver.next_event() == StreamStarted(sender.ssrc, PEER)
    assert receiver.next_event() == ByeReceived(sender.ssrc, "done")
    assert receiver.next_event() is None
    assert receiver.remote == PEER


def test_packets_from_strangers_and_other_payload_types_are_counted_not_used():
    now = 0.0
    receiver = Session(SessionConfig(remote=PEER), random.Random(2), now)
    good = RtpPacket(111, 1, 0, 42, b"\x78\x00").serialize()
    receiver.receive_datagram(good, ("127.0.0.1", 9999), now)
    assert receiver.packets_foreign == 1
    receiver.receive_datagram(RtpPacket(0, 1, 0, 42, b"\x00" * 160).serialize(), PEER, now)
    assert receiver.packets_invalid == 1
    assert receiver.stats(now).packets_received == 0


def test_drops_from_the_peer_are_counted_by_reason():
    now = 0.0
    receiver = Session(SessionConfig(remote=PEER), random.Random(2), now)
    opus = b"\x78\x00"
    receiver.receive_datagram(RtpPacket(111, 1, 0, 42, opus).serialize(), PEER, now)  # the stream starts
    receiver.receive_datagram(RtpPacket(0, 2, 960, 42, b"\x00" * 160).serialize(), PEER, now)
    receiver.receive_datagram(RtpPacket(111, 3, 1920, 43, opus).serialize(), PEER, now)  # another SSRC
    receiver.receive_datagram(RtpPacket(111, 3, 1920, 42, opus).serialize()[:6], PEER, now)  # cut short
    receiver.receive_datagram(RtpPacket(111, 30000, 99999, 42, opus).serialize(), PEER, now)  # a jump
    stats = receiver.stats(now)
    assert (stats.packets_wrong_payload_type, stats.packets_wrong_ssrc) == (1, 1)
    assert (stats.packets_malformed, stats.packets_sequence_jump) == (1, 1)
    assert stats.packets_invalid == 4 and stats.packets_received == 1


def test_an_opus_packet_whose_frames_do_not_add_up_is_dropped_not_decoded():
    """Its TOC says 40 ms in two frames, the first 200 bytes long, in 5 bytes: libopus gives it
    a duration but refuses to decode it. Found by scripts/fuzz: it used to crash the receiver
    at its turn to play."""
    receiver = Session(SessionConfig(remote=PEER), random.Random(2), 0.0)
    bad = RtpPacket(111, 1, 0, 42, bytes([0x78 | 2, 200, 1, 2, 3])).serialize()
    receiver.receive_datagram(bad, PEER, 0.0)
    for tick in range(20):
        receiver.pull_audio(960, tick * 0.02)
    assert receiver.stats(0.4).packets_malformed == 1


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=120), max_size=20), st.integers(0, 255))
def test_random_bytes_never_raise_and_are_counted(datagrams, first):
    receiver = Session(SessionConfig(), random.Random(0), 0.0)
    sent = 0
    for i, data in enumerate(datagrams):
        data = bytes([first]) + data  # reach past the first-byte check often
        receiver.receive_datagram(data, PEER, i * 0.01)
        sent += 1
    receiver.pull_audio(960, 1.0)
    stats = receiver.stats(1.0)
    assert receiver.packets_invalid + stats.packets_received <= sent


def test_fec_is_sent_only_once_the_receiver_reports_loss(speech):
    clean = simulate(speech, SessionConfig(), NetworkSpec(), seed=3)
    lossy = simulate(speech, SessionConfig(), NetworkSpec.parse("loss=10%"), seed=3)
    assert clean.receiver.fec_packets_received == 0  # no loss reported: no FEC bits spent
    assert clean.sender.remote_fraction_lost == 0
    # the first RTCP report (after 0.25-0.75 s) turns FEC on; from then on the packets of active
    # speech carry it (libopus spends no LBRR bits on pauses): 157 of 357 here
    assert lossy.receiver.fec_packets_received > 0.3 * lossy.receiver.packets_received
    assert lossy.receiver.fec_recovered > 5


def test_loss_that_begins_is_reported_at_once_not_at_the_next_report(speech):
    """The sender adds FEC only once a report tells it of loss. When loss begins, the packet
    that shows the gap sends a report at once: FEC starts a round trip after the first loss,
    not up to a report interval later. One such report until a regular one says all is well."""
    config = SessionConfig(rtcp_interval_s=5.0)  # regular reports: the first 1.25-3.75 s in, then every 2.5-7.5 s
    sender = Session(replace(config, remote=PEER), random.Random(1), 0.0)
    receiver = Session(replace(config, remote=PEER), random.Random(2), 0.0)
    source = np.tile(speech, 2)
    reports: list[float] = []
    loss_known: dict[float, int] = {}
    for i in range(200):  # 4 s of 20 ms frames; packets 120 and 125 are lost
        now = round(i * 0.02, 2)
        sender.send_audio(source[i * 960 : (i + 1) * 960], now)
        for session in (sender, receiver):
            session.handle_deadline(now)
        for data, _ in sender.datagrams_to_send(now):
            if is_rtcp(data) or i not in (120, 125):
                receiver.receive_datagram(data, PEER, now)
        for data, _ in receiver.datagrams_to_send(now):
            if is_rtcp(data):
                reports.append(now)
            sender.receive_datagram(data, PEER, now)
        receiver.pull_audio(960, now)
        loss_known[now] = sender.expected_loss_percent
    # this seed's one regular report at 1.48 s, and one at the packet after the gap; the second
    # loss waits for the next regular report (at 1.48 + 2.5-7.5 s): the sender knows of loss
    assert reports == [1.48, 2.42]
    assert loss_known[2.40] == 0 and loss_known[2.42] > 0


def test_fec_rebuilds_packets_at_low_loss(speech):
    """At 3% loss the receiver's reports turn FEC on, and the buffer holds the next packet long
    enough to rebuild a lost one from it."""
    spec = NetworkSpec.parse("loss=3%")
    with_fec = simulate(np.tile(speech, 2), SessionConfig(opus=OpusSettings(fec=True)), spec, seed=4)
    lost = with_fec.receiver.packets_lost
    assert lost > 5 and with_fec.receiver.fec_recovered > lost / 3


def test_fec_turns_off_again_when_the_loss_stops(speech):
    """10 s with 10% loss, then 10 s without: FEC bits are spent while RTCP reports loss, and
    stop a few reports after it reports none."""
    rng = random.Random(2)
    config = SessionConfig(rtcp_interval_s=0.5)
    sender = Session(replace(config, remote=PEER), random.Random(1), 0.0)
    receiver = Session(replace(config, remote=PEER), random.Random(2), 0.0)
    source = np.tile(speech, 3)
    fec_by_phase = {"lossy": 0, "settling": 0, "clean": 0}
    expected_loss = {}
    for i in range(1000):  # 20 s of 20 ms frames
        now = i * 0.02
        phase = "lossy" if now < 10 else "settling" if now < 13 else "clean"
        sender.send_audio(source[i * 960 : (i + 1) * 960], now)
        for session in (sender, receiver):
            session.handle_deadline(now)
        for data, _ in sender.datagrams_to_send(now):
            if phase == "lossy" and rng.random() < 0.1:
                continue
            before = receiver.stats(now).fec_packets_received
            receiver.receive_datagram(data, PEER, now)
            fec_by_phase[phase] += receiver.stats(now).fec_packets_received - before
        for data, _ in receiver.datagrams_to_send(now):
            sender.receive_datagram(data, PEER, now)
        receiver.pull_audio(960, now)
        expected_loss[phase] = sender.expected_loss_percent
    assert expected_loss["lossy"] >= 5 and expected_loss["clean"] == 0
    assert fec_by_phase["lossy"] > 100  # of ~450 packets, most speech packets after the first report
    assert fec_by_phase["clean"] == 0


def test_a_drifting_sender_is_absorbed_by_stretching(speech):
    """simulate() runs the sender's clock 1% fast (slow): 80 ms more (less) audio than the
    receiver plays in 8 s; the receiver shortens (lengthens) by most of it, concealing nothing."""
    for ppm in (10000, -10000):
        result = simulate(speech, SessionConfig(), NetworkSpec(drift_ppm=ppm), seed=1)
        stretched = result.receiver.accelerated_ms - result.receiver.expanded_ms
        assert 40 <= (stretched if ppm > 0 else -stretched) <= 120, (ppm, result.receiver)
        assert result.receiver.concealed_ms == 0 and result.receiver.packets_late == 0


def encrypted_call(speech, frames: int, tamper=None, moved=None, sent_to=None):
    """Two sessions in an encrypted call, exchanging datagrams directly; `tamper(data)` may
    replace (or add to) what the caller sends once connected; from frame `moved` on, the
    caller's datagrams come from another port (a NAT rebound). `sent_to` collects where the
    listener sends. Returns both sessions and the audio the listener heard."""
    caller_addr, listener_addr = ("127.0.0.1", 40000), ("127.0.0.1", 5004)
    sessions = []
    for seed in (1, 2):
        # L16 in 10 ms packets: exact audio to compare, and SRTP packets within libsrtp's 1500 bytes
        config = SessionConfig(codec="l16", opus=OpusSettings(frame_ms=10))
        sessions.append(Session(config, random.Random(seed), 0.0, call=CallSettings()))
    caller, listener = sessions
    caller.control.call(listener_addr, 0.0)
    heard = []
    for i in range(frames):
        now = i * 0.01
        if listener.control.state.name == "RINGING":
            listener.control.accept(now)
        caller.send_audio(speech[i * 480 : (i + 1) * 480], now)
        source = ("127.0.0.1", 40002) if moved is not None and i >= moved else caller_addr
        for data, _ in caller.datagrams_to_send(now):
            for out in tamper(data) if tamper and caller.control.connected else [data]:
                listener.receive_datagram(out, source, now)
        for data, addr in listener.datagrams_to_send(now):
            if sent_to is not None:
                sent_to.append((i, addr))
            caller.receive_datagram(data, listener_addr, now)
        pcm = listener.pull_audio(480, now)
        if listener.jitter.started:
            heard.append(pcm)
    return caller, listener, np.concatenate(heard)


def test_an_encrypted_call_carries_audio_as_srtp(speech):
    wire = []

    def watch(data):
        wire.append(data)
        return [data]

    caller, listener, heard = encrypted_call(speech, 200, watch)
    assert caller.encryption == "AEAD_AES_128_GCM" and listener.encryption == caller.encryption
    media = [d for d in wire if is_rtp_or_rtcp(d) and not is_rtcp(d)]
    assert len(media) > 160
    frames = {(speech[i * 480 : (i + 1) * 480] * 32767).astype(">i2").tobytes()[:32] for i in range(200)}
    assert not any(d[12:44] in frames for d in media)  # no plaintext audio on the wire
    ref, deg, _ = align(speech[: len(heard)], heard)
    tail = len(ref) // 4  # past the start, where the buffer settles
    assert np.max(np.abs(ref[tail:-1000] - deg[tail:-1000])) < 1e-3  # and all of it heard (L16: exact)
    assert listener.stats(2.0).packets_unauthenticated == 0


def test_tampered_and_replayed_media_is_counted_and_dropped(speech):
    def attack(data):
        flipped = bytearray(data)
        flipped[-1] ^= 1
        return [bytes(flipped), data, data]  # a forgery, the packet, and its replay

    _, listener, heard = encrypted_call(speech, 200, attack)
    stats = listener.stats(2.0)
    assert stats.packets_unauthenticated >= 2 * 160  # every forgery and every replay
    assert stats.packets_duplicate == 0 and stats.packets_invalid == 0  # they touched nothing
    ref, deg, _ = align(speech[: len(heard)], heard)
    tail = len(ref) // 4
    assert np.max(np.abs(ref[tail:-1000] - deg[tail:-1000])) < 1e-3


def test_a_peer_that_moves_is_followed_once_it_proves_itself(speech):
    sent_to: list[tuple[int, tuple[str, int]]] = []
    _, listener, heard = encrypted_call(speech, 300, moved=150, sent_to=sent_to)
    new_address = ("127.0.0.1", 40002)
    assert PeerMoved(new_address) in list(iter(listener.next_event, None))
    assert listener.remote == new_address
    assert all(addr == new_address for i, addr in sent_to if i >= 152)  # within a round trip
    stats = listener.stats(3.0)
    assert stats.concealed_ms == 0 and stats.packets_lost == 0 and stats.packets_foreign == 0  # nothing lost
    assert len(heard) >= 290 * 480


def test_unauthenticated_packets_from_a_new_address_never_move_a_call(speech):
    stranger = ("127.0.0.1", 40003)

    _, listener, _ = encrypted_call(speech, 100)
    listener.receive_datagram(RtpPacket(111, 1, 0, listener._expected_ssrc or 0, b"x" * 40).serialize(), stranger, 1.0)
    path_response = ControlMessage(MessageType.PATH_RESPONSE, listener.control.call_id, key=bytes(8))
    listener.receive_datagram(path_response.serialize(bytes(32), 99), stranger, 1.0)
    assert listener.remote == ("127.0.0.1", 40000)
    assert not any(isinstance(e, PeerMoved) for e in iter(listener.next_event, None))


def test_a_stream_keyed_by_sdp_plays_and_drops_what_does_not_authenticate(speech):
    """SDES (a key from an SDP, no call): SRTP from the sender plays; the same key's packets
    from another address, and packets under another key, are dropped, and nothing raises."""
    keys = sdes_keys()
    sender = Session(SessionConfig(remote=PEER), random.Random(1), 0.0, SrtpContext(keys, gcm=False))
    receiver = Session(SessionConfig(), random.Random(2), 0.0, SrtpContext(keys, gcm=False))
    stranger = Session(SessionConfig(remote=PEER), random.Random(3), 0.0, SrtpContext(sdes_keys(), gcm=False))
    elsewhere = ("127.0.0.1", 4001)
    for i in range(100):
        now = i * 0.02
        sender.send_audio(speech[i * 960 : (i + 1) * 960], now)
        stranger.send_audio(speech[i * 960 : (i + 1) * 960], now)
        for data, _ in sender.datagrams_to_send(now):
            receiver.receive_datagram(data, PEER, now)
            if i >= 50:
                receiver.receive_datagram(data, elsewhere, now)  # a copy from elsewhere: never played
        for data, _ in stranger.datagrams_to_send(now):
            receiver.receive_datagram(data, PEER, now)
        receiver.pull_audio(960, now)
    stats = receiver.stats(2.0)
    assert stats.packets_received == 100 and stats.packets_unauthenticated >= 100
    assert stats.packets_foreign >= 50 and stats.packets_duplicate == 0


def test_a_receiver_takes_a_plain_stream_when_no_call_comes():
    """`voip receive` with no SDP: ffmpeg's plain RTP plays, and the session is then no call."""
    now = 0.0
    sender = Session(SessionConfig(remote=PEER), random.Random(1), now)
    receiver = Session(SessionConfig(), random.Random(2), now, call=CallSettings(takes_plain_stream=True))
    assert receiver.control is not None
    sender.send_audio(np.zeros(960 * 3, dtype=np.float32), now)
    for data, _ in sender.datagrams_to_send(now):
        receiver.receive_datagram(data, PEER, now)
    assert receiver.control is None and receiver.encryption is None
    assert receiver.next_event() == StreamStarted(sender.ssrc, PEER)
    assert receiver.stats(now).packets_received == 3


def test_a_receiver_that_answered_a_call_takes_no_plain_stream_beside_it(speech):
    """Once `voip send` called, a stranger's plain RTP is foreign, not a new stream."""
    caller_addr = ("127.0.0.1", 40000)
    config = SessionConfig(codec="l16", opus=OpusSettings(frame_ms=10))
    caller = Session(config, random.Random(1), 0.0, call=CallSettings())
    receiver = Session(config, random.Random(2), 0.0, call=CallSettings(takes_plain_stream=True))
    caller.control.call(PEER, 0.0)
    for data, _ in caller.datagrams_to_send(0.0):
        receiver.receive_datagram(data, caller_addr, 0.0)
    assert receiver.control is not None and receiver.control.state.name == "RINGING"
    stranger = RtpPacket(111, 1, 0, 42, b"\x78\x00").serialize()
    receiver.receive_datagram(stranger, ("127.0.0.1", 9999), 0.0)
    assert receiver.control is not None  # still the call's
    assert receiver.packets_foreign == 1 and receiver.stats(0.0).packets_received == 0


@pytest.mark.parametrize("listener_takes_copies", [True, False])
def test_a_call_sends_copies_under_loss_only_to_a_peer_that_offered_to_take_them(speech, listener_takes_copies):
    """RFC 2198 copies double the audio bits: sent only until the peer's first report and
    while it reports loss, and only to a peer whose offer says it takes them (ffmpeg or an
    older voip would drop them)."""
    caller_addr, listener_addr = ("127.0.0.1", 40000), ("127.0.0.1", 5004)
    caller = Session(SessionConfig(), random.Random(1), 0.0, call=CallSettings())
    listener_config = SessionConfig(redundancy=listener_takes_copies)
    listener = Session(listener_config, random.Random(2), 0.0, call=CallSettings())
    caller.control.call(listener_addr, 0.0)
    payload_types: list[int] = []
    reported: list[bool] = []  # whether the caller had had a report when it sent each packet
    lost = 0
    for i in range(250):  # 5 s; from 2 s on, every 10th media packet from the caller is lost
        now = i * 0.02
        if listener.control.state.name == "RINGING":
            listener.control.accept(now)
        caller.send_audio(speech[i * 960 : (i + 1) * 960], now)
        for session in (caller, listener):
            session.handle_deadline(now)
        for data, _ in caller.datagrams_to_send(now):
            if is_rtp_or_rtcp(data) and not is_rtcp(data):
                payload_types.append(data[1] & 0x7F)
                reported.append(caller.remote_fraction_lost is not None)
                if len(payload_types) >= 100 and len(payload_types) % 10 == 0:
                    lost += 1
                    continue
            listener.receive_datagram(data, caller_addr, now)
        for data, _ in listener.datagrams_to_send(now):
            caller.receive_datagram(data, listener_addr, now)
        listener.pull_audio(960, now)
    stats = listener.stats(5.0)
    assert lost >= 10 and stats.packets_lost == lost
    if listener_takes_copies:
        # copies until the first report, which knows of no loss; plain Opus from then until
        # the report of the first loss (sent by the packet after it), then copies again
        first_report = reported.index(True)
        assert set(payload_types[1:first_report]) == {63} and set(payload_types[first_report:100]) == {111}
        assert payload_types[100] == 111 and set(payload_types[101:]) == {63}
        assert stats.fec_recovered == lost - 1  # all but the first loss
    else:
        assert set(payload_types) == {111}  # in-band FEC alone
        assert stats.packets_invalid == 0
