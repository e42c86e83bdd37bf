"""Call control on a fake clock: two state machines exchange bytes; the test decides what arrives."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from voip.control import (
    GCM,
    RED,
    UNREACHABLE_COUNT,
    UNREACHABLE_QUIET_S,
    CallControl,
    CallEnded,
    Connected,
    ControlMessage,
    IncomingCall,
    MessageType,
    Offer,
    PeerBack,
    PeerSilent,
    Ringing,
    State,
    is_control,
)
from voip.crypto import KeyPair
from voip.errors import ParseError
from voip.rtp import is_rtp_or_rtcp

CALLER = ("127.0.0.1", 40000)
LISTENER = ("127.0.0.1", 5004)
STRANGER = ("127.0.0.1", 40001)
OFFER = Offer(ssrc=0x11223344, payload_type=111, frame_ms=20, bitrate=24000, fec=True, dtx=False)
ANSWER = Offer(ssrc=0x55667788, payload_type=111, frame_ms=20, bitrate=32000, fec=False, dtx=True, red=True)


def events(control: CallControl) -> list[object]:
    return list(iter(control.next_event, None))


def deliver(sender: CallControl, receiver: CallControl, source: tuple[str, int], now: float, drop: bool = False) -> int:
    """Move what `sender` has queued to `receiver` (or lose it); returns how many messages."""
    out = sender.datagrams_to_send()
    if not drop:
        for data, _ in out:
            receiver.receive_datagram(data, source, now)
    return len(out)


def pair() -> tuple[CallControl, CallControl]:
    return CallControl(OFFER, random.Random(1)), CallControl(ANSWER, random.Random(2), timeout_s=30.0)


def connected_pair(now: float = 0.0) -> tuple[CallControl, CallControl]:
    caller, listener = pair()
    caller.call(LISTENER, now)
    deliver(caller, listener, CALLER, now)
    listener.accept(now)
    deliver(listener, caller, LISTENER, now)
    assert caller.connected and listener.connected
    return caller, listener


def test_messages_round_trip_and_stay_out_of_rtp_space():
    for message in (
        ControlMessage(MessageType.INVITE, 2**64 - 1, OFFER),
        ControlMessage(MessageType.ACCEPT, 7, ANSWER),
        ControlMessage(MessageType.RINGING, 1),
        ControlMessage(MessageType.BUSY, 1),
        ControlMessage(MessageType.HANGUP, 3, reason="bye now"),
        ControlMessage(MessageType.HANGUP_ACK, 3),
    ):
        data = message.serialize()
        assert ControlMessage.parse(data) == message
        assert is_control(data) and not is_rtp_or_rtcp(data)
        assert not 128 <= data[0] <= 191  # RFC 7983: the RTP/RTCP range
        for cut in range(len(data)):
            with pytest.raises(ParseError):
                ControlMessage.parse(data[:cut])
        with pytest.raises(ParseError):
            ControlMessage.parse(data + b"x")


@given(st.binary(max_size=64))
def test_random_bytes_are_counted_never_raised(data: bytes):
    control = CallControl(OFFER, random.Random(0))
    control.receive_datagram(b"vC" + data, STRANGER, 0.0)
    assert control.state in (State.IDLE, State.RINGING)


def test_call_rings_connects_and_hangs_up_with_acknowledgement():
    caller, listener = pair()
    caller.call(LISTENER, 0.0)
    assert deliver(caller, listener, CALLER, 0.001) == 1
    assert events(listener) == [IncomingCall(CALLER, OFFER)]
    deliver(listener, caller, LISTENER, 0.002)
    assert events(caller) == [Ringing()] and caller.state is State.RINGING
    listener.accept(1.0)
    assert events(listener) == [Connected(CALLER, OFFER)]
    deliver(listener, caller, LISTENER, 1.001)
    assert events(caller) == [Connected(LISTENER, ANSWER)]
    caller.hang_up(5.0, "done")
    assert deliver(caller, listener, CALLER, 5.001) == 1
    assert events(listener) == [CallEnded("remote hung up", normal=True)]
    deliver(listener, caller, LISTENER, 5.002)  # HANGUP_ACK
    assert events(caller) == [CallEnded("hung up", normal=True)] and caller.ended


def test_invite_is_repeated_with_backoff_and_a_lost_accept_is_answered_again():
    caller, listener = pair()
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0, drop=True)
    sent_at = []
    now = 0.0
    while now < 4.0:
        now = caller.next_deadline() or 99.0
        caller.handle_deadline(now)
        if caller.datagrams_to_send():
            sent_at.append(round(now, 3))
    assert sent_at[:4] == [0.25, 0.75, 1.75, 3.75]  # 250 ms, doubling
    # the listener picks up, but its RINGING and ACCEPT are lost
    listener.receive_datagram(ControlMessage(MessageType.INVITE, caller.call_id, OFFER).serialize(), CALLER, now)
    listener.accept(now)
    deliver(listener, caller, LISTENER, now, drop=True)
    assert caller.state is State.CALLING
    retry = caller.next_deadline()
    assert retry is not None
    caller.handle_deadline(retry)
    deliver(caller, listener, CALLER, retry)  # the repeated INVITE ...
    deliver(listener, caller, LISTENER, retry)  # ... is answered with ACCEPT again
    assert caller.connected


def test_nobody_there_is_no_answer_after_ten_seconds():
    caller = CallControl(OFFER, random.Random(1))
    caller.call(LISTENER, 0.0)
    now = 0.0
    while not caller.ended:
        deadline = caller.next_deadline()
        assert deadline is not None
        now = deadline
        caller.handle_deadline(now)
        caller.datagrams_to_send()
    assert now == pytest.approx(10.0)
    assert events(caller) == [CallEnded("no answer", normal=False)]


def test_a_second_caller_hears_busy_and_cannot_disturb_the_call():
    caller, listener = connected_pair()
    intruder = CallControl(OFFER, random.Random(3))
    intruder.call(LISTENER, 1.0)
    deliver(intruder, listener, STRANGER, 1.0)
    for data, addr in listener.datagrams_to_send():
        assert addr == STRANGER
        intruder.receive_datagram(data, LISTENER, 1.001)
    assert events(intruder)[-1] == CallEnded("busy", normal=False)
    # a forged hang-up from the stranger's address, even with the right call id, changes nothing
    forged = ControlMessage(MessageType.HANGUP, caller.call_id, reason="forged").serialize()
    listener.receive_datagram(forged, STRANGER, 1.5)
    assert listener.connected and listener.messages_foreign == 2


def test_silence_shows_then_times_out_and_a_packet_brings_the_peer_back():
    caller, listener = pair()
    listener.timeout_s = 12.0
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    listener.accept(0.0)
    events(listener)
    listener.heard_from_peer(1.0)
    assert listener.next_deadline() == pytest.approx(6.0)
    listener.handle_deadline(6.0)
    assert events(listener) == [PeerSilent(5.0)]
    listener.heard_from_peer(7.0)
    assert events(listener) == [PeerBack()]
    listener.handle_deadline(12.0)
    listener.handle_deadline(12.0)
    assert events(listener) == [PeerSilent(5.0)]
    deadline = listener.next_deadline()
    assert deadline == pytest.approx(19.0)
    listener.handle_deadline(deadline)
    assert events(listener) == [CallEnded("peer timeout: nothing heard for 12 s", normal=False)]


def test_a_closed_port_ends_the_call_only_once_the_peer_is_quiet_too():
    caller, _ = connected_pair()
    events(caller)
    for i in range(20):  # a live peer: forged (or stale) ICMP between its packets changes nothing
        caller.heard_from_peer(i * 0.02)
        caller.peer_unreachable(LISTENER, i * 0.02 + 0.01)
    caller.peer_unreachable(STRANGER, 2.0)  # not the peer's address
    assert caller.state is State.CONNECTED and events(caller) == []
    last_heard = 0.38
    for i in range(1, UNREACHABLE_COUNT + 1):  # then only port unreachable, every 20 ms
        caller.peer_unreachable(("127.0.0.1", 5004, 0, 0), last_heard + i * 0.02)  # as an IPv6 socket says it
    assert caller.state is State.CONNECTED  # quiet for only 0.2 s
    now = last_heard + UNREACHABLE_QUIET_S
    caller.peer_unreachable(LISTENER, now)
    reason = "peer gone: nothing listens on its port any more (ICMP port unreachable)"
    assert events(caller) == [CallEnded(reason, normal=False)]


def test_unacknowledged_hang_up_still_ends_and_a_listener_acks_unknown_hang_ups():
    caller, _ = connected_pair()
    caller.hang_up(1.0)
    repeats = 0
    while not caller.ended:
        deadline = caller.next_deadline()
        assert deadline is not None
        caller.handle_deadline(deadline)
        repeats += len(caller.datagrams_to_send())
    assert repeats >= 3 and events(caller)[-1] == CallEnded("hung up", normal=True)
    fresh = CallControl(ANSWER, random.Random(5))  # a listener restarted after the call
    fresh.receive_datagram(ControlMessage(MessageType.HANGUP, 99).serialize(), CALLER, 2.0)
    ((ack, addr),) = fresh.datagrams_to_send()
    assert ControlMessage.parse(ack).type is MessageType.HANGUP_ACK and addr == CALLER
    assert fresh.state is State.IDLE


# ---- encrypted calls ------------------------------------------------------------------------

SECURE_OFFER = replace(OFFER, encrypted=True, gcm=True)
SECURE_ANSWER = replace(ANSWER, encrypted=True, gcm=True)


def key_pair(seed: int) -> KeyPair:
    return KeyPair(X25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def secure_pair(caller_key: int = 1, listener_key: int = 2) -> tuple[CallControl, CallControl]:
    caller = CallControl(SECURE_OFFER, random.Random(1), key_pair=key_pair(caller_key))
    listener = CallControl(SECURE_ANSWER, random.Random(2), key_pair=key_pair(listener_key))
    return caller, listener


def secure_connected_pair(now: float = 0.0) -> tuple[CallControl, CallControl]:
    caller, listener = secure_pair()
    caller.call(LISTENER, now)
    deliver(caller, listener, CALLER, now)  # INVITE with the caller's commitment
    deliver(listener, caller, LISTENER, now)  # RINGING
    listener.accept(now)
    assert listener.state is State.KEYING and not listener.connected
    deliver(listener, caller, LISTENER, now)  # ACCEPT with the listener's key
    assert caller.connected
    deliver(caller, listener, CALLER, now)  # REVEAL
    assert listener.connected
    return caller, listener


def test_an_encrypted_call_agrees_keys_and_both_sides_read_the_same_words():
    caller, listener = secure_connected_pair()
    assert caller.keys is not None and listener.keys is not None
    assert caller.keys.send == listener.keys.receive and caller.keys.receive == listener.keys.send
    assert caller.keys.sas == listener.keys.sas
    assert [type(e) for e in events(listener)] == [IncomingCall, Connected]


def test_a_lost_reveal_is_asked_for_again_by_the_listener():
    caller, listener = secure_pair()
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    deliver(listener, caller, LISTENER, 0.0)
    listener.accept(0.0)
    deliver(listener, caller, LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0, drop=True)  # the REVEAL is lost
    deadline = listener.next_deadline()
    assert deadline is not None and deadline <= 0.5
    listener.handle_deadline(deadline)  # ACCEPT again...
    deliver(listener, caller, LISTENER, deadline)
    deliver(caller, listener, CALLER, deadline)  # ...and the caller reveals again
    assert listener.connected and caller.keys is not None
    assert listener.keys is not None and listener.keys.sas == caller.keys.sas


def test_without_the_callers_key_the_listener_gives_up():
    caller, listener = secure_pair()
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    listener.accept(0.0)
    now = 0.0
    while not listener.ended:
        deadline = listener.next_deadline()
        assert deadline is not None
        now = deadline
        listener.handle_deadline(now)
        listener.datagrams_to_send()  # nothing reaches the caller
    assert events(listener)[-1] == CallEnded("key agreement failed: the caller's key never came", normal=False)


def test_after_keys_forged_control_from_the_peers_address_changes_nothing():
    caller, listener = secure_connected_pair()
    forged_plain = ControlMessage(MessageType.HANGUP, caller.call_id, reason="forged").serialize()
    forged_tagged = ControlMessage(MessageType.HANGUP, caller.call_id).serialize(b"x" * 32, 10**6)
    for forged in (forged_plain, forged_tagged):
        listener.receive_datagram(forged, CALLER, 1.0)
    assert listener.connected and listener.messages_unauthenticated == 2
    assert listener.datagrams_to_send() == []  # and no answer
    caller.hang_up(2.0)  # the real one is authenticated
    deliver(caller, listener, CALLER, 2.0)
    assert events(listener)[-1] == CallEnded("remote hung up", normal=True)
    deliver(listener, caller, LISTENER, 2.0)  # its HANGUP_ACK is authenticated too
    assert events(caller)[-1] == CallEnded("hung up", normal=True)


def test_a_man_in_the_middle_makes_the_words_differ():
    """Mallory answers the caller and calls the listener herself, relaying between them."""
    caller = CallControl(SECURE_OFFER, random.Random(1), key_pair=key_pair(1))
    listener = CallControl(SECURE_ANSWER, random.Random(2), key_pair=key_pair(2))
    mallory_answers = CallControl(SECURE_ANSWER, random.Random(3), key_pair=key_pair(3))
    mallory_calls = CallControl(SECURE_OFFER, random.Random(4), key_pair=key_pair(4))
    caller.call(LISTENER, 0.0)
    deliver(caller, mallory_answers, CALLER, 0.0)
    mallory_answers.accept(0.0)
    mallory_calls.call(LISTENER, 0.0)
    deliver(mallory_calls, listener, STRANGER, 0.0)
    listener.accept(0.0)
    deliver(listener, mallory_calls, LISTENER, 0.0)
    deliver(mallory_calls, listener, STRANGER, 0.0)
    deliver(mallory_answers, caller, LISTENER, 0.0)
    deliver(caller, mallory_answers, CALLER, 0.0)
    assert caller.connected and listener.connected
    assert caller.keys is not None and listener.keys is not None
    assert caller.keys.sas != listener.keys.sas  # read aloud, the words give her away


def _strip_flags(flags: int) -> Callable[[bytes], bytes]:
    """On the path: the INVITE's offer loses these flags (AES-GCM, say), the rest passes."""

    def rewrite(data: bytes) -> bytes:
        if data[:2] == b"vC" and data[3] & 0x7F == MessageType.INVITE:
            return data[:22] + bytes((data[22] & ~flags,)) + data[23:]
        return data

    return rewrite


