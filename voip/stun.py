"""STUN messages (RFC 8489): bytes <-> `StunMessage`, free of I/O.

STUN shares the media port with RTP and our control messages; RFC 7983 tells them apart by
the first byte (STUN: 0..3), and the magic cookie confirms it. Only what this tool asks a
server for is given a name: Binding with the RFC 5780 attributes that tell a NAT's kind,
and the TURN (RFC 8656) methods and attributes a relay needs. Any other attribute is kept
as raw bytes, so a message always parses if its framing is sound.

Integrity is HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, with the header's length
already counting that attribute (RFC 8489 section 14.5); FINGERPRINT is CRC-32 of the
message up to it, XOR 0x5354554E (section 14.7). Both are written by `encode` and checked
by `integrity_matches` and `parse`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from voip.errors import ParseError

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
TRANSACTION_ID_BYTES = 12
FINGERPRINT_XOR = 0x5354554E
INTEGRITY_BYTES = 20  # HMAC-SHA1
MAX_ATTRIBUTES = 64  # more than any real message carries: a bound on the work one datagram costs

Address = tuple[str, int]


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class MessageClass(IntEnum):
    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Attr(IntEnum):
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003  # RFC 5780
    CHANGED_ADDRESS = 0x0005  # RFC 3489's name for OTHER-ADDRESS; older servers send it
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_TRANSPORT = 0x0019
    XOR_MAPPED_ADDRESS = 0x0020
    SOFTWARE = 0x8022
    RESPONSE_ORIGIN = 0x802B  # RFC 5780
    OTHER_ADDRESS = 0x802C  # RFC 5780
    FINGERPRINT = 0x8028


CHANGE_IP = 0x04  # CHANGE-REQUEST flags (RFC 5780 section 7.2)
CHANGE_PORT = 0x02
_XOR_ADDRESSES = {Attr.XOR_MAPPED_ADDRESS, Attr.XOR_PEER_ADDRESS, Attr.XOR_RELAYED_ADDRESS}


def show_address(address: Address) -> str:
    """host:port, with an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_stun(data: bytes) -> bool:
    """The first byte and the magic cookie say STUN (RFC 7983, RFC 8489 section 5)."""
    return len(data) >= HEADER.size and data[0] < 4 and data[4:8] == MAGIC_COOKIE.to_bytes(4, "big")


