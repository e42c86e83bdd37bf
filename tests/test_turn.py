"""The TURN client (voip.turn) driven directly, with the server played by the test
(tests/test_reach.py runs it against coturn through a real NAT)."""

from __future__ import annotations

import random

from voip.stun import Attr, MessageClass, Method, StunMessage, address_value, long_term_key
from voip.turn import CHANNEL_REFRESH_S, PERMISSION_REFRESH_S, TurnClient, TurnState, is_channel_data

SERVER = ("198.51.100.10", 3478)
RELAYED = ("198.51.100.10", 50000)
MAPPED = ("203.0.113.7", 40000)
PEER = ("203.0.113.9", 5004)
KEY = long_term_key("alice", "voip.test", "secret")


class FakeServer:
    """Answers as coturn does: 401 with realm and nonce first, then successes under the key."""

    def __init__(self, key: bytes = KEY) -> None:
        self.key = key
        self.requests: list[StunMessage] = []

    def answer(self, client: TurnClient, now: float) -> None:
        for data in client.datagrams(now):
            request = StunMessage.parse(data)
            self.requests.append(request)
            tid = request.transaction_id
            if request.get(Attr.MESSAGE_INTEGRITY) is None:
                attributes = (
                    (Attr.ERROR_CODE, b"\0\0\x04\x01Unauthorized"),
                    (Attr.REALM, b"voip.test"),
                    (Attr.NONCE, b"n1"),
                )
                client.receive(StunMessage(request.method, MessageClass.ERROR, tid, attributes).encode(), now)
                continue
            attributes: tuple[tuple[int, bytes], ...] = ((Attr.LIFETIME, (600).to_bytes(4, "big")),)
            if request.method == Method.ALLOCATE:
                attributes += (
                    (Attr.XOR_RELAYED_ADDRESS, address_value(RELAYED, tid)),
                    (Attr.XOR_MAPPED_ADDRESS, address_value(MAPPED, tid)),
                )
            client.receive(StunMessage(request.method, MessageClass.SUCCESS, tid, attributes).encode(self.key), now)


def allocated() -> tuple[TurnClient, FakeServer]:
    client, server = TurnClient(SERVER, "alice", "secret", random.Random(1)), FakeServer()
    server.answer(client, 0.0)
    server.answer(client, 0.0)
    return client, server


def test_allocation_answers_the_challenge_with_credentials():
    client, server = allocated()
    assert client.state is TurnState.ALLOCATED
    assert (client.relayed, client.mapped) == (RELAYED, MAPPED)
    first, second = server.requests
    assert first.get(Attr.USERNAME) is None and first.get(Attr.REQUESTED_TRANSPORT) == bytes((17, 0, 0, 0))
    assert second.get(Attr.USERNAME) == b"alice" and second.get(Attr.NONCE) == b"n1"


def test_answers_without_the_right_integrity_are_dropped_and_counted():
    client = TurnClient(SERVER, "alice", "secret", random.Random(1))
    FakeServer().answer(client, 0.0)  # the challenge
    forger = FakeServer(key=long_term_key("alice", "voip.test", "guess"))
    forger.answer(client, 0.0)
    assert client.state is TurnState.ALLOCATING and client.packets_unauthenticated == 1


def test_a_wrong_password_fails_with_a_clear_reason():
    client = TurnClient(SERVER, "alice", "wrong", random.Random(1))
    server = FakeServer()
    for _ in range(2):
        for data in client.datagrams(0.0):
            message = StunMessage.parse(data)
            attributes = (
                (Attr.ERROR_CODE, b"\0\0\x04\x01Unauthorized"),
                (Attr.REALM, b"voip.test"),
                (Attr.NONCE, b"n1"),
            )
            client.receive(
                StunMessage(message.method, MessageClass.ERROR, message.transaction_id, attributes).encode(), 0.0
            )
    assert client.state is TurnState.FAILED and "user name or password" in str(client.error)
    assert server.requests == []


def test_a_silent_server_fails_after_the_timeout_with_bounded_repeats():
    client = TurnClient(SERVER, "alice", "secret", random.Random(1))
    sent = sum(len(client.datagrams(step * 0.05)) for step in range(200))
    assert client.state is TurnState.FAILED and "no answer" in str(client.error)
    assert 1 < sent <= 5


def test_datagrams_go_in_send_indications_until_the_channel_is_bound_then_as_channel_data():
    client, server = allocated()
    first = client.wrap(b"hello", PEER)
    message = StunMessage.parse(first)
    assert (message.method, message.message_class) == (Method.SEND, MessageClass.INDICATION)
    assert message.address(Attr.XOR_PEER_ADDRESS) == PEER and message.get(Attr.DATA) == b"hello"
    server.answer(client, 1.0)  # the channel bind the first datagram asked for
    assert server.requests[-1].method == Method.CHANNEL_BIND
    second = client.wrap(b"hello", PEER)
    assert is_channel_data(second) and second[4:9] == b"hello" and len(second) % 4 == 0


def test_what_the_server_relays_comes_out_with_the_peers_address():
    client, server = allocated()
    client.wrap(b"x", PEER)
    server.answer(client, 1.0)
    channel = client.wrap(b"x", PEER)[:2]
    assert client.receive(channel + (3).to_bytes(2, "big") + b"abc\0", 2.0) == (b"abc", PEER)
    tid = bytes(12)
    data = ((Attr.XOR_PEER_ADDRESS, address_value(PEER, tid)), (Attr.DATA, b"rtp"))
    indication = StunMessage(Method.DATA, MessageClass.INDICATION, tid, data).encode()
    assert client.receive(indication, 2.0) == (b"rtp", PEER)
    assert client.receive(b"\x4f\xff\x00\x01z", 2.0) is None  # a channel we never bound
    assert client.receive(b"\x80garbage", 2.0) is None


def test_allocation_permissions_and_channels_are_refreshed_before_they_lapse():
    client, server = allocated()
    client.permit("203.0.113.50", 0.0)
    client.wrap(b"x", PEER)
    server.answer(client, 0.0)
    asked = len(server.requests)
    assert {r.method for r in server.requests[-2:]} == {Method.CREATE_PERMISSION, Method.CHANNEL_BIND}
    server.answer(client, PERMISSION_REFRESH_S - 1)
    assert len(server.requests) == asked  # nothing due yet
    server.answer(client, PERMISSION_REFRESH_S)  # permissions last 300 s
    assert [r.method for r in server.requests[asked:]] == [Method.CREATE_PERMISSION]
    asked = len(server.requests)
    server.answer(client, CHANNEL_REFRESH_S)  # channels last 600 s
    assert [r.method for r in server.requests[asked:]] == [Method.CREATE_PERMISSION, Method.CHANNEL_BIND]
    asked = len(server.requests)
    server.answer(client, 540.0)  # the allocation (600 s) a minute before it ends
    assert [r.method for r in server.requests[asked:]] == [Method.REFRESH]
    assert client.state is TurnState.ALLOCATED


def test_closing_gives_the_allocation_back():
    client, _ = allocated()
    request = client.close()
    assert request is not None
    message = StunMessage.parse(request)
    assert message.method == Method.REFRESH and message.get(Attr.LIFETIME) == bytes(4)
    assert client.state is TurnState.CLOSED and client.datagrams(1.0) == [] and client.close() is None