def _deliver_through(rewrite: Callable[[bytes], bytes], sender: CallControl, receiver: CallControl, source) -> None:
    for data, _ in sender.datagrams_to_send():
        receiver.receive_datagram(rewrite(data), source, 0.0)


@pytest.mark.parametrize("code", [None, "7-guitar-harbor"])
def test_an_offer_changed_on_the_path_makes_the_words_differ_or_the_code_fail(code):
    """The keys are bound to both offers as sent (voip.crypto.call_context): a man in the
    middle who only turns the caller's AES-GCM or RED flag off, leaving the keys alone, is
    given away as one who swaps keys is."""
    rewrite = _strip_flags(GCM | RED)
    if code is None:
        caller, listener = secure_pair()
    else:
        caller = CallControl(CODE_OFFER, random.Random(1), code=code)
        listener = CallControl(CODE_ANSWER, random.Random(2), code=code)
    caller.call(LISTENER, 0.0)
    _deliver_through(rewrite, caller, listener, CALLER)  # INVITE, its flags changed
    assert listener.remote_offer is not None and not listener.remote_offer.gcm
    listener.accept(0.0)
    _deliver_through(rewrite, listener, caller, LISTENER)  # ACCEPT
    _deliver_through(rewrite, caller, listener, CALLER)  # REVEAL, or REFUSED
    if code is None:
        assert caller.keys is not None and listener.keys is not None
        assert caller.keys.sas != listener.keys.sas and caller.keys.send != listener.keys.receive
    else:
        assert events(caller)[-1] == CallEnded("wrong code: the listener's code is not this one", normal=False)
        assert caller.keys is None and not listener.connected


