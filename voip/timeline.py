"""What the jitter buffer saw and did, over time: the material of `--plot`.

Recording is off unless asked for; when on, each packet costs a few tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_POINTS = 2_000_000  # about 5 hours of 20 ms packets: then recording stops, the call goes on


@dataclass
class Timeline:
    """Times are the caller's clock (seconds); delays are milliseconds."""

    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (time, relative delay)
    playouts: list[tuple[float, float, float]] = field(default_factory=list)  # (time, playout delay, target)
    concealments: list[tuple[float, float]] = field(default_factory=list)  # (time, ms), each concealed stretch
    late: list[float] = field(default_factory=list)  # packets that came after their turn
    stretches: list[tuple[float, float]] = field(default_factory=list)  # (time, +ms expanded / -ms accelerated)

    def _room(self) -> bool:
        return len(self.arrivals) + len(self.playouts) < MAX_POINTS

    def arrival(self, now: float, relative_delay_ms: float) -> None:
        if self._room():
            self.arrivals.append((now, relative_delay_ms))

    def playout(self, now: float, playout_delay_ms: float, target_ms: float) -> None:
        if self._room():
            self.playouts.append((now, playout_delay_ms, target_ms))

    def concealed(self, now: float, ms: float) -> None:
        if self._room():
            self.concealments.append((now, ms))

    def late_packet(self, now: float) -> None:
        if self._room():
            self.late.append(now)

    def stretched(self, now: float, ms: float) -> None:
        if self._room():
            self.stretches.append((now, ms))
