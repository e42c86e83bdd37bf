"""Seeded network impairment: loss (random or bursty), delay, jitter, reordering, duplication.

The simulator is a queue keyed by delivery time, of whatever the caller sends
(datagrams, or datagrams with their destination); the caller passes `now` and an
`random.Random`, so the same seed gives the same network, in real time (loopback)
or in simulated time (tests and benchmarks).
"""

from __future__ import annotations

import heapq
import random
import re
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

Item = TypeVar("Item")

_UNITS = {"delay": "ms", "jitter": "ms", "loss": "%", "burst": "", "reorder": "%", "duplicate": "%", "drift": "ppm"}
MAX_DRIFT_PPM = 10_000.0  # 1%: far beyond any sound card, which are within a few hundred ppm


@dataclass(frozen=True)
class NetworkSpec:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # fraction of packets lost, 0..1
    burst: float = 1.0  # mean length of a loss burst, in packets (Gilbert model)
    reorder: float = 0.0  # fraction held back behind later packets
    duplicate: float = 0.0  # fraction delivered twice
    # How fast the sender's clock runs against the receiver's, in parts per million (positive:
    # it sends more than a second of audio per second). No network does this; the simulations
    # apply it to the sending clock, and the spec carries it so --network can ask for it.
    drift_ppm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0% and 100%")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter cannot be negative")
        if abs(self.drift_ppm) > MAX_DRIFT_PPM:
            raise ValueError(f"drift must be within +-{MAX_DRIFT_PPM:g} ppm")
        if self.burst < 1:
            raise ValueError("burst is a mean length in packets and must be at least 1")

    @classmethod
    def parse(cls, text: str) -> NetworkSpec:
        """Parse e.g. 'delay=40ms,jitter=20ms,loss=5%,burst=3,reorder=1%,duplicate=1%,drift=-500ppm'."""
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in _UNITS:
                raise ValueError(
                    f"bad network item {item!r}: expected one of " + ", ".join(f"{k}=N{u}" for k, u in _UNITS.items())
                )
            unit = _UNITS[key]
            sign = "[-+]?" if key == "drift" else ""
            match = re.fullmatch(rf"\s*({sign}[0-9]*\.?[0-9]+)\s*(ms|%|ppm|)\s*", raw)
            if not match or match.group(2) not in (unit, ""):
                raise ValueError(f"bad value for {key}: {raw!r} (expected a number in {unit or 'packets'})")
            number = float(match.group(1))
            if unit == "%":
                number /= 100.0
            values[key if key in ("loss", "burst", "reorder", "duplicate") else f"{key}_{unit}"] = number
        return cls(**values)

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                name = f.name.removesuffix("_ms").removesuffix("_ppm")
                unit = _UNITS[name]
                shown = value * 100 if unit == "%" else value
                parts.append(f"{name}={shown:g}{unit}")
        return ",".join(parts) or "none"


class NetworkSimulator(Generic[Item]):
    def __init__(self, spec: NetworkSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._queue: list[tuple[float, int, Item]] = []  # the counter keeps items uncompared
        self._counter = 0
        self._in_burst = False
        # Gilbert model: stationary loss = p / (p + q) with q = 1/burst.
        self._leave_burst = 1.0 / spec.burst
        self._enter_burst = spec.loss * self._leave_burst / (1.0 - spec.loss) if spec.loss < 1 else 1.0
        self.sent = 0
        self.dropped = 0

    def send(self, data: Item, now: float) -> None:
        self.sent += 1
        rng = self._rng
        if self._in_burst:
            self._in_burst = rng.random() >= self._leave_burst
        else:
            self._in_burst = rng.random() < self._enter_burst
        if self._in_burst:
            self.dropped += 1
            return
        delay = self._delay()
        if rng.random() < self.spec.reorder:
            delay += rng.uniform(0.020, 0.060)  # lands behind one to three later packets
        self._push(now + delay, data)
        if rng.random() < self.spec.duplicate:
            self._push(now + delay + rng.uniform(0.0, 0.010), data)

    def _delay(self) -> float:
        spec = self.spec
        if spec.jitter_ms == 0:
            return spec.delay_ms / 1000.0
        return max(0.0, self._rng.gauss(spec.delay_ms, spec.jitter_ms)) / 1000.0

    def _push(self, when: float, data: Item) -> None:
        heapq.heappush(self._queue, (when, self._counter, data))
        self._counter += 1

    def deliver(self, now: float) -> list[Item]:
        """Every datagram due at or before `now`, in delivery order."""
        return [data for _, data in self.deliver_timed(now)]

    def deliver_timed(self, now: float) -> list[tuple[float, Item]]:
        """Like `deliver`, with the time each datagram arrived."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            when, _, data = heapq.heappop(self._queue)
            out.append((when, data))
        return out

    def next_delivery(self) -> float | None:
        return self._queue[0][0] if self._queue else None