def test_a_revealed_key_that_is_not_the_committed_one_is_refused_and_the_real_one_still_counts():
    caller, listener = secure_pair()
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    listener.accept(0.0)
    deliver(listener, caller, LISTENER, 0.0)
    swapped = ControlMessage(MessageType.REVEAL, caller.call_id, key=key_pair(9).public).serialize()
    listener.receive_datagram(swapped, CALLER, 0.1)  # a key swapped in on the path comes first
    assert listener.state is State.KEYING and listener.messages_unauthenticated == 1
    deliver(caller, listener, CALLER, 0.1)
    assert listener.connected and listener.keys is not None and caller.keys is not None
    assert listener.keys.sas == caller.keys.sas


@pytest.mark.parametrize("caller_encrypts", [True, False])
def test_encrypted_and_plain_sides_refuse_each_other_clearly(caller_encrypts):
    caller = CallControl(SECURE_OFFER if caller_encrypts else OFFER, random.Random(1))
    listener = CallControl(ANSWER if caller_encrypts else SECURE_ANSWER, random.Random(2))
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    assert listener.state is State.IDLE and events(listener) == []
    deliver(listener, caller, LISTENER, 0.0)
    (ended,) = [e for e in events(caller) if isinstance(e, CallEnded)]
    assert ("--insecure" in ended.reason) and not ended.normal


