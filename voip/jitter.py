"""Adaptive jitter buffer: packets in, exactly the requested audio out, on the caller's clock.

Design (DESIGN.md section 4, after WebRTC's NetEq):

* Packets are keyed by unwrapped RTP timestamp. Duplicates are dropped; reordered
  packets take their place; packets behind the playout point are late and dropped.
* Every pull yields the requested number of samples: decoded audio; for a missing
  packet whose successor is here, the successor's in-band FEC (one frame) or PLC;
  with nothing buffered, PLC that holds the playout point ("expand").
* Concealment played while the buffer was empty covers the timestamps it stood in
  for: when packets return after a loss burst the playout point jumps over them, so
  delay does not ratchet up by the length of every burst.
* The control looks at punctuality, measured at the moments the output pulls: a
  packet's slack is the time from its arrival to the pull that first needs it.
  Device clocks pull (and capture) in irregular steps, so what matters is the
  least slack of the last second, together with the largest relative arrival
  delay (arrival minus RTP time, against the fastest packet of the last 2 s).
* Target: the least punctual packet should arrive `margin_ms` before it is needed,
  even if it were as late as the 95th percentile of relative delay (a forgetting
  histogram of 20 ms buckets, forget factor 0.983, as NetEq): the long memory for
  jitter that the last second did not show. For a while after a loss, one packet
  more, so the packet whose in-band FEC rebuilds a lost one is already here.
* The buffer steps toward the target by whole pulls: a shift of less than a pull
  can still move a packet's need by a whole pull, so whole steps keep the slack
  arithmetic exact. It shortens a decoded low-energy packet (accelerate) once a
  whole second shows a pull to spare, and plays a pull of concealment after a
  low-energy packet (expand) as soon as it is short. Time-stretching voiced speech
  is the next step (issue: NetEq-class jitter buffer).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Decoder, Pcm
from voip.seqnum import Unwrapper
from voip.timeline import Timeline

LOW_ENERGY_RMS = 10 ** (-45 / 20)  # a pause in speech; dropping or repeating it is inaudible
# Shorten only well inside a pause: a cut between words is inaudible but moves the rest
# of the phrase (PESQ-WB fell from 3.56 to 3.22 for one 20 ms cut in a short gap).
PAUSE_SAMPLES = SAMPLE_RATE // 10
STEP_SAMPLES = SAMPLE_RATE // 400  # Opus conceals in multiples of 2.5 ms
INTERRUPTION_MS = 150.0  # W3C: concealment runs this long count as an interruption
DELAY_HISTOGRAM_MS = 2000  # buffer-delay statistics: 1 ms bins up to here


class PushResult(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class JitterConfig:
    min_delay_ms: float = 0.0
    max_delay_ms: float = 500.0
    # NetEq starts at 80 ms. Here the histogram's quantile rises within ~3 jittery packets but
    # decays over ~3.5 s, so a high start only costs delay (and, on a clean stream, one cut in
    # the first pause). One bucket covers the first packets of a device that delivers in bursts
    # (20 ms blocks on a 21.3 ms cycle), where a start at zero ran dry at once.
    initial_delay_ms: float = 20.0
    quantile: float = 0.95
    forget_factor: float = 0.983
    bucket_ms: float = 20.0
    reference_window_s: float = 2.0
    max_packets: int = 500
    resync_after_s: float = 3.0
    delay_window_s: float = 1.0  # the least punctual packet of this long steers the buffer
    margin_ms: float = 5.0  # how early the least punctual packet should arrive before it is needed
    loss_memory_s: float = 10.0  # how long after a loss or underrun the target keeps a packet more

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError(
                f"jitter bounds must satisfy 0 <= min <= max, got {self.min_delay_ms} and {self.max_delay_ms} ms"
            )
        if not 0 < self.quantile < 1:
            raise ValueError(f"jitter quantile must be between 0 and 1, not {self.quantile}")


@dataclass(frozen=True)
class JitterStats:
    packets_late: int
    packets_duplicate: int
    fec_recovered: int
    concealed_ms: float
    concealment_events: int
    interruptions: int
    buffer_delay_ms: float
    buffer_delay_p95_ms: float
    buffer_target_ms: float
    accelerated_ms: float
    expanded_ms: float


@dataclass
class _Buffered:
    payload: bytes
    samples: int
    arrival: float
    relative_delay: float  # seconds behind the fastest packet of the reference window


class DelayEstimator:
    """NetEq-style target: a forgetting histogram of relative arrival delay."""

    def __init__(self, config: JitterConfig) -> None:
        self._config = config
        buckets = math.ceil(config.max_delay_ms / config.bucket_ms) + 1
        start = min(buckets - 1, int(config.initial_delay_ms / config.bucket_ms))
        self._histogram = [0.0] * buckets
        self._histogram[start] = 1.0
        self._total = 1.0
        self._weight = 1.0
        # The quantile's bucket and the mass below it, moved a step at a time as mass arrives:
        # the quantile creeps, so this is O(1) per packet instead of a cumulative sum.
        self._index = start
        self._below = 0.0
        self._window: deque[tuple[float, float]] = deque()  # (arrival, transit), transit rising

    @property
    def quantile_delay_ms(self) -> float:
        """Lower edge of the bucket holding the quantile."""
        return self._index * self._config.bucket_ms

    def on_arrival(self, timestamp: int, now: float) -> float:
        """Count one arrival; returns its relative delay in seconds."""
        transit = now - timestamp / SAMPLE_RATE
        window = self._window
        while window and window[0][0] < now - self._config.reference_window_s:
            window.popleft()
        while window and window[-1][1] >= transit:  # monotonic deque: front is the minimum
            window.pop()
        window.append((now, transit))
        relative_ms = (transit - window[0][1]) * 1000.0
        histogram = self._histogram
        bucket = min(len(histogram) - 1, int(relative_ms / self._config.bucket_ms))
        # Forgetting by scaling every bucket is the same as adding ever larger weights; the
        # weight is folded back into the histogram before it can overflow.
        self._weight /= self._config.forget_factor
        added = self._weight * (1.0 - self._config.forget_factor)
        histogram[bucket] += added
        self._total += added
        if bucket < self._index:
            self._below += added
        if self._weight > 1e9:
            self._histogram = histogram = [mass / self._weight for mass in histogram]
            self._total = sum(histogram)
            self._below = sum(histogram[: self._index])
            self._weight = 1.0
        # Move to the first bucket whose cumulative mass reaches the quantile.
        threshold = self._config.quantile * self._total
        while self._index > 0 and self._below >= threshold:
            self._index -= 1
            self._below -= histogram[self._index]
        while self._index < len(histogram) - 1 and self._below + histogram[self._index] < threshold:
            self._below += histogram[self._index]
            self._index += 1
        return relative_ms / 1000.0

    def reset_reference(self) -> None:
        self._window.clear()


class PunctualityWindow:
    """Over the last second: the least slack (arrival to need) and the largest relative delay.

    Two monotonic deques, so both extremes cost O(1) per packet.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._slack: deque[tuple[float, float]] = deque()  # rising: front is the least
        self._delay: deque[tuple[float, float]] = deque()  # falling: front is the largest
        self._since: float | None = None

    def add(self, now: float, slack: float, relative_delay: float) -> None:
        for window in (self._slack, self._delay):
            while window and window[0][0] < now - self._seconds:
                window.popleft()
        while self._slack and self._slack[-1][1] >= slack:
            self._slack.pop()
        self._slack.append((now, slack))
        while self._delay and self._delay[-1][1] <= relative_delay:
            self._delay.pop()
        self._delay.append((now, relative_delay))
        if self._since is None:
            self._since = now

    @property
    def least_slack(self) -> float:
        return self._slack[0][1] if self._slack else 0.0

    @property
    def largest_delay(self) -> float:
        return self._delay[0][1] if self._delay else 0.0

    def full(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self._seconds

    def restart(self) -> None:
        """After a step every later packet is needed a step sooner or later: old slack no longer applies."""
        self._slack.clear()
        self._delay.clear()
        self._since = None


class JitterBuffer:
    def __init__(self, decoder: Decoder, config: JitterConfig | None = None, timeline: Timeline | None = None) -> None:
        self.config = config or JitterConfig()
        self.timeline = timeline  # records what happens, for --plot
        self._decoder = decoder
        self._estimator = DelayEstimator(self.config)
        self._unwrapper = Unwrapper(32)
        self._packets: dict[int, _Buffered] = {}
        self._keys: list[int] = []  # sorted timestamps of self._packets
        self._playout_ts: int | None = None
        self._concealed_ahead = 0
        self._played: deque[int] = deque(maxlen=64)  # to tell duplicates from late packets
        self._fifo = np.zeros(0, dtype=np.float32)
        self._last_samples = 960
        self._quiet_samples = 0  # decoded low-energy audio in a row: how deep into a pause we are
        self._ended = False
        self._first_arrival: float | None = None
        self._last_loss: float | None = None  # the last loss or underrun
        self._window = PunctualityWindow(self.config.delay_window_s)
        self._pull_samples = 960
        self.playout_delay = 0.0  # seconds from the fastest path's arrival to need, of the last packet
        # statistics
        self.packets_late = 0
        self.packets_duplicate = 0
        self.fec_recovered = 0
        self._concealed_samples = 0
        self._concealment_events = 0
        self._interruptions = 0
        self._run_samples = 0  # length of the current concealment run
        self._accelerated_samples = 0
        self._expanded_samples = 0
        self._delay_histogram = [0] * (DELAY_HISTOGRAM_MS + 1)
        self._delay_sum = 0.0

    # ---- input ---------------------------------------------------------------------------

    def push(self, timestamp: int, payload: bytes, samples: int, now: float) -> PushResult:
        """Insert one packet: its 32-bit RTP timestamp, payload and duration (validated by the caller)."""
        ts = self._unwrapper.unwrap(timestamp)
        if self._playout_ts is not None:
            if ts < self._playout_ts:
                if ts in self._played:
                    self.packets_duplicate += 1
                    return PushResult.DUPLICATE
                # Too late to play, but its delay is the news the target most needs: count it in
                # the histogram, and in the window with the slack it lacked (how far playout is past it).
                relative_delay = self._estimator.on_arrival(ts, now)
                self._window.add(now, -(self._playout_ts - ts) / SAMPLE_RATE, relative_delay)
                self.packets_late += 1
                if self.timeline is not None:
                    self.timeline.late_packet(now)
                return PushResult.LATE
            if ts - self._playout_ts > self.config.resync_after_s * SAMPLE_RATE:
                self._resync(ts)
        if ts in self._packets:
            self.packets_duplicate += 1
            return PushResult.DUPLICATE
        if len(self._keys) >= self.config.max_packets:
            self._drop_oldest()
        relative_delay = self._estimator.on_arrival(ts, now)
        if self.timeline is not None:
            self.timeline.arrival(now, relative_delay * 1000.0)
        self._packets[ts] = _Buffered(payload, samples, now, relative_delay)
        bisect.insort(self._keys, ts)
        if self._first_arrival is None:
            self._first_arrival = now
        return PushResult.ACCEPTED

    def end_of_stream(self) -> None:
        """The sender said BYE: play out what is buffered, then report `drained`."""
        self._ended = True

    @property
    def drained(self) -> bool:
        return self._ended and not self._keys and len(self._fifo) == 0

    def _resync(self, ts: int) -> None:
        """The stream jumped far ahead (sender restarted its clock): start over from `ts`."""
        self._packets.clear()
        self._keys.clear()
        self._playout_ts = None
        self._concealed_ahead = 0
        self._first_arrival = None
        self._estimator.reset_reference()
        self._window.restart()

    def _drop_oldest(self) -> None:
        ts = self._keys.pop(0)
        del self._packets[ts]
        self.packets_late += 1

    # ---- output --------------------------------------------------------------------------

    def pull(self, samples: int, now: float) -> Pcm:
        """Exactly `samples` of audio for the output clock; silence before start and after end."""
        self._pull_samples = samples
        while len(self._fifo) < samples:
            chunk = self._next_chunk(now)
            if chunk is None:
                break
            self._fifo = np.concatenate((self._fifo, chunk)) if len(self._fifo) else chunk
        out = self._fifo[:samples]
        self._fifo = self._fifo[samples:]
        if len(out) < samples:
            out = np.concatenate((out, np.zeros(samples - len(out), dtype=np.float32)))
        return out

    def target_delay(self, now: float) -> float:
        """Seconds from a fastest-path arrival to need that the buffer steers toward.

        The margin, over the larger of the 95th-percentile relative delay (long memory) and
        the largest relative delay of the last window (the pattern playing now). For a while
        after a loss or an underrun, one packet more: the packet whose FEC rebuilds a lost
        one is then here in time, and a stream that ran dry gets room.
        """
        margin = self.config.margin_ms / 1000.0
        if self._last_loss is not None and now - self._last_loss < self.config.loss_memory_s:
            margin += self._last_samples / SAMPLE_RATE
        worst = max(self._estimator.quantile_delay_ms / 1000.0, self._window.largest_delay)
        target_ms = (margin + worst) * 1000.0
        return min(self.config.max_delay_ms, max(self.config.min_delay_ms, target_ms)) / 1000.0

    def _excess(self, target: float) -> float:
        """How much sooner every packet could be needed, the least punctual one keeping its margin."""
        return self._window.least_slack - (target - self._window.largest_delay)

    @property
    def started(self) -> bool:
        return self._playout_ts is not None

    def _next_chunk(self, now: float) -> Pcm | None:
        if self._playout_ts is None and not self._try_start(now):
            return None
        assert self._playout_ts is not None
        packet = self._packets.get(self._playout_ts)
        if packet is not None:
            return self._play_packet(packet, now)
        if self._keys:
            return self._fill_gap(self._keys[0], now)
        if self._ended:
            return None
        self._last_loss = now  # an underrun: lost, or late beyond the margin
        chunk = self._conceal(self._last_samples, now)
        self._concealed_ahead += len(chunk)
        return chunk

    def _try_start(self, now: float) -> bool:
        if not self._keys or self._first_arrival is None:
            return False
        first = self._keys[0]
        newest = self._keys[-1]
        buffered = (newest + self._packets[newest].samples - first) / SAMPLE_RATE
        waited = now - self._first_arrival
        target = self.target_delay(now)
        if buffered <= target and waited < target and not self._ended:
            return False
        self._playout_ts = first
        self._last_samples = self._packets[first].samples
        self._window.restart()
        return True

    def _play_packet(self, packet: _Buffered, now: float) -> Pcm:
        assert self._playout_ts is not None
        # The packet is needed now: part of it goes out with this pull.
        self._window.add(now, now - packet.arrival, packet.relative_delay)
        self.playout_delay = now - packet.arrival + packet.relative_delay
        target = self.target_delay(now)
        excess = self._excess(target)
        if self.timeline is not None:
            self.timeline.playout(now, self.playout_delay * 1000.0, target * 1000.0)
        # Pulls come in whole steps, so a shift of less than a step may still move a packet's
        # need a whole step: expand and accelerate by whole pulls, which keeps the arithmetic exact.
        step = math.ceil(self._pull_samples / STEP_SAMPLES) * STEP_SAMPLES
        can_grow = not self._ended  # after BYE no packet will arrive to fill what we insert
        # Lengthen at once (after a quiet packet) when the least punctual packet nearly missed;
        # when only the reserve for what may come is short, wait for a pause like a cut does.
        urgent = self._window.least_slack < self.config.margin_ms / 1000.0
        quiet_enough = self._quiet_samples >= (1 if urgent else PAUSE_SAMPLES)
        if excess < 0 and quiet_enough and can_grow:
            self._window.restart()
            chunk = self._conceal(step, now, counted=False)
            self._expanded_samples += len(chunk)
            if self.timeline is not None:
                self.timeline.stretched(now, _ms(len(chunk)))
            return chunk
        self._take(self._playout_ts, now + len(self._fifo) / SAMPLE_RATE)
        pcm = self._decoder.decode(packet.payload)
        self._run_samples = 0  # a concealment run ends with real audio
        self._concealed_ahead = 0
        self._last_samples = packet.samples
        self._playout_ts += packet.samples
        self._quiet_samples = self._quiet_samples + len(pcm) if _rms(pcm) < LOW_ENERGY_RMS else 0
        # An eighth of a step of hysteresis: device pulls come in irregular steps (e.g. 20 ms
        # blocks on a 21.3 ms cycle), so a cut can move a need by a little more than the cut.
        if self._window.full(now) and excess * SAMPLE_RATE >= 1.125 * step:
            in_pause = self._quiet_samples >= PAUSE_SAMPLES
            loud_but_late = excess >= max(4 * step / SAMPLE_RATE, 0.1)
            if in_pause or loud_but_late:
                cut = min(len(pcm), step)
                self._window.restart()
                self._accelerated_samples += cut
                if self.timeline is not None:
                    self.timeline.stretched(now, -_ms(cut))
                return pcm[: len(pcm) - cut]
        return pcm

    def _fill_gap(self, next_ts: int, now: float) -> Pcm:
        """The packet at the playout point is missing but a later one is here."""
        assert self._playout_ts is not None
        waited = self._concealed_ahead > 0
        covered = min(self._concealed_ahead, next_ts - self._playout_ts)
        self._playout_ts += covered
        self._concealed_ahead = 0
        gap = next_ts - self._playout_ts
        if gap == 0:
            return np.zeros(0, dtype=np.float32)
        self._last_loss = now
        following = self._packets[next_ts]
        fec_covers = following.samples if self._decoder.has_fec(following.payload) else 0
        if not waited and gap > fec_covers and not self._ended and self._excess(self.target_delay(now)) < 0:
            # Below target, and no FEC to rebuild it: the missing packet is more likely late than
            # lost. Conceal one packet without moving the playout point. If it comes, it plays
            # next (the buffer grew by a packet); if not, this concealment already stood in for it.
            chunk = self._conceal(self._last_samples, now)
            self._concealed_ahead = len(chunk)
            return chunk
        if gap <= fec_covers:
            pcm = self._decoder.decode_fec(following.payload, gap)
            self.fec_recovered += 1
            self._run_samples = 0
        else:  # conceal up to where the next packet's FEC (if any) takes over
            pcm = self._conceal(min(gap - fec_covers, self._last_samples), now)
        self._playout_ts += len(pcm)
        return pcm

    def _take(self, ts: int, played_at: float) -> None:
        packet = self._packets.pop(ts)
        self._keys.pop(0)  # nothing older than the playout point is ever kept
        self._played.append(ts)
        delay_ms = (played_at - packet.arrival) * 1000.0
        self._delay_sum += delay_ms
        self._delay_histogram[min(DELAY_HISTOGRAM_MS, max(0, int(delay_ms)))] += 1

    def _conceal(self, samples: int, now: float, counted: bool = True) -> Pcm:
        pcm = self._decoder.conceal(samples)
        if counted:
            if self.timeline is not None:
                self.timeline.concealed(now, _ms(len(pcm)))
            if self._run_samples == 0:
                self._concealment_events += 1
            before = self._run_samples
            self._run_samples += len(pcm)
            limit = INTERRUPTION_MS * SAMPLE_RATE / 1000
            if before < limit <= self._run_samples:
                self._interruptions += 1
            self._concealed_samples += len(pcm)
        return pcm

    # ---- statistics ----------------------------------------------------------------------

    def stats(self, now: float) -> JitterStats:
        played = sum(self._delay_histogram)
        p95 = 0.0
        if played:
            cumulative = np.cumsum(self._delay_histogram)
            p95 = float(np.searchsorted(cumulative, 0.95 * played))
        return JitterStats(
            packets_late=self.packets_late,
            packets_duplicate=self.packets_duplicate,
            fec_recovered=self.fec_recovered,
            concealed_ms=_ms(self._concealed_samples),
            concealment_events=self._concealment_events,
            interruptions=self._interruptions,
            buffer_delay_ms=self._delay_sum / played if played else 0.0,
            buffer_delay_p95_ms=p95,
            buffer_target_ms=self.target_delay(now) * 1000.0,
            accelerated_ms=_ms(self._accelerated_samples),
            expanded_ms=_ms(self._expanded_samples),
        )


def _rms(pcm: Pcm) -> float:
    return math.sqrt(float(np.dot(pcm, pcm)) / len(pcm)) if len(pcm) else 0.0


def _ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE
