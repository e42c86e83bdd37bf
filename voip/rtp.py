"""RTP packets (RFC 3550 section 5.1) carrying Opus (RFC 7587).

`RtpPacket.parse` accepts everything RFC 3550 allows (CSRCs, header extension,
padding) so that packets from ffmpeg or GStreamer are understood; `serialize`
reproduces the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voip.errors import ParseError

RTP_VERSION = 2
OPUS_PAYLOAD_TYPE = 111
OPUS_CLOCK_RATE = 48000

_HEADER = struct.Struct("!BBHII")


def is_rtp_or_rtcp(data: bytes) -> bool:
    """RFC 7983 demultiplexing: RTP and RTCP have a first byte in 128..191."""
    return len(data) > 0 and 128 <= data[0] <= 191


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: with RTP and RTCP on one port, RTCP packet types are 192..223."""
    return len(data) > 1 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0
    """Number of padding bytes (including the count byte); serialized as zeros then the count."""

    def serialize(self) -> bytes:
        has_extension = self.extension_profile is not None
        first = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | (0x10 if has_extension else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if has_extension:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise ParseError(f"RTP packet too short: {len(data)} bytes")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ParseError(f"RTP version {first >> 6}, expected 2")
        if not first & 0x3F:  # no padding, extension or CSRC: what every Opus sender here sends
            return cls(second & 0x7F, sequence, timestamp, ssrc, bytes(data[12:]), bool(second & 0x80))
        offset = 12
        csrc_count = first & 0x0F
        end = len(data)
        if end < offset + 4 * csrc_count:
            raise ParseError("RTP packet truncated in CSRC list")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset)
        offset += 4 * csrc_count
        extension_profile = None
        extension = b""
        if first & 0x10:
            if end < offset + 4:
                raise ParseError("RTP packet truncated in extension header")
            extension_profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            if end < offset + 4 * words:
                raise ParseError("RTP packet truncated in extension")
            extension = bytes(data[offset : offset + 4 * words])
            offset += 4 * words
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < offset:
                raise ParseError(f"RTP padding length {padding} is invalid")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extension_profile=extension_profile,
            extension=extension,
            padding=padding,
        )


class Packetizer:
    """Stamps outgoing payloads with sequence numbers and timestamps.

    Initial values are arguments (RFC 3550 wants them random; the caller draws them
    from its injected rng) so that tests can start right before a wraparound.
    """

    def __init__(self, ssrc: int, payload_type: int, initial_sequence: int, initial_timestamp: int):
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.next_sequence = initial_sequence & 0xFFFF
        self.next_timestamp = initial_timestamp & 0xFFFFFFFF
        self._talkspurt_start = True

    def packetize(self, payload: bytes, samples: int) -> RtpPacket:
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence=self.next_sequence,
            timestamp=self.next_timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=self._talkspurt_start,
        )
        self._talkspurt_start = False
        self.next_sequence = (self.next_sequence + 1) & 0xFFFF
        self.next_timestamp = (self.next_timestamp + samples) & 0xFFFFFFFF
        return packet

    def skip(self, samples: int) -> None:
        """Advance time without sending (DTX silence); the next packet starts a talkspurt."""
        self.next_timestamp = (self.next_timestamp + samples) & 0xFFFFFFFF
        self._talkspurt_start = True
