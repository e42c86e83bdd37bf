"""What a STUN server says of our NAT: the public address, and how the NAT maps and filters.

RFC 5780 section 4 behaviour discovery, as a state machine free of I/O. The caller sends
what `datagrams` returns from the socket that will carry the call (the mapping belongs to
that socket), passes every STUN answer to `receive`, and calls `datagrams` again at
`deadline`. Each query is a Binding request, repeated on a short timer:

* test I, to the server: the public address, and the server's OTHER-ADDRESS;
* mapping: a request to the other IP (then the other IP and port) returns the same public
  address from an endpoint-independent NAT, a new one from a symmetric NAT;
* filtering: the server answers from its other IP and port (CHANGE-REQUEST), then from
  its other port; what comes through says what a NAT lets in unasked.

A public address that equals the local one means no NAT at all. A server without
OTHER-ADDRESS (most public ones) gives the public address and nothing more. No answer to
test I within `QUERY_TIMEOUT_S` is an error; no answer to a filtering query is the answer.
Hole punching works when the mapping is endpoint-independent, whatever the filtering: each
side's first packet opens its own NAT for the other's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from voip.errors import ParseError
from voip.stun import (
    TRANSACTION_ID_BYTES,
    Address,
    Attr,
    MessageClass,
    Method,
    StunMessage,
    change_request,
    show_address,
)

RETRY_S = (0.0, 0.25, 0.5, 1.0)  # when each query is sent, from its first send
QUERY_TIMEOUT_S = 1.5  # no answer by then: the server (or the NAT, for filtering) said nothing


class Mapping(Enum):
    NO_NAT = "no NAT"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent (symmetric)"
    UNKNOWN = "unknown"


class Filtering(Enum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NatReport:
    public: Address  # where the server saw us come from
    mapping: Mapping
    filtering: Filtering

    @property
    def punchable(self) -> bool | None:
        """Whether hole punching can work from here: None if the mapping is unknown."""
        if self.mapping is Mapping.UNKNOWN:
            return None
        return self.mapping is not Mapping.ADDRESS_AND_PORT_DEPENDENT

    def describe(self) -> str:
        """One line for the user: the address to give callers, and what it means for reaching us."""
        public = show_address(self.public)
        if self.mapping is Mapping.NO_NAT:
            return f"public address {public} (no NAT: callers reach this directly)"
        kind = f"NAT mapping {self.mapping.value}"
        if self.filtering is not Filtering.UNKNOWN:
            kind += f", filtering {self.filtering.value}"
        if self.punchable is None:
            hint = "the server cannot tell the NAT's kind"
        elif self.punchable:
            hint = "hole punching can get through it"
        else:
            hint = "hole punching cannot get through it: only a relay (TURN) can"
        return f"public address {public} ({kind}: {hint})"


class StunError(Exception):
    """The server did not answer, or answered with an error."""


@dataclass
class _Query:
    name: str
    destination: Address
    change: bytes | None
    transaction_id: bytes
    first_sent: float | None = None
    sends: int = 0
    answer: Address | None = None
    done: bool = False


class NatProbe:
    """RFC 5780 behaviour discovery against one server, driven by the caller's clock."""

    def __init__(self, server: Address, local: Address | None, rng: random.Random, discover: bool = True) -> None:
        """`local`: the address the socket sends from, where the caller knows it (to tell no NAT);
        `discover`: find the mapping and filtering too, not only the public address."""
        self._server = server
        self._local = local
        self._rng = rng
        self._discover = discover
        self._queries: dict[bytes, _Query] = {}
        self._other: Address | None = None
        self.report: NatReport | None = None
        self.error: StunError | None = None
        self._add("I", server, None)

    @property
    def done(self) -> bool:
        return self.report is not None or self.error is not None

    def _add(self, name: str, destination: Address, change: bytes | None) -> None:
        transaction_id = self._rng.randbytes(TRANSACTION_ID_BYTES)
        self._queries[transaction_id] = _Query(name, destination, change, transaction_id)

    def _query(self, name: str) -> _Query | None:
        return next((q for q in self._queries.values() if q.name == name), None)

    def datagrams(self, now: float) -> list[tuple[bytes, Address]]:
        """What to send now; queries whose time ran out are settled first."""
        for query in list(self._queries.values()):
            if not query.done and query.first_sent is not None and now - query.first_sent >= QUERY_TIMEOUT_S:
                query.done = True
                self._settle()
        if self.done:
            return []
        out: list[tuple[bytes, Address]] = []
        for query in self._queries.values():
            if query.done:
                continue
            if query.first_sent is None:
                query.first_sent = now
            if query.sends < len(RETRY_S) and now - query.first_sent >= RETRY_S[query.sends]:
                query.sends += 1
                attributes = () if query.change is None else ((Attr.CHANGE_REQUEST, query.change),)
                request = StunMessage(Method.BINDING, MessageClass.REQUEST, query.transaction_id, attributes)
                out.append((request.encode(), query.destination))
        return out

    def deadline(self) -> float | None:
        """When `datagrams` should be called next, if nothing arrives before."""
        times = []
        for query in self._queries.values():
            if query.done:
                continue
            if query.first_sent is None:
                return 0.0  # a query the last answer made possible: at once
            if query.sends < len(RETRY_S):
                times.append(query.first_sent + RETRY_S[query.sends])
            times.append(query.first_sent + QUERY_TIMEOUT_S)
        return min(times) if times else None

    def receive(self, data: bytes, now: float) -> bool:
        """A STUN datagram; True if it answered one of our queries."""
        try:
            message = StunMessage.parse(data)
        except ParseError:
            return False
        query = self._queries.get(message.transaction_id)
        if query is None or query.done or message.method != Method.BINDING:
            return False
        if message.message_class is MessageClass.ERROR:
            if query.name == "I":
                try:
                    code, reason = message.error or (0, "no reason given")
                except ParseError:
                    code, reason = 0, "a malformed error"
                self.error = StunError(f"STUN server {show_address(self._server)} refused: {code} {reason}")
                return True
            query.done = True
        elif message.message_class is MessageClass.SUCCESS:
            try:
                answer = message.address(Attr.XOR_MAPPED_ADDRESS) or message.address(Attr.MAPPED_ADDRESS)
                other = message.address(Attr.OTHER_ADDRESS) or message.address(Attr.CHANGED_ADDRESS)
            except ParseError:
                return False
            if answer is None:
                return False
            query.answer, query.done = _plain(answer), True
            if query.name == "I":
                self._other = other
        else:
            return False
        self._settle()
        return True

    def _settle(self) -> None:
        """Start the queries that test I's answer makes possible, and conclude when all are in."""
        first = self._query("I")
        assert first is not None
        if not first.done:
            return
        if first.answer is None:
            self.error = StunError(f"no answer from STUN server {show_address(self._server)} in {QUERY_TIMEOUT_S:g} s")
            return
        public = first.answer
        no_nat = self._local is not None and _plain(self._local) == public
        if not self._discover or self._other is None:
            self.report = NatReport(public, Mapping.NO_NAT if no_nat else Mapping.UNKNOWN, Filtering.UNKNOWN)
            return
        other_ip, other_port = self._other
        server_port = self._server[1]
        if self._query("filter II") is None:
            self._add("filter II", self._server, change_request(ip=True, port=True))
            self._add("filter III", self._server, change_request(ip=False, port=True))
            if not no_nat:
                self._add("map II", (other_ip, server_port), None)
        mapping = Mapping.NO_NAT if no_nat else self._mapping(public, (other_ip, other_port))
        filtering = self._filtering()
        if mapping is not None and filtering is not None:
            self.report = NatReport(public, mapping, filtering)

    def _mapping(self, public: Address, other: Address) -> Mapping | None:
        second = self._query("map II")
        if second is None or not second.done:
            return None
        if second.answer is None:
            return Mapping.UNKNOWN
        if second.answer == public:
            return Mapping.ENDPOINT_INDEPENDENT
        third = self._query("map III")
        if third is None:
            self._add("map III", other, None)
            return None
        if not third.done:
            return None
        if third.answer is None:
            return Mapping.UNKNOWN
        return Mapping.ADDRESS_DEPENDENT if third.answer == second.answer else Mapping.ADDRESS_AND_PORT_DEPENDENT

    def _filtering(self) -> Filtering | None:
        second, third = self._query("filter II"), self._query("filter III")
        assert second is not None and third is not None
        if second.done and second.answer is not None:
            return Filtering.ENDPOINT_INDEPENDENT
        if not (second.done and third.done):
            return None
        return Filtering.ADDRESS_DEPENDENT if third.answer is not None else Filtering.ADDRESS_AND_PORT_DEPENDENT


def _plain(address: Address | tuple[str, int, int, int]) -> Address:
    """An IPv4-mapped IPv6 address as IPv4, so that a dual-stack socket's view compares."""
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, address[1]