def test_no_reply_is_larger_than_what_caused_it():
    caller, listener = secure_pair()
    caller.call(LISTENER, 0.0)
    ((invite, _),) = caller.datagrams_to_send()
    listener.receive_datagram(invite, CALLER, 0.0)
    ((ringing, _),) = listener.datagrams_to_send()
    listener.accept(0.0)
    ((accept, _),) = listener.datagrams_to_send()
    listener.receive_datagram(invite, CALLER, 0.1)  # a repeated INVITE is answered by ACCEPT again
    ((again, _),) = listener.datagrams_to_send()
    caller.receive_datagram(accept, LISTENER, 0.1)
    ((reveal, _),) = caller.datagrams_to_send()
    assert len(ringing) <= len(invite) and len(again) <= len(invite) and len(reveal) <= len(accept)
    plain = CallControl(ANSWER, random.Random(3))
    plain.receive_datagram(invite, STRANGER, 0.0)
    ((refused, _),) = plain.datagrams_to_send()
    assert len(refused) <= len(invite)


# ---- calls authenticated by a shared code ---------------------------------------------------

CODE_OFFER = replace(SECURE_OFFER, code=True)
CODE_ANSWER = replace(SECURE_ANSWER, code=True)


def code_call(caller_code: str, listener_code: str) -> tuple[CallControl, CallControl]:
    caller = CallControl(CODE_OFFER, random.Random(1), code=caller_code)
    listener = CallControl(CODE_ANSWER, random.Random(2), code=listener_code)
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)  # INVITE with the caller's SPAKE2 message
    listener.accept(0.0)
    deliver(listener, caller, LISTENER, 0.0)  # RINGING, ACCEPT with the listener's message and proof
    deliver(caller, listener, CALLER, 0.0)  # REVEAL with the caller's proof, or REFUSED
    return caller, listener


