"""A TURN client (RFC 8656) over UDP, free of I/O: an allocation on a relay server, and our
datagrams to and from peers carried through it.

For a side that nothing else gets through to (a symmetric NAT): the server gives us a
relayed address, and whatever its permissions let in there comes to us wrapped. The call
runs as usual on top: `wrap` puts each datagram for a peer into a ChannelData message (4
bytes more; a Send indication, 36 more, until the channel is bound) for the server, and
`unwrap` takes the peer's datagrams out of what the server sends.

Requests are authenticated by the long-term credential mechanism: the first Allocate is
answered 401 with the server's realm and nonce, and from then on every request carries
USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (a stale nonce, 438, is replaced and the
request sent again). Answers are believed only with the right integrity. The allocation,
its permissions (one per peer IP) and its channels are refreshed before they lapse, and
`close` gives the allocation back.

Permissions are per IP: a peer can reach the relayed address only once we permitted its
IP. `permit` does so for callers we expect; a peer we send to is permitted (and given a
channel) by sending to it.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from enum import Enum

from voip.errors import ParseError
from voip.stun import (
    TRANSACTION_ID_BYTES,
    Address,
    Attr,
    MessageClass,
    Method,
    StunMessage,
    address_value,
    integrity_matches,
    is_stun,
    long_term_key,
    show_address,
)

UDP_TRANSPORT = bytes((17, 0, 0, 0))  # REQUESTED-TRANSPORT: UDP
RETRY_S = (0.0, 0.25, 0.5, 1.0, 2.0)  # when a request is sent again, from its first send
REQUEST_TIMEOUT_S = 4.0
PERMISSION_REFRESH_S = 240.0  # permissions last 300 s (RFC 8656 section 9)
CHANNEL_REFRESH_S = 480.0  # channels last 600 s (section 12)
REFRESH_BEFORE_S = 60.0  # the allocation is refreshed this long before it lapses
FIRST_CHANNEL, LAST_CHANNEL = 0x4000, 0x4FFF
CHANNEL_HEADER = struct.Struct("!HH")


class TurnState(Enum):
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    FAILED = "failed"
    CLOSED = "closed"


class TurnError(Exception):
    """The server refused us, or never answered."""


def is_channel_data(data: bytes) -> bool:
    """RFC 7983: first byte 64..79 is TURN ChannelData."""
    return len(data) >= CHANNEL_HEADER.size and 0x40 <= data[0] <= 0x4F


@dataclass
class _Request:
    method: Method
    attributes: tuple[tuple[int, bytes], ...]
    transaction_id: bytes
    purpose: tuple[str, object] = ("allocate", None)  # what its answer settles
    first_sent: float | None = None
    sends: int = 0


@dataclass
class _Peer:
    channel: int
    bound: bool = False
    bound_at: float | None = None
    asked: bool = False


@dataclass
class TurnClient:
    server: Address
    username: str
    password: str
    rng: random.Random
    state: TurnState = TurnState.ALLOCATING
    relayed: Address | None = None  # what callers call
    mapped: Address | None = None  # where the server sees us from
    error: TurnError | None = None
    packets_unauthenticated: int = 0  # answers with wrong or no integrity, dropped
    _realm: str = ""
    _nonce: bytes = b""
    _key: bytes | None = None
    _lifetime_until: float = 0.0
    _requests: dict[bytes, _Request] = field(default_factory=dict)
    _permitted: dict[str, float] = field(default_factory=dict)  # peer IP -> when last permitted
    _peers: dict[Address, _Peer] = field(default_factory=dict)
    _channels: dict[int, Address] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ask(Method.ALLOCATE, ((Attr.REQUESTED_TRANSPORT, UDP_TRANSPORT),), ("allocate", None))

    # ---- requests ---------------------------------------------------------------------------

    def _ask(self, method: Method, attributes: tuple[tuple[int, bytes], ...], purpose: tuple[str, object]) -> None:
        transaction_id = self.rng.randbytes(TRANSACTION_ID_BYTES)
        self._requests[transaction_id] = _Request(method, attributes, transaction_id, purpose)

    def _encode(self, request: _Request) -> bytes:
        attributes = request.attributes + self._peer_attributes(request)
        if self._key is not None:
            credentials = (
                (Attr.USERNAME, self.username.encode()),
                (Attr.REALM, self._realm.encode()),
                (Attr.NONCE, self._nonce),
            )
            attributes = attributes + credentials
        message = StunMessage(request.method, MessageClass.REQUEST, request.transaction_id, attributes)
        return message.encode(self._key)

    def datagrams(self, now: float) -> list[bytes]:
        """What to send to the server now: requests due, first sends and repeats; refreshes."""
        if self.state in (TurnState.FAILED, TurnState.CLOSED):
            return []
        self._refresh_due(now)
        out: list[bytes] = []
        for request in list(self._requests.values()):
            if request.first_sent is None:
                request.first_sent = now
            if now - request.first_sent >= REQUEST_TIMEOUT_S:
                del self._requests[request.transaction_id]
                if request.purpose[0] in ("allocate", "refresh"):
                    self._fail(f"no answer from TURN server {show_address(self.server)} in {REQUEST_TIMEOUT_S:g} s")
                    return []
                continue  # a permission or channel is asked again when next due
            if request.sends < len(RETRY_S) and now - request.first_sent >= RETRY_S[request.sends]:
                request.sends += 1
                out.append(self._encode(request))
        return out

    def _refresh_due(self, now: float) -> None:
        if self.state is not TurnState.ALLOCATED:
            return
        pending = {request.purpose for request in self._requests.values()}
        if now >= self._lifetime_until - REFRESH_BEFORE_S and ("refresh", None) not in pending:
            self._ask(Method.REFRESH, (), ("refresh", None))
        for ip, when in self._permitted.items():
            if now - when >= PERMISSION_REFRESH_S and ("permit", ip) not in pending:
                self._permitted[ip] = now
                self._ask(Method.CREATE_PERMISSION, (), ("permit", ip))
        for peer, state in self._peers.items():
            stale = state.bound_at is not None and now - state.bound_at >= CHANNEL_REFRESH_S
            if (not state.asked or stale) and ("bind", peer) not in pending:
                state.asked, state.bound_at = True, now if stale else state.bound_at
                self._ask(Method.CHANNEL_BIND, (), ("bind", peer))

    def _peer_attributes(self, request: _Request) -> tuple[tuple[int, bytes], ...]:
        """A permission's or channel's peer, XORed with the request's own transaction ID."""
        kind, what = request.purpose
        if kind == "permit" and isinstance(what, str):
            return ((Attr.XOR_PEER_ADDRESS, address_value((what, 0), request.transaction_id)),)
        if kind == "bind" and isinstance(what, tuple):
            channel = self._peers[what].channel.to_bytes(2, "big") + bytes(2)
            return (
                (Attr.CHANNEL_NUMBER, channel),
                (Attr.XOR_PEER_ADDRESS, address_value(what, request.transaction_id)),
            )
        return ()

    def permit(self, ip: str, now: float) -> None:
        """Let datagrams from `ip` (any port) reach our relayed address."""
        if ip not in self._permitted:
            self._permitted[ip] = now - PERMISSION_REFRESH_S  # due at once

    def close(self) -> bytes | None:
        """The request that gives the allocation back (sent once; no answer is awaited)."""
        if self.state is not TurnState.ALLOCATED:
            return None
        self.state = TurnState.CLOSED
        request = _Request(Method.REFRESH, ((Attr.LIFETIME, bytes(4)),), self.rng.randbytes(TRANSACTION_ID_BYTES))
        return self._encode(request)

    # ---- what the server sends ---------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> tuple[bytes, Address] | None:
        """A datagram from the server: a peer's datagram and its address, or None (an answer
        to one of our requests, or something we drop)."""
        if is_channel_data(data):
            channel, length = CHANNEL_HEADER.unpack_from(data)
            peer = self._channels.get(channel)
            if peer is None or CHANNEL_HEADER.size + length > len(data):
                return None
            return data[CHANNEL_HEADER.size : CHANNEL_HEADER.size + length], peer
        if not is_stun(data):
            return None
        try:
            message = StunMessage.parse(data)
        except ParseError:
            return None
        if message.method == Method.DATA and message.message_class is MessageClass.INDICATION:
            return _data_indication(message)
        request = self._requests.get(message.transaction_id)
        if request is None or message.message_class not in (MessageClass.SUCCESS, MessageClass.ERROR):
            return None
        try:
            self._answer(request, message, data, now)
        except ParseError:
            self.packets_unauthenticated += 1
        return None

    def _answer(self, request: _Request, message: StunMessage, data: bytes, now: float) -> None:
        error = message.error if message.message_class is MessageClass.ERROR else None
        if error is not None and error[0] in (401, 438) and message.get(Attr.NONCE):
            # The server's realm and nonce: the request goes again with credentials. A 401 after
            # we sent credentials means they are wrong.
            if error[0] == 401 and self._key is not None:
                self._fail(f"TURN server {show_address(self.server)} refused the user name or password")
                return
            self._realm = (message.get(Attr.REALM) or b"").decode("utf-8", "replace")
            self._nonce = message.get(Attr.NONCE) or b""
            self._key = long_term_key(self.username, self._realm, self.password)
            del self._requests[request.transaction_id]
            self._ask(request.method, request.attributes, request.purpose)
            return
        if self._key is None or not integrity_matches(data, self._key):
            self.packets_unauthenticated += 1
            return
        del self._requests[request.transaction_id]
        kind, what = request.purpose
        if error is not None:
            if kind in ("allocate", "refresh"):
                self._fail(f"TURN server {show_address(self.server)} refused: {error[0]} {error[1]}")
            return
        if kind in ("allocate", "refresh"):
            lifetime = message.get(Attr.LIFETIME)
            seconds = int.from_bytes(lifetime, "big") if lifetime and len(lifetime) == 4 else 600
            self._lifetime_until = now + seconds
        if kind == "allocate":
            self.relayed = message.address(Attr.XOR_RELAYED_ADDRESS)
            self.mapped = message.address(Attr.XOR_MAPPED_ADDRESS)
            if self.relayed is None:
                self._fail(f"TURN server {show_address(self.server)} gave no relayed address")
                return
            self.state = TurnState.ALLOCATED
        elif kind == "bind" and isinstance(what, tuple):
            peer = self._peers[what]
            peer.bound, peer.bound_at = True, now
            self._channels[peer.channel] = what

    def _fail(self, reason: str) -> None:
        self.state = TurnState.FAILED
        self.error = TurnError(reason)

    # ---- our datagrams to peers ----------------------------------------------------------------

    def wrap(self, data: bytes, peer: Address) -> bytes:
        """`data` for `peer`, as the server takes it: on the peer's channel once bound, else in
        a Send indication (and a channel is asked for: binding it also permits the peer)."""
        peer = (peer[0].removeprefix("::ffff:"), peer[1])
        state = self._peers.get(peer)
        if state is None and len(self._peers) <= LAST_CHANNEL - FIRST_CHANNEL:
            state = self._peers[peer] = _Peer(FIRST_CHANNEL + len(self._peers))
        if state is not None and state.bound:
            padding = bytes(-len(data) % 4)  # over UDP padding is optional; it keeps fields aligned
            return CHANNEL_HEADER.pack(state.channel, len(data)) + data + padding
        transaction_id = self.rng.randbytes(TRANSACTION_ID_BYTES)
        attributes = ((Attr.XOR_PEER_ADDRESS, address_value(peer, transaction_id)), (Attr.DATA, data))
        return StunMessage(Method.SEND, MessageClass.INDICATION, transaction_id, attributes).encode(fingerprint=False)


def _data_indication(message: StunMessage) -> tuple[bytes, Address] | None:
    try:
        peer = message.address(Attr.XOR_PEER_ADDRESS)
    except ParseError:
        return None
    data = message.get(Attr.DATA)
    return (data, peer) if peer is not None and data is not None else None
