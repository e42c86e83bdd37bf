"""The delay model: arrivals in, a read-only target playout delay out.

A packet's relative delay is its transit time above the fastest transit of the last
`reference_window_s` (RTP time is the sender's clock, so only differences of transit
mean anything). The window is long (20 s) so that this floor holds still: the least of a
couple of seconds of Gaussian jitter wanders by half a standard deviation, and every
step of it moves every relative delay, and with them the buffer. After an outage
(`outage_s` without a packet) the floor starts over from the packets that follow.

Relative delays go into a histogram that forgets geometrically (`forget_factor` per
packet, about half a minute of memory): long enough to know how often a path stalls or
spikes, which decides what covering them is worth.

The target is the delay that a listener would prefer, by the E-model (`voip.emodel`):
for each candidate delay, the packets later than it are concealed, which costs
Ie_eff(late share), and the delay itself costs Idd(mouth-to-ear delay). Delay is nearly
free below 150 ms mouth to ear and a concealed packet never is, so on a quiet path the
target covers the whole tail, and on a path with rare long stalls it lets them go.

Stalls that recur (a link that stalls every few seconds) stay in the histogram's memory,
and the E-model weighs covering them against their delay. But a jittery spell that has
ended stays there too, for half a minute, and holds the delay up while nothing needs it.
So the target never exceeds what the packets of the last `calm_window_s` needed, plus
`calm_margin_ms`: ten seconds in which no packet came later than that are taken as a
calmer path. The first packet later than that lifts the cap, and the target is the long
memory's again at once.

What a histogram cannot see is the path's floor rising (a route change, or a sender
clock that runs slow): relative delays measured against the old floor would say "80 ms
of jitter" for a whole reference window, and a long memory would keep that for half a
minute. So once every packet of `floor_rise_s` came more than `floor_rise_ms` above the
floor, the floor moves and those packets are counted again against the new one.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from voip import SAMPLE_RATE
from voip.emodel import DEVICE_ALLOWANCE_MS, OPUS_BPL, OPUS_IE, idd
from voip.playout.config import JitterConfig

PRIOR_PUNCTUAL = 40  # packets of prior on time: one early stall does not look like a path that always stalls
PRIOR_LATE = 5  # packets of prior at `initial_delay_ms`: a call starts with a cushion...
PRIOR_LATE_DECAY = 0.98  # ...that fades within seconds, per arrival, whatever the path shows
# G.107 charges nothing for delay below 100 ms mouth to ear; this slight slope (R per ms of
# delay) keeps a vanishing late share from holding the whole free range.
DELAY_SLOPE_R_PER_MS = 0.01
RECOMPUTE_PACKETS = 8  # the target is recomputed after this many arrivals (it moves slowly)
SEEN_PACKETS = 64  # relative delays remembered by timestamp, for packets that come after their successor
FREE_MOVE_LATE_PERCENT = 0.01  # a lower target that makes no more packets late than this is free
TYPICAL_QUANTILE = 0.95  # `typical`: the relative delay that most packets beat


class DelayModel:
    """Relative delays in (`observe`), the E-model's best playout delay out (`target`)."""

    def __init__(self, config: JitterConfig) -> None:
        self.config = config
        self._buckets = math.ceil(config.max_delay_ms / config.bucket_ms) + 1
        self._histogram = np.zeros(self._buckets)
        self._histogram[0] = PRIOR_PUNCTUAL * (1.0 - config.forget_factor)
        self._prior_bucket = self._bucket(config.initial_delay_ms / 1000.0)
        self._prior_late = PRIOR_LATE * (1.0 - config.forget_factor)  # at weight 1, fading
        self._weight = 1.0  # forgetting by ever larger weights, folded back before they overflow
        self._reference: deque[tuple[float, float]] = deque()  # (arrival, transit), transit rising
        self._last_arrival: float | None = None
        self._recent: deque[tuple[float, float, int, float]] = deque()  # (arrival, transit, bucket, mass)
        self._recent_low: deque[tuple[float, float]] = deque()  # (arrival, transit), rising: the least in front
        self._calm_high: deque[tuple[float, float]] = deque()  # (arrival, -bucket), rising: the worst in front
        self._calm_since: float | None = None  # the first arrival the calm window has seen
        self._seen: dict[int, float] = {}  # timestamp -> relative delay, the latest SEEN_PACKETS, oldest first
        self._path_delay = 0.0
        self._since_recompute = 0
        self._target_index: int | None = None  # into the candidates, once there is a target
        self._typical = 0.0
        self._edges = (np.arange(self._buckets) + 1) * config.bucket_ms / 1000.0  # candidate targets
        self._delay_cost = self._delay_costs()
        self._recompute()  # the prior's target, before any packet

    # ---- observations --------------------------------------------------------------------

    def observe(self, timestamp: int, now: float, samples: int = 0, fec: bool = False) -> float:
        """Count one arrival (its unwrapped RTP timestamp and duration); returns its relative
        delay in seconds.

        In a stream with FEC (`fec`), a packet that comes after its successor is counted at
        the successor's delay plus its own length, if that is less: by then the successor's
        FEC can stand in for it. A Wi-Fi retry that holds one packet back costs no
        concealment, so it should not cost delay either; a stall, whose packets come in
        order, gains nothing.
        """
        transit = now - timestamp / SAMPLE_RATE
        relative = self._relative(transit, now)
        self._seen[timestamp] = relative
        if len(self._seen) > SEEN_PACKETS:
            del self._seen[next(iter(self._seen))]
        counted = relative
        successor = self._seen.get(timestamp + samples) if fec and samples else None
        if successor is not None:
            counted = min(relative, successor + samples / SAMPLE_RATE)
        bucket = self._bucket(counted)
        self._weight /= self.config.forget_factor
        self._prior_late *= PRIOR_LATE_DECAY
        mass = self._weight * (1.0 - self.config.forget_factor)
        self._histogram[bucket] += mass
        self._recent.append((now, transit, bucket, mass))
        _push_rising(self._recent_low, now, transit)
        self._watch_calm(now, bucket)
        since = now - self.config.floor_rise_s
        while self._recent and self._recent[0][0] < since:
            self._recent.popleft()
        while self._recent_low and self._recent_low[0][0] < since:
            self._recent_low.popleft()
        if relative >= self.config.floor_rise_ms / 1000.0 and self._floor_rose(now):
            relative = transit - self._reference[0][1]
        if self._weight > 1e9:
            self._histogram /= self._weight
            self._recent = deque((t, tr, b, m / self._weight) for t, tr, b, m in self._recent)
            self._weight = 1.0
        self._since_recompute += 1
        if self._since_recompute >= RECOMPUTE_PACKETS:
            self._recompute()
        return relative

    def observe_path_delay(self, seconds: float) -> None:
        """The one-way network delay (half the RTT, say): what the buffer adds to it is what a listener waits."""
        self._path_delay = max(0.0, seconds)
        self._delay_cost = self._delay_costs()
        self._recompute()

    def reset_reference(self) -> None:
        self._reference.clear()
        self._recent.clear()
        self._recent_low.clear()
        self._seen.clear()
        self._calm_high.clear()
        self._calm_since = None

    def _relative(self, transit: float, now: float) -> float:
        reference = self._reference
        if self._last_arrival is not None and now - self._last_arrival >= self.config.outage_s:
            reference.clear()  # an outage: the path after it is measured afresh, from its own packets
        self._last_arrival = now
        while reference and reference[0][0] < now - self.config.reference_window_s:
            reference.popleft()
        _push_rising(reference, now, transit)
        return transit - reference[0][1]

    def _watch_calm(self, now: float, bucket: int) -> None:
        window = self._calm_high
        _push_rising(window, now, -bucket)  # the least negated bucket is the worst
        while window[0][0] < now - self.config.calm_window_s:
            window.popleft()
        if self._calm_since is None:
            self._calm_since = now

    def _calm_cap(self) -> int | None:
        """The highest target the last `calm_window_s` of packets call for (a candidate's
        index), once the window is full."""
        window = self._calm_high
        if self._calm_since is None or window[-1][0] - self._calm_since < self.config.calm_window_s:
            return None
        return round(-window[0][1]) + round(self.config.calm_margin_ms / self.config.bucket_ms)

    def _bucket(self, relative: float) -> int:
        return min(self._buckets - 1, int(relative * 1000.0 / self.config.bucket_ms))

    def _floor_rose(self, now: float) -> bool:
        """Every packet of the last `floor_rise_s` came well above the floor: the path changed.
        Move the floor up to them and count them again against it."""
        config = self.config
        recent = self._recent
        if len(recent) < 3 or recent[0][0] > now - config.floor_rise_s + 0.05:
            return False
        floor = self._reference[0][1]
        lowest = self._recent_low[0][1]
        if lowest - floor < config.floor_rise_ms / 1000.0:
            return False
        self._reference = deque((t, tr) for t, tr in self._reference if t >= recent[0][0])
        recounted: deque[tuple[float, float, int, float]] = deque()
        for arrival, transit, bucket, mass in recent:
            self._histogram[bucket] -= mass
            moved = self._bucket(transit - lowest)
            self._histogram[moved] += mass
            recounted.append((arrival, transit, moved, mass))
        self._recent = recounted
        self._recompute()
        return True

    # ---- the target (reading never changes anything) -------------------------------------

    def _delay_costs(self) -> np.ndarray:
        """Idd of the mouth-to-ear delay each candidate target would give, with a slight slope."""
        base_ms = self.config.fixed_ms + DEVICE_ALLOWANCE_MS + self._path_delay * 1000.0
        return np.array([idd(base_ms + edge * 1000.0) + DELAY_SLOPE_R_PER_MS * edge * 1000.0 for edge in self._edges])

    def _recompute(self) -> None:
        """The delay of least E-model impairment over the candidates (the buckets' upper edges):
        Idd of the delay, plus Ie_eff of the share of packets later than it. The target rises
        there at once, but falls only when that is `target_hysteresis_r` better, or when no
        more packets would come late there (a move for delay alone). Near the optimum the
        cost is flat: following each small change of the histogram's tail down would warp
        the audio each time, and let the next packets of the tail come late. Last, the calm
        window's cap."""
        self._since_recompute = 0
        histogram = self._histogram.copy()
        histogram[self._prior_bucket] += self._prior_late * self._weight
        total = float(histogram.sum())
        if total <= 0:
            self._target_index, self._typical = None, 0.0
            return
        cumulative = np.cumsum(histogram)
        self._typical = float(self._edges[int(np.searchsorted(cumulative, TYPICAL_QUANTILE * total))])
        late_percent = 100.0 * np.maximum(0.0, total - cumulative) / total
        loss_cost = OPUS_IE + (95.0 - OPUS_IE) * late_percent / (late_percent + OPUS_BPL)
        cost = self._delay_cost + loss_cost
        best = int(np.argmin(cost))
        current = self._target_index
        if (
            current is None
            or cost[current] - cost[best] > self.config.target_hysteresis_r
            or late_percent[best] - late_percent[current] < FREE_MOVE_LATE_PERCENT
        ):
            self._target_index = best
        cap = self._calm_cap()
        if cap is not None and self._target_index is not None:
            self._target_index = min(self._target_index, cap)

    @property
    def target(self) -> float:
        """Seconds of relative delay the playout should cover: the E-model's best, or a
        higher one within `target_hysteresis_r` of it that was the best before; no more than
        the calm window needs."""
        return 0.0 if self._target_index is None else float(self._edges[self._target_index])

    @property
    def typical(self) -> float:
        """Seconds of relative delay that most packets (`TYPICAL_QUANTILE`) beat: a packet that
        comes one frame after a lost one is here in time for its FEC if the buffer holds this
        plus a frame."""
        return self._typical


def _push_rising(window: deque[tuple[float, float]], now: float, transit: float) -> None:
    """A monotonic deque: what the newest transit makes irrelevant goes, so the least is in front."""
    while window and window[-1][1] >= transit:
        window.pop()
    window.append((now, transit))