def test_the_same_code_on_both_sides_connects_verified_with_no_words():
    caller, listener = code_call("7-guitar-harbor", "7-Guitar-Harbor ")
    assert caller.connected and listener.connected
    assert caller.keys is not None and listener.keys is not None
    assert caller.keys.send == listener.keys.receive and caller.keys.sas is None


def test_a_wrong_code_fails_on_both_sides_with_one_clear_reason():
    caller, listener = code_call("7-guitar-harbor", "8-guitar-harbor")
    assert events(caller)[-1] == CallEnded("wrong code: the listener's code is not this one", normal=False)
    assert events(listener)[-1] == CallEnded("wrong code: the caller's code is not this one", normal=False)
    assert caller.keys is None and listener.keys is None


def test_a_forged_confirmation_does_not_connect_the_listener():
    caller = CallControl(CODE_OFFER, random.Random(1), code="7-guitar-harbor")
    listener = CallControl(CODE_ANSWER, random.Random(2), code="7-guitar-harbor")
    caller.call(LISTENER, 0.0)
    deliver(caller, listener, CALLER, 0.0)
    listener.accept(0.0)
    forged = ControlMessage(MessageType.REVEAL, caller.call_id, key=bytes(16)).serialize()
    listener.receive_datagram(forged, CALLER, 0.1)
    assert listener.state is State.KEYING and listener.messages_unauthenticated == 1


def test_code_and_no_code_refuse_each_other():
    with_code = CallControl(CODE_OFFER, random.Random(1), code="1-acid-tiger")
    without = CallControl(SECURE_ANSWER, random.Random(2))
    with_code.call(LISTENER, 0.0)
    deliver(with_code, without, CALLER, 0.0)
    deliver(without, with_code, LISTENER, 0.0)
    assert events(with_code)[-1] == CallEnded("refused: the listener has no code (call without --code)", normal=False)


