"""RTCP (RFC 3550 section 6): SR, RR, SDES, BYE, APP and compound packets.

Packet types we do not know (feedback from other tools, RFC 4585) are kept as
`UnknownRtcp` so one odd packet never hides the reports around it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from voip.errors import ParseError

SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204
SDES_CNAME = 1

_REPORT_BLOCK = struct.Struct("!IIIIII")  # fraction lost and 24-bit cumulative lost share a word


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics about one source (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int  # fixed point /256
    cumulative_lost: int  # signed 24 bits
    highest_sequence: int  # extended
    jitter: int  # in RTP timestamp units
    last_sr: int  # middle 32 bits of the NTP timestamp of the last SR, 0 if none
    delay_since_last_sr: int  # in 1/65536 s

    def serialize(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack(
            "!IQIII",
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        body += b"".join(r.serialize() for r in self.reports)
        return _header(SR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return _header(RR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]

    def serialize(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            part = bytearray(struct.pack("!I", chunk.ssrc))
            for kind, value in chunk.items:
                part += bytes([kind, len(value)]) + value
            part += b"\x00" * (4 - len(part) % 4)  # end marker plus padding to 32 bits
            body += part
        return _header(SDES, len(self.chunks), bytes(body))


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: bytes = b""

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            text = bytes([len(self.reason)]) + self.reason
            body += text + b"\x00" * (-len(text) % 4)
        return _header(BYE, len(self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class App:
    subtype: int
    ssrc: int
    name: bytes  # 4 ASCII characters
    data: bytes = b""  # multiple of 4 bytes

    def serialize(self) -> bytes:
        return _header(APP, self.subtype, struct.pack("!I4s", self.ssrc, self.name) + self.data)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _header(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | App | UnknownRtcp


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP body must be a multiple of 4 bytes")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def serialize_compound(packets: Sequence[RtcpPacket]) -> bytes:
    return b"".join(p.serialize() for p in packets)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse every RTCP packet in a datagram; any inconsistency raises ParseError."""
    if len(data) < 4:
        raise ParseError(f"RTCP packet too short: {len(data)} bytes")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise ParseError("RTCP compound packet has trailing bytes")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise ParseError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise ParseError("RTCP packet truncated")
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > 4 * words:
                raise ParseError(f"RTCP padding length {padding} is invalid")
            body_end -= padding
        body = bytes(data[offset + 4 : body_end])
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        _need(body, 24 + 24 * count, "SR")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, 24, count))
    if packet_type == RR:
        _need(body, 4 + 24 * count, "RR")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _blocks(body, 4, count))
    if packet_type == SDES:
        return SourceDescription(_sdes_chunks(body, count))
    if packet_type == BYE:
        _need(body, 4 * count, "BYE")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = b""
        if len(body) > 4 * count:
            length = body[4 * count]
            _need(body, 4 * count + 1 + length, "BYE reason")
            reason = body[4 * count + 1 : 4 * count + 1 + length]
        return Bye(tuple(ssrcs), reason)
    if packet_type == APP:
        _need(body, 8, "APP")
        ssrc, name = struct.unpack_from("!I4s", body)
        return App(count, ssrc, name, body[8:])
    return UnknownRtcp(packet_type, count, body)


def _need(body: bytes, length: int, what: str) -> None:
    if len(body) < length:
        raise ParseError(f"RTCP {what} truncated: {len(body)} of {length} bytes")


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _sdes_chunks(body: bytes, count: int) -> tuple[SdesChunk, ...]:
    chunks = []
    offset = 0
    for _ in range(count):
        _need(body, offset + 4, "SDES chunk")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items = []
        while True:
            _need(body, offset + 1, "SDES item")
            kind = body[offset]
            if kind == 0:
                offset += 4 - offset % 4  # end marker plus padding to 32 bits
                break
            _need(body, offset + 2, "SDES item")
            length = body[offset + 1]
            _need(body, offset + 2 + length, "SDES item")
            items.append((kind, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return tuple(chunks)


NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_from_seconds(seconds: float) -> int:
    """64-bit NTP timestamp from seconds since the NTP epoch."""
    return int(seconds * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits used by LSR (RFC 3550 section 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF
