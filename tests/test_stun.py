"""STUN messages (voip.stun) against RFC 5769's test vectors, and NAT discovery (voip.nat)
driven directly, with a server and a NAT played by the test."""

from __future__ import annotations

import random

import pytest

from voip.errors import ParseError
from voip.nat import Filtering, Mapping, NatProbe
from voip.stun import (
    CHANGE_IP,
    CHANGE_PORT,
    Attr,
    MessageClass,
    Method,
    StunMessage,
    address_value,
    integrity_matches,
    is_stun,
    long_term_key,
)

# RFC 5769 section 2.2: a Binding success response; password VOkJxbRl1RmTxUk/WvJxBt
IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# section 2.3: the same with an IPv6 address
IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)
# section 2.4: a request with long-term credentials (no FINGERPRINT)
LONG_TERM_REQUEST = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b393534643"
    "64f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)
SHORT_TERM_KEY = b"VOkJxbRl1RmTxUk/WvJxBt"


def test_rfc5769_responses_parse_with_their_addresses_integrity_and_fingerprint():
    for data, address in (
        (IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ):
        message = StunMessage.parse(data)
        assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
        assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
        assert message.address(Attr.XOR_MAPPED_ADDRESS) == address
        assert message.get(Attr.SOFTWARE) == b"test vector"
        assert integrity_matches(data, SHORT_TERM_KEY)
        assert not integrity_matches(data, b"wrong password")


def test_rfc5769_long_term_credentials():
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    message = StunMessage.parse(LONG_TERM_REQUEST)
    assert message.get(Attr.USERNAME) == username.encode()
    assert message.get(Attr.REALM) == b"example.org"
    assert integrity_matches(LONG_TERM_REQUEST, long_term_key(username, "example.org", "TheMatrIX"))
    assert not integrity_matches(LONG_TERM_REQUEST, long_term_key(username, "example.org", "TheMatrix"))


def test_what_we_encode_parses_back_with_integrity_and_fingerprint():
    transaction_id = bytes(range(12))
    message = StunMessage(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        transaction_id,
        ((Attr.USERNAME, b"alice"), (Attr.XOR_PEER_ADDRESS, address_value(("10.0.0.7", 5004), transaction_id))),
    )
    key = long_term_key("alice", "voip.test", "secret")
    data = message.encode(key)
    assert is_stun(data) and len(data) % 4 == 0
    parsed = StunMessage.parse(data)
    assert (parsed.method, parsed.message_class) == (Method.ALLOCATE, MessageClass.REQUEST)
    assert parsed.address(Attr.XOR_PEER_ADDRESS) == ("10.0.0.7", 5004)
    assert integrity_matches(data, key)
    assert [kind for kind, _ in parsed.attributes][-2:] == [Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        IPV4_RESPONSE[:19],
        IPV4_RESPONSE[:-1],  # length does not match
        IPV4_RESPONSE[:-4] + b"\x00\x00\x00\x00",  # fingerprint wrong
        IPV4_RESPONSE[:2] + b"\x00\x40" + IPV4_RESPONSE[4:],  # header claims more than there is
        bytes.fromhex("0001000c2112a442") + bytes(12) + bytes.fromhex("0020ffff00000000"),  # attribute overruns
        b"\x80" + IPV4_RESPONSE[1:],  # an RTP first byte
    ],
)
def test_malformed_messages_raise_parse_error(data):
    with pytest.raises(ParseError):
        StunMessage.parse(data)


def test_a_bad_address_in_a_sound_message_raises_parse_error_when_read():
    message = StunMessage(
        Method.BINDING, MessageClass.SUCCESS, bytes(12), ((Attr.XOR_MAPPED_ADDRESS, b"\x00\x01\x00"),)
    )
    parsed = StunMessage.parse(message.encode())
    with pytest.raises(ParseError):
        parsed.address(Attr.XOR_MAPPED_ADDRESS)


# ---- NAT discovery, with the network played by the test -------------------------------------

SERVER = ("172.30.0.2", 3478)
OTHER = ("172.30.0.3", 3479)
LOCAL = ("10.0.0.2", 5004)