def test_with_a_code_no_answer_is_larger_than_the_invite():
    caller = CallControl(CODE_OFFER, random.Random(1), code="7-guitar-harbor")
    listener = CallControl(CODE_ANSWER, random.Random(2), code="7-guitar-harbor")
    caller.call(LISTENER, 0.0)
    ((invite, _),) = caller.datagrams_to_send()
    listener.receive_datagram(invite, CALLER, 0.0)
    listener.accept(0.0)
    listener.datagrams_to_send()
    listener.receive_datagram(invite, CALLER, 0.1)
    ((again, _),) = listener.datagrams_to_send()
    assert ControlMessage.parse(again).type is MessageType.ACCEPT and len(again) <= len(invite)


@given(st.binary(max_size=120), st.sampled_from([1, 2, 3, 5, 6, 7, 8, 9, 10, 0x85, 0x86, 0x89, 0x8A]))
def test_random_control_messages_never_move_an_encrypted_call(body: bytes, kind: int):
    """Any version-2 message of any type, with the right call id, from the peer's own address
    and from a stranger's: never raises, and the call stays connected to where it was."""
    caller, listener = secure_connected_pair()
    data = b"vC\x02" + bytes((kind,)) + caller.call_id.to_bytes(8, "big") + body
    for control, source in ((listener, CALLER), (listener, STRANGER), (caller, LISTENER)):
        control.receive_datagram(data, source, 1.0)
        assert control.connected and control.peer == (LISTENER if control is caller else CALLER)


def test_ping_is_answered_by_a_pong_of_the_same_size_in_any_state_and_changes_nothing():
    token = bytes(range(8))
    ping = ControlMessage(MessageType.PING, 7, key=token).serialize()
    idle = CallControl(ANSWER, random.Random(2))
    _, listener = connected_pair()
    for control in (idle, listener):
        events(control)  # the set-up's
        state = control.state
        control.receive_datagram(ping, STRANGER, 1.0)
        [(answer, to)] = control.datagrams_to_send()
        pong = ControlMessage.parse(answer)
        assert (pong.type, pong.key, pong.call_id, to) == (MessageType.PONG, token, 7, STRANGER)
        assert len(answer) == len(ping)
        assert control.state is state and events(control) == []
    listener.receive_datagram(ControlMessage(MessageType.PONG, 7, key=token).serialize(), STRANGER, 1.0)
    assert listener.datagrams_to_send() == [] and listener.messages_foreign >= 1


def test_a_ping_must_carry_a_token_and_no_tag():
    with pytest.raises(ParseError):
        ControlMessage.parse(ControlMessage(MessageType.PING, 7, key=b"").serialize())
    with pytest.raises(ParseError):
        ControlMessage.parse(ControlMessage(MessageType.PING, 7, key=bytes(8)).serialize(bytes(32), sequence=1))


@pytest.mark.parametrize("encrypted", [False, True])
def test_two_sides_that_call_each_other_at_once_end_up_in_one_call(encrypted):
    a = CallControl(replace(OFFER, encrypted=encrypted), random.Random(1))
    b = CallControl(replace(ANSWER, encrypted=encrypted), random.Random(2))
    a.call(LISTENER, 0.0)  # a is at CALLER, b at LISTENER: each calls the other
    b.call(CALLER, 0.0)
    assert a.call_id != b.call_id
    winner, loser = (a, b) if a.call_id > b.call_id else (b, a)
    seen: dict[int, list[type]] = {id(a): [], id(b): []}
    for step in range(40):
        now = step * 0.05
        deliver(a, b, CALLER, now)
        deliver(b, a, LISTENER, now)
        for side in (a, b):
            for event in events(side):
                seen[id(side)].append(type(event))
                if isinstance(event, IncomingCall):
                    side.accept(now)  # the user asked for this call: it is answered at once
            side.handle_deadline(now)
    assert a.state is b.state is State.CONNECTED
    assert a.call_id == b.call_id == winner.call_id
    assert seen[id(loser)][0] is IncomingCall and Connected in seen[id(winner)]
    if encrypted:
        assert a.keys is not None and b.keys is not None and a.keys.sas == b.keys.sas
