"""Packets waiting to play, by unwrapped RTP timestamp; duplicates and late packets told apart."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from enum import Enum

from voip.seqnum import Unwrapper


class PushResult(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class Buffered:
    payload: bytes
    samples: int
    arrival: float
    relative_delay: float  # seconds behind the fastest packet of the reference window
    copy: bool = False  # rode in a later packet (RFC 2198): the packet itself never came, or not yet


class PacketStore:
    """Buffered packets in timestamp order. Everything before `playout_ts` has been played or
    given up: a packet for it is a duplicate (if it played) or late."""

    def __init__(self, max_packets: int) -> None:
        self._max_packets = max_packets
        self._unwrapper = Unwrapper(32)
        self._packets: dict[int, Buffered] = {}
        self._keys: list[int] = []  # sorted
        self._played: deque[int] = deque(maxlen=64)

    def unwrap(self, timestamp: int) -> int:
        return self._unwrapper.unwrap(timestamp)

    def classify(self, ts: int, playout_ts: int | None) -> PushResult:
        """What a packet with unwrapped timestamp `ts` would be, were it pushed now."""
        if playout_ts is not None and ts < playout_ts:
            return PushResult.DUPLICATE if ts in self._played else PushResult.LATE
        return PushResult.DUPLICATE if ts in self._packets else PushResult.ACCEPTED

    @property
    def full(self) -> bool:
        return len(self._keys) >= self._max_packets

    def add(self, ts: int, packet: Buffered) -> None:
        self._packets[ts] = packet
        bisect.insort(self._keys, ts)

    def get(self, ts: int) -> Buffered | None:
        return self._packets.get(ts)

    def take(self, ts: int) -> Buffered:
        """Remove the oldest packet, at `ts`, to play it. A copy played is not the packet: if
        the packet itself comes after, it is late, not a duplicate."""
        packet = self._packets.pop(ts)
        self._keys.pop(0)
        if not packet.copy:
            self._played.append(ts)
        return packet

    def remove(self, ts: int) -> None:
        del self._packets[ts]
        self._keys.remove(ts)

    def drop_oldest(self) -> None:
        del self._packets[self._keys.pop(0)]

    def clear(self) -> None:
        self._packets.clear()
        self._keys.clear()

    def restart(self) -> None:
        """Another source: its timestamps have nothing to do with the ones seen."""
        self.clear()
        self._played.clear()
        self._unwrapper.reset()

    @property
    def oldest(self) -> int | None:
        return self._keys[0] if self._keys else None

    @property
    def newest_end(self) -> int | None:
        """The timestamp just after the newest packet's last sample."""
        if not self._keys:
            return None
        newest = self._keys[-1]
        return newest + self._packets[newest].samples

    def span_samples(self) -> int:
        """From the oldest packet's first sample to the newest packet's last."""
        return 0 if (end := self.newest_end) is None else end - self._keys[0]

    def __len__(self) -> int:
        return len(self._keys)