@dataclass(frozen=True)
class StunMessage:
    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()

    def get(self, attr: int) -> bytes | None:
        """The first value of an attribute (RFC 8489: later duplicates are ignored)."""
        for kind, value in self.attributes:
            if kind == attr:
                return value
        return None

    def address(self, attr: Attr) -> Address | None:
        """An address attribute, un-XORed where it is an XOR one; None if absent."""
        value = self.get(attr)
        if value is None:
            return None
        return _decode_address(value, self.transaction_id if attr in _XOR_ADDRESSES else None)

    @property
    def error(self) -> tuple[int, str] | None:
        """ERROR-CODE as (code, reason), e.g. (401, 'Unauthorized')."""
        value = self.get(Attr.ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise ParseError("STUN ERROR-CODE shorter than 4 bytes")
        return (value[2] & 0x7) * 100 + value[3], value[4:].decode("utf-8", "replace")

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = True) -> bytes:
        body = b"".join(_attribute(kind, value) for kind, value in self.attributes)
        if integrity_key is not None:
            length = len(body) + 4 + INTEGRITY_BYTES
            tag = hmac.new(integrity_key, self._header(length) + body, hashlib.sha1).digest()
            body += _attribute(Attr.MESSAGE_INTEGRITY, tag)
        if fingerprint:
            crc = binascii.crc32(self._header(len(body) + 8) + body) ^ FINGERPRINT_XOR
            body += _attribute(Attr.FINGERPRINT, crc.to_bytes(4, "big"))
        return self._header(len(body)) + body

    def _header(self, length: int) -> bytes:
        method, cls = self.method, int(self.message_class)
        kind = (method & 0xF) | (method & 0x70) << 1 | (method & 0xF80) << 2 | (cls & 1) << 4 | (cls & 2) << 7
        return HEADER.pack(kind, length, MAGIC_COOKIE, self.transaction_id)

    @classmethod
    def parse(cls, data: bytes) -> StunMessage:
        """The message in `data`, or ParseError. A FINGERPRINT, if present, must match."""
        if not is_stun(data):
            raise ParseError("not a STUN message")
        kind, length, _, transaction_id = HEADER.unpack_from(data)
        if length % 4 or HEADER.size + length != len(data):
            raise ParseError(f"STUN length {length} does not match the datagram's {len(data) - HEADER.size} bytes")
        method = (kind & 0xF) | (kind >> 1) & 0x70 | (kind >> 2) & 0xF80
        message_class = MessageClass((kind >> 4) & 1 | (kind >> 7) & 2)
        attributes: list[tuple[int, bytes]] = []
        offset = HEADER.size
        while offset < len(data):
            if len(attributes) == MAX_ATTRIBUTES or offset + 4 > len(data):
                raise ParseError("STUN attributes overrun the message")
            attr, size = struct.unpack_from("!HH", data, offset)
            value = data[offset + 4 : offset + 4 + size]
            if len(value) != size:
                raise ParseError("a STUN attribute overruns the message")
            if attr == Attr.FINGERPRINT:
                expected = binascii.crc32(data[:offset]) ^ FINGERPRINT_XOR
                if size != 4 or int.from_bytes(value, "big") != expected:
                    raise ParseError("STUN FINGERPRINT does not match")
            attributes.append((attr, value))
            offset += 4 + size + (-size % 4)
        return cls(method, message_class, transaction_id, tuple(attributes))


def integrity_matches(data: bytes, key: bytes) -> bool:
    """MESSAGE-INTEGRITY of a raw message (`parse` has accepted it) is right under `key`."""
    offset = HEADER.size
    while offset + 4 <= len(data):
        attr, size = struct.unpack_from("!HH", data, offset)
        if attr == Attr.MESSAGE_INTEGRITY:
            if size != INTEGRITY_BYTES or offset + 4 + size > len(data):
                return False
            header = data[:2] + (offset + 4 + size - HEADER.size).to_bytes(2, "big") + data[4 : HEADER.size]
            expected = hmac.new(key, header + data[HEADER.size : offset], hashlib.sha1).digest()
            return hmac.compare_digest(expected, data[offset + 4 : offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return False


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 section 9.2.2: MD5(username ":" realm ":" password), as TURN servers expect."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).digest()


def address_value(address: Address, transaction_id: bytes | None = None) -> bytes:
    """An address attribute's value; XORed (RFC 8489 section 14.2) when `transaction_id` is given."""
    host, port = address[0], address[1]
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    raw = ip.packed
    family = 1 if len(raw) == 4 else 2
    if transaction_id is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _xor_pad(transaction_id), strict=False))
    return struct.pack("!BBH", 0, family, port) + raw


def _decode_address(value: bytes, transaction_id: bytes | None) -> Address:
    if len(value) < 4:
        raise ParseError("STUN address shorter than 4 bytes")
    _, family, port = struct.unpack_from("!BBH", value)
    raw = value[4:]
    if (family, len(raw)) not in ((1, 4), (2, 16)):
        raise ParseError(f"STUN address of family {family} with {len(raw)} address bytes")
    if transaction_id is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _xor_pad(transaction_id), strict=False))
    return str(ipaddress.ip_address(raw)), port


def _xor_pad(transaction_id: bytes) -> bytes:
    return MAGIC_COOKIE.to_bytes(4, "big") + transaction_id


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def change_request(ip: bool, port: bool) -> bytes:
    return (CHANGE_IP * ip | CHANGE_PORT * port).to_bytes(4, "big")
