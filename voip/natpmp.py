"""NAT-PMP (RFC 6886): asking the home router to forward a UDP port to us, free of I/O.

`voip listen` asks for its port (`PortMapper`): first the router's public address (opcode
0), then the mapping (opcode 1, UDP), each request repeated on a short timer. The answer
says what callers outside should call. A router that is itself behind another NAT has no
public address to give: miniupnpd answers such requests with result 3 (network failure),
and a public address in a private range means the same. The mapping lasts `lifetime`
seconds and is asked again at half of it; asking with lifetime 0 removes it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

from voip.errors import ParseError

NATPMP_PORT = 5351
VERSION = 0
OP_PUBLIC_ADDRESS = 0
OP_MAP_UDP = 1
RESPONSE = 0x80
RESULT_NETWORK_FAILURE = 3
RETRY_S = (0.0, 0.25, 0.75)  # when each request is sent, from the first (RFC 6886 goes on for a minute)
GIVE_UP_S = 1.75
LIFETIME_S = 7200  # what RFC 6886 recommends asking for
RENEW_RETRY_S = 60.0  # a renewal that went unanswered is asked again this much later
RESULTS = {
    1: "unsupported version",
    2: "not authorized (the router's NAT-PMP is off for us)",
    3: "network failure (the router has no public address)",
    4: "out of resources",
    5: "unsupported opcode",
}
_MAP = struct.Struct("!BBHHHI")
_MAP_ANSWER = struct.Struct("!BBHIHHI")
_PUBLIC_ANSWER = struct.Struct("!BBHI4s")


@dataclass(frozen=True)
class Answer:
    opcode: int
    result: int
    public_ip: str | None = None  # opcode 0
    internal_port: int = 0  # opcode 1
    external_port: int = 0
    lifetime: int = 0


def public_address_request() -> bytes:
    return bytes((VERSION, OP_PUBLIC_ADDRESS))


def map_request(internal_port: int, external_port: int, lifetime: int) -> bytes:
    return _MAP.pack(VERSION, OP_MAP_UDP, 0, internal_port, external_port, lifetime)


def parse_answer(data: bytes) -> Answer:
    if len(data) < 8 or data[0] != VERSION or not data[1] & RESPONSE:
        raise ParseError("not a NAT-PMP answer")
    opcode, result = data[1] & ~RESPONSE, struct.unpack_from("!H", data, 2)[0]
    if opcode == OP_PUBLIC_ADDRESS:
        if len(data) < _PUBLIC_ANSWER.size:
            return Answer(opcode, result)
        ip = str(ipaddress.IPv4Address(_PUBLIC_ANSWER.unpack_from(data)[4]))
        return Answer(opcode, result, public_ip=ip)
    if opcode == OP_MAP_UDP:
        if len(data) < _MAP_ANSWER.size:
            return Answer(opcode, result)
        _, _, _, _, internal, external, lifetime = _MAP_ANSWER.unpack_from(data)
        return Answer(opcode, result, internal_port=internal, external_port=external, lifetime=lifetime)
    raise ParseError(f"NAT-PMP opcode {opcode} is not one we ask")


class Mapping(Enum):
    ASKING = "asking"
    MAPPED = "mapped"
    REFUSED = "refused"
    NO_ROUTER = "no router"


class PortMapper:
    """One port's mapping on the router, driven by the caller's clock."""

    def __init__(self, port: int, now: float) -> None:
        self.port = port
        self.state = Mapping.ASKING
        self.public_ip: str | None = None
        self.external_port = 0
        self.reason = ""
        self._renew_at: float | None = None
        self._ask(OP_PUBLIC_ADDRESS, now)

    def _ask(self, step: int, now: float) -> None:
        self._step, self._first_sent, self._sends, self._asking = step, now, 0, True

    def datagrams(self, now: float) -> list[bytes]:
        """What to send to the router now."""
        if self.state is Mapping.MAPPED and self._renew_at is not None and now >= self._renew_at:
            self._renew_at = None
            self._ask(OP_MAP_UDP, now)
        if not self._asking:
            return []
        if now - self._first_sent >= GIVE_UP_S:
            self._asking = False
            if self.state is Mapping.ASKING:
                self.state, self.reason = Mapping.NO_ROUTER, "no NAT-PMP router answered"
            else:  # a renewal unanswered: the mapping holds until it lapses; ask again later
                self._renew_at = now + RENEW_RETRY_S
            return []
        if self._sends < len(RETRY_S) and now - self._first_sent >= RETRY_S[self._sends]:
            self._sends += 1
            if self._step == OP_PUBLIC_ADDRESS:
                return [public_address_request()]
            return [map_request(self.port, self.external_port or self.port, LIFETIME_S)]
        return []

    def deadline(self) -> float | None:
        if not self._asking:
            return self._renew_at
        give_up = self._first_sent + GIVE_UP_S
        return min(self._first_sent + RETRY_S[self._sends], give_up) if self._sends < len(RETRY_S) else give_up

    def receive(self, data: bytes, now: float) -> None:
        try:
            answer = parse_answer(data)
        except ParseError:
            return
        if not self._asking or answer.opcode != self._step:
            return
        self._asking = False
        if answer.result != 0:
            self.state = Mapping.REFUSED
            self.reason = RESULTS.get(answer.result, f"result {answer.result}")
            return
        if answer.opcode == OP_PUBLIC_ADDRESS:
            ip = ipaddress.IPv4Address(answer.public_ip or "0.0.0.0")
            if not ip.is_global:
                self.state = Mapping.REFUSED
                self.reason = f"the router's own address {ip} is not public: it is behind another NAT"
                return
            self.public_ip = str(ip)
            self._ask(OP_MAP_UDP, now)
        elif answer.internal_port == self.port and answer.lifetime > 0:
            self.state, self.external_port = Mapping.MAPPED, answer.external_port
            self._renew_at = now + answer.lifetime / 2

    def unmap(self) -> bytes | None:
        """The request that removes our mapping (sent once, on exit)."""
        if self.state is not Mapping.MAPPED:
            return None
        self.state, self.reason = Mapping.REFUSED, "removed"
        return map_request(self.port, 0, 0)
