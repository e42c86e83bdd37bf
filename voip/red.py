"""Redundant audio data (RFC 2198): a packet carries, before its own frame, the payload of
the packet before it.

A packet lost alone is then played from its successor's copy, bit for bit as sent, where
in-band FEC (LBRR) gives a coarser version of it and PLC a guess. The copy also carries the
LBRR of the frame before it, so two losses in a row are rebuilt too. It doubles the audio
bit rate, and is sent only until the receiver's first report and while it reports loss,
and only to a peer whose call offer said it takes it.

    redundant block header (4 bytes): F=1 (1), block payload type (7),
                                      timestamp offset (14), block length (10)
    primary block header (1 byte):    F=0 (1), payload type (7)
    then the block payloads in the same order, the primary last
"""

from __future__ import annotations

from dataclasses import dataclass

from voip.errors import ParseError

RED_PAYLOAD_TYPE = 63  # dynamic; what browsers offer for "red/48000/2"
MAX_OFFSET = (1 << 14) - 1
MAX_BLOCK_BYTES = (1 << 10) - 1


@dataclass(frozen=True, slots=True)
class RedundantBlock:
    timestamp_offset: int  # samples before the packet's own RTP timestamp
    payload: bytes


@dataclass(frozen=True, slots=True)
class RedPayload:
    payload_type: int  # of the primary block, and of every block we take
    primary: bytes
    redundant: tuple[RedundantBlock, ...]  # oldest first

    def serialize(self) -> bytes:
        headers = bytearray()
        for block in self.redundant:
            if not 0 < block.timestamp_offset <= MAX_OFFSET or len(block.payload) > MAX_BLOCK_BYTES:
                raise ValueError("a redundant block must be 1..16383 samples back and at most 1023 bytes")
            length = len(block.payload)
            headers += bytes(
                (
                    0x80 | self.payload_type,
                    block.timestamp_offset >> 6,
                    (block.timestamp_offset & 0x3F) << 2 | length >> 8,
                    length & 0xFF,
                )
            )
        headers.append(self.payload_type)
        return bytes(headers) + b"".join(block.payload for block in self.redundant) + self.primary

    @classmethod
    def parse(cls, data: bytes) -> RedPayload:
        """The blocks of one RED payload; ParseError if the headers do not add up. A block of
        another payload type than the primary's is left out: we send only Opus."""
        blocks: list[tuple[int, int, int]] = []  # payload type, offset, length
        at = 0
        while True:
            if at >= len(data):
                raise ParseError("RED payload ends inside its headers")
            first = data[at]
            if not first & 0x80:
                payload_type = first
                at += 1
                break
            if at + 4 > len(data):
                raise ParseError("RED payload ends inside a block header")
            offset = data[at + 1] << 6 | data[at + 2] >> 2
            length = (data[at + 2] & 0x03) << 8 | data[at + 3]
            blocks.append((first & 0x7F, offset, length))
            at += 4
        if at + sum(length for _, _, length in blocks) > len(data):
            raise ParseError("RED block lengths run past the payload")
        redundant = []
        for block_type, offset, length in blocks:
            if block_type == payload_type and offset > 0 and length > 0:
                redundant.append(RedundantBlock(offset, bytes(data[at : at + length])))
            at += length
        return cls(payload_type, bytes(data[at:]), tuple(redundant))