class FakeNetwork:
    """A STUN server with an alternate address, behind a NAT the test describes: how the NAT
    maps (the public port per destination) and which answers its filter lets in."""

    def __init__(self, public_port_for, lets_in) -> None:
        self.public_port_for = public_port_for
        self.lets_in = lets_in
        self.sent: list[tuple[StunMessage, tuple[str, int]]] = []

    def answer(self, probe: NatProbe, now: float) -> None:
        for data, destination in probe.datagrams(now):
            request = StunMessage.parse(data)
            self.sent.append((request, destination))
            change = int.from_bytes(request.get(Attr.CHANGE_REQUEST) or bytes(4), "big")
            source = (
                OTHER[0] if change & CHANGE_IP else destination[0],
                OTHER[1] if change & CHANGE_PORT else destination[1],
            )
            public = ("198.51.100.1", self.public_port_for(destination))
            if not self.lets_in(source, destination):
                continue
            tid = request.transaction_id
            attributes = (
                (Attr.XOR_MAPPED_ADDRESS, address_value(public, tid)),
                (Attr.OTHER_ADDRESS, address_value(OTHER)),
            )
            probe.receive(StunMessage(Method.BINDING, MessageClass.SUCCESS, tid, attributes).encode(), now)


def run(network: FakeNetwork, local=LOCAL) -> NatProbe:
    probe = NatProbe(SERVER, local, random.Random(1))
    now = 0.0
    while not probe.done and now < 10:
        network.answer(probe, now)
        deadline = probe.deadline()
        if deadline is None:
            break
        now = max(now, deadline)
    return probe


def test_an_endpoint_independent_nat_that_filters_by_address_and_port():
    network = FakeNetwork(lambda destination: 40000, lambda source, sent_to: source == sent_to)
    probe = run(network)
    assert probe.report is not None
    assert probe.report.public == ("198.51.100.1", 40000)
    assert probe.report.mapping is Mapping.ENDPOINT_INDEPENDENT
    assert probe.report.filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT
    assert probe.report.punchable


def test_a_symmetric_nat_is_found_and_cannot_be_punched():
    ports = {}
    network = FakeNetwork(lambda destination: ports.setdefault(destination, 40000 + len(ports)), lambda s, d: s == d)
    probe = run(network)
    assert probe.report is not None
    assert probe.report.mapping is Mapping.ADDRESS_AND_PORT_DEPENDENT
    assert probe.report.punchable is False
    destinations = {destination for _, destination in network.sent}
    assert destinations == {SERVER, (OTHER[0], SERVER[1]), OTHER}  # tests I, II and III


def test_an_address_dependent_mapping_and_an_open_filter():
    network = FakeNetwork(lambda destination: 40000 if destination[0] == SERVER[0] else 41000, lambda s, d: True)
    probe = run(network)
    assert probe.report is not None
    assert probe.report.mapping is Mapping.ADDRESS_DEPENDENT
    assert probe.report.filtering is Filtering.ENDPOINT_INDEPENDENT


def test_no_nat_when_the_public_address_is_our_own():
    network = FakeNetwork(lambda destination: 5004, lambda s, d: True)
    probe = run(network, local=("198.51.100.1", 5004))
    assert probe.report is not None and probe.report.mapping is Mapping.NO_NAT


def test_a_silent_server_is_an_error_after_the_timeout_and_requests_are_repeated():
    network = FakeNetwork(lambda destination: 40000, lambda s, d: False)
    probe = run(network)
    assert probe.report is None and probe.error is not None
    assert "no answer" in str(probe.error)
    assert 1 < len(network.sent) <= 4  # repeated, and bounded


def test_an_answer_to_someone_else_or_garbage_is_ignored():
    probe = NatProbe(SERVER, LOCAL, random.Random(1))
    probe.datagrams(0.0)
    stranger = StunMessage(
        Method.BINDING,
        MessageClass.SUCCESS,
        bytes(12),
        ((Attr.XOR_MAPPED_ADDRESS, address_value(("1.2.3.4", 1), bytes(12))),),
    )
    assert not probe.receive(stranger.encode(), 0.1)
    assert not probe.receive(b"\x00\x01garbage", 0.1)
    assert not probe.done


def test_an_error_answer_ends_the_probe_with_its_reason_even_when_malformed():
    for value, reason in ((b"\0\0\x04\x01Unauthorized", "401 Unauthorized"), (b"\0", "a malformed error")):
        probe = NatProbe(SERVER, LOCAL, random.Random(1))
        [(request, _)] = probe.datagrams(0.0)
        tid = StunMessage.parse(request).transaction_id
        answer = StunMessage(Method.BINDING, MessageClass.ERROR, tid, ((Attr.ERROR_CODE, value),))
        assert probe.receive(answer.encode(), 0.1)
        assert probe.error is not None and reason in str(probe.error)  # found by scripts/fuzz stun
