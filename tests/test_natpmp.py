"""NAT-PMP (voip.natpmp) driven directly, with the router played by the test
(tests/test_reach.py asks miniupnpd)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from voip.errors import ParseError
from voip.natpmp import GIVE_UP_S, LIFETIME_S, Mapping, PortMapper, parse_answer


def public_answer(result: int, ip: str) -> bytes:
    return struct.pack("!BBHI4s", 0, 0x80, result, 100, ipaddress.IPv4Address(ip).packed)


def map_answer(result: int, internal: int, external: int, lifetime: int) -> bytes:
    return struct.pack("!BBHIHHI", 0, 0x81, result, 100, internal, external, lifetime)


def test_a_router_with_a_public_address_maps_the_port_and_it_is_renewed_and_removed():
    mapper = PortMapper(5004, 0.0)
    assert mapper.datagrams(0.0) == [b"\x00\x00"]
    mapper.receive(public_answer(0, "1.2.3.4"), 0.1)  # (data only: a global address, as a router would say)
    [request] = mapper.datagrams(0.1)
    assert struct.unpack("!BBHHHI", request) == (0, 1, 0, 5004, 5004, LIFETIME_S)
    mapper.receive(map_answer(0, 5004, 40004, 3600), 0.2)
    assert mapper.state is Mapping.MAPPED and (mapper.public_ip, mapper.external_port) == ("1.2.3.4", 40004)
    assert mapper.deadline() == pytest.approx(1800.2)
    assert mapper.datagrams(1000.0) == []
    [renewal] = mapper.datagrams(1800.2)  # at half the lifetime, for the same external port
    assert struct.unpack("!BBHHHI", renewal)[3:5] == (5004, 40004)
    removal = mapper.unmap()
    assert removal is not None and struct.unpack("!BBHHHI", removal)[3:] == (5004, 0, 0)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (public_answer(3, "0.0.0.0"), "network failure (the router has no public address)"),  # miniupnpd's answer
        (public_answer(0, "100.64.0.9"), "is not public: it is behind another NAT"),  # a carrier-grade NAT
        (public_answer(2, "0.0.0.0"), "not authorized"),
    ],
)
def test_a_router_that_cannot_help_says_why(answer, reason):
    mapper = PortMapper(5004, 0.0)
    mapper.datagrams(0.0)
    mapper.receive(answer, 0.1)
    assert mapper.state is Mapping.REFUSED and reason in mapper.reason
    assert mapper.datagrams(1.0) == [] and mapper.unmap() is None


def test_no_router_after_a_few_bounded_repeats():
    mapper = PortMapper(5004, 0.0)
    sent = sum(len(mapper.datagrams(step * 0.05)) for step in range(100))
    assert mapper.state is Mapping.NO_ROUTER and sent == 3
    assert GIVE_UP_S < 2.0  # a listener starts within a couple of seconds either way


def test_answers_to_what_we_did_not_ask_are_ignored():
    mapper = PortMapper(5004, 0.0)
    mapper.datagrams(0.0)
    mapper.receive(map_answer(0, 5004, 1, 60), 0.1)  # a map answer while we asked for the address
    mapper.receive(b"\x00\x80", 0.1)
    assert mapper.state is Mapping.ASKING
    with pytest.raises(ParseError):
        parse_answer(b"\x01\x80\x00\x00\x00\x00\x00\x00")
