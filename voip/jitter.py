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
  packet's need delay is the time from when it would have arrived by the fastest path
  (its RTP time plus the least transit of the last 2 s) to the pull that first needs it.
  The least need delay of the last second steers.
* Target: the least punctual packet should be here `margin_ms` before it is needed, even
  if it came as late as the 99th percentile of relative delay (a forgetting histogram,
  as NetEq's, with its own constants), or as high as recurring delay spikes reach. For
  a while after a loss that FEC could rebuild, one packet more.
* The buffer moves by time-stretching decoded audio (`voip.stretch`: whole pitch
  periods, cross-faded), in pauses by preference. A stretch moves later needs by whole
  pulls or not at all, and the window is kept net of those moves, so its evidence
  survives a stretch. Clock drift between sender and receiver is absorbed the same way.
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
from voip.stretch import MAX_LAG, MIN_LAG, accelerate, best_period, expand
from voip.timeline import Timeline

LOW_ENERGY_RMS = 10 ** (-45 / 20)  # a pause in speech; dropping or repeating it is inaudible
# Shorten only well inside a pause: a cut between words is inaudible but moves the rest
# of the phrase (PESQ-WB fell from 3.56 to 3.22 for one 20 ms cut in a short gap).
PAUSE_SAMPLES = SAMPLE_RATE // 10
FAR_TOO_LATE_S = 0.1  # this much above target, shorten speech too rather than wait for a pause
TOLERANCE_S = 0.0005  # a shortfall this small is rounding, not a reason to stretch
PERIODIC = 0.9  # correlation of neighbouring periods above which a period can go or repeat unheard
INTERRUPTION_MS = 150.0  # W3C: concealment runs this long count as an interruption
PRIOR_PACKETS = 5  # what the initial delay weighs in the delay histogram, in packets
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
    # NetEq: 0.95, 0.983, 20 ms. Here the quantile alone sets the target, so it reaches
    # further into the tail and remembers longer (~2.5 s; a jittery spell leaves the tail
    # ~12 s after it ends). In bench_jitter (two seeds, jitter and reordering traces) it held
    # about the delay of the 95th percentile with a 1 s window maximum on top (1.15-1.6x the
    # oracle's against 1.2-1.45x), at 0.1-0.8% late, with a steadier target: about half the
    # stretching (e.g. 300 against 514 ms at 30 ms jitter).
    quantile: float = 0.99
    forget_factor: float = 0.992
    bucket_ms: float = 5.0
    reference_window_s: float = 2.0
    max_packets: int = 500
    resync_after_s: float = 3.0
    delay_window_s: float = 1.0  # the least punctual packet of this long steers the buffer
    margin_ms: float = 2.5  # how early the least punctual packet should arrive before it is needed
    loss_memory_s: float = 10.0  # how long after a loss FEC could rebuild the target keeps a packet more
    max_stretch_rate: float = 0.15  # accelerate and expand together, as a fraction of the audio played
    # Shorten only when this much can go. In bench_jitter (two seeds, the jitter and reordering
    # traces) cutting from 2.5 ms held 3-5 ms less delay, but stretched twice as much, let
    # more packets come late (0.2-0.8% against 0.0-0.7%) and scored PESQ-WB 0.1-0.5 lower
    # (2.80 against 3.27 at 30 ms jitter). Even cuts only in pauses of 200 ms or more did no better.
    shorten_min_ms: float = 20.0

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
        # The start counts as a few packets, not as the whole memory: with a long memory and
        # a quantile far in the tail, a full-weight start held the target up for half a minute.
        prior = PRIOR_PACKETS * (1.0 - config.forget_factor)
        self._histogram[start] = prior
        self._total = prior
        self._weight = 1.0
        # The quantile's bucket and the mass below it, moved a step at a time as mass arrives:
        # the quantile creeps, so this is O(1) per packet instead of a cumulative sum.
        self._index = start
        self._below = 0.0
        self._window: deque[tuple[float, float]] = deque()  # (arrival, transit), transit rising

    @property
    def quantile_delay_ms(self) -> float:
        """Upper edge of the bucket holding the quantile: the quantile is at most this, so the
        margin on top of it is a margin indeed (with the lower edge, delays just under it ate
        the whole margin: a slow ramp of delay was concealed at every bucket it crossed)."""
        return (self._index + 1) * self._config.bucket_ms

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
    """The least need delay of the last second.

    A packet's need delay is the time from when it would have arrived by the fastest path
    to the pull that first needs it: its slack plus its relative delay. Records are kept
    net of the shifts since: after a stretch moves every later need by whole pulls, old
    evidence stays valid. A monotonic deque, so the least costs O(1) per packet.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._need: deque[tuple[float, float]] = deque()  # rising: front is the least
        self._since: float | None = None
        self._shift = 0.0  # seconds by which needs moved later since the window started

    def add(self, now: float, need_delay: float) -> None:
        while self._need and self._need[0][0] < now - self._seconds:
            self._need.popleft()
        value = need_delay - self._shift
        while self._need and self._need[-1][1] >= value:
            self._need.pop()
        self._need.append((now, value))
        if self._since is None:
            self._since = now

    def shifted(self, seconds: float) -> None:
        """Every later packet is needed `seconds` later (negative: sooner)."""
        self._shift += seconds

    @property
    def least_need_delay(self) -> float:
        return self._need[0][1] + self._shift if self._need else 0.0

    def full(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self._seconds

    def restart(self) -> None:
        self._need.clear()
        self._since = None
        self._shift = 0.0


class DelayPeaks:
    """Delay spikes that recur, like a link that stalls every few seconds.

    Between spikes farther apart than a few seconds the histogram forgets them, so the
    buffer would shrink and then conceal every spike. Once spikes have come twice within
    the memory, the target rides over them instead (after NetEq's delay peak detector).
    A spike is several packets, within half a second, delayed by more than twice the
    upper edge of the quantile's bucket: a stall delays everything caught in it, where
    random jitter delays a packet here and there.
    """

    MEMORY_S = 20.0
    SPIKE_S = 0.5
    SPIKE_PACKETS = 3

    def __init__(self) -> None:
        self._spikes: deque[tuple[float, float]] = deque()  # (time, height in seconds), confirmed
        self._candidate: tuple[float, float, float, int] | None = None  # (start, threshold, height, packets)

    def observe(self, now: float, relative_delay: float, threshold: float) -> None:
        """Count one arrival; `threshold` is what a spike exceeds (its packets are judged by
        the threshold of its first, since the histogram learns from them as they come)."""
        candidate = self._candidate
        if candidate is not None and now - candidate[0] <= self.SPIKE_S:
            start, threshold, height, packets = candidate
        else:
            start, height, packets = now, 0.0, 0
        if relative_delay <= threshold:
            return
        height, packets = max(height, relative_delay), packets + 1
        self._candidate = (start, threshold, height, packets)
        if packets == self.SPIKE_PACKETS:
            self._spikes.append((start, height))
        elif packets > self.SPIKE_PACKETS:
            self._spikes[-1] = (start, height)

    def height(self, now: float) -> float:
        while self._spikes and self._spikes[0][0] < now - self.MEMORY_S:
            self._spikes.popleft()
        if len(self._spikes) < 2:
            return 0.0
        return max(height for _, height in self._spikes)


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
        self._stretch_budget = float(2 * MAX_LAG)  # samples of stretching allowed now
        self._peaks = DelayPeaks()
        self._ended = False
        self._first_arrival: float | None = None
        self._last_loss: float | None = None  # the last loss that the next packet's FEC could rebuild
        self._window = PunctualityWindow(self.config.delay_window_s)
        self._pull_samples = 960
        self.playout_delay = 0.0  # seconds from the fastest path's arrival to play-out, of the last packet
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
                # the histogram, and in the window with the need delay it lacked (about as far
                # before the next packet's need as its timestamp is before it).
                relative_delay = self._arrived(ts, now)
                self._window.add(now, -(self._playout_ts - ts) / SAMPLE_RATE + relative_delay)
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
            self._drop_oldest(now)
        relative_delay = self._arrived(ts, now)
        if self.timeline is not None:
            self.timeline.arrival(now, relative_delay * 1000.0)
        self._packets[ts] = _Buffered(payload, samples, now, relative_delay)
        bisect.insort(self._keys, ts)
        if self._first_arrival is None:
            self._first_arrival = now
        return PushResult.ACCEPTED

    def _arrived(self, ts: int, now: float) -> float:
        """Count an arrival in the delay statistics; returns its relative delay in seconds."""
        spike_threshold = 2 * self._estimator.quantile_delay_ms / 1000.0  # as it was before this packet
        relative_delay = self._estimator.on_arrival(ts, now)
        self._peaks.observe(now, relative_delay, spike_threshold)
        return relative_delay

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

    def _drop_oldest(self, now: float) -> None:
        """The oldest packet will never play (the buffer is full, or a stall was skipped): it is late."""
        ts = self._keys.pop(0)
        del self._packets[ts]
        self.packets_late += 1
        if self.timeline is not None:
            self.timeline.late_packet(now)

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
        """Seconds from a fastest-path arrival to the pull that needs the packet, to steer toward.

        The margin, over the larger of the quantile of relative delay and, while delay spikes
        keep recurring, the height of the last ones. For a while after a loss that FEC could
        rebuild, one packet more: the packet whose FEC rebuilds the next lost one is then
        here in time.
        """
        margin = self.config.margin_ms / 1000.0
        if self._last_loss is not None and now - self._last_loss < self.config.loss_memory_s:
            margin += self._last_samples / SAMPLE_RATE
        worst = max(self._estimator.quantile_delay_ms / 1000.0, self._peaks.height(now))
        target_ms = (margin + worst) * 1000.0
        return min(self.config.max_delay_ms, max(self.config.min_delay_ms, target_ms)) / 1000.0

    def target_playout_delay(self, now: float) -> float:
        """The target as a playout delay (fastest-path arrival to first sample played).

        Needs come at pulls, so the need delay can only be held within a pull above its
        target, and playout adds what is left of the packet before: this is the target plus
        half a pull. The buffer lengthens as soon as a packet is short of its margin, and
        shortens once `shorten_min_ms` can go, so the playout delay rides above this by up
        to that much.
        """
        return self._as_playout_delay(self.target_delay(now))

    def _as_playout_delay(self, need_delay: float) -> float:
        return need_delay + self._pull_samples / SAMPLE_RATE / 2

    def _excess(self, target: float) -> float:
        """How much sooner every packet could be needed, the least punctual one keeping its margin."""
        return self._window.least_need_delay - target

    @property
    def started(self) -> bool:
        return self._playout_ts is not None

    def _next_chunk(self, now: float) -> Pcm | None:
        if self._playout_ts is None and not self._try_start(now):
            return None
        assert self._playout_ts is not None
        packet = self._packets.get(self._playout_ts)
        if packet is not None:
            if self._concealed_ahead > self.config.max_delay_ms * SAMPLE_RATE / 1000:
                return self._skip_concealed(now)
            return self._play_packet(packet, now)
        if self._keys:
            return self._fill_gap(self._keys[0], now)
        if self._ended:
            return None
        chunk = self._conceal(self._last_samples, now)
        self._concealed_ahead += len(chunk)
        return chunk

    def _skip_concealed(self, now: float) -> Pcm:
        """After a stall longer than the delay bound, the packets it held are dropped, not played
        late: concealment already stood in for them, and playing them would add the whole stall."""
        assert self._playout_ts is not None
        self._playout_ts += self._concealed_ahead
        self._concealed_ahead = 0
        while self._keys and self._keys[0] < self._playout_ts:
            self._drop_oldest(now)
        return np.zeros(0, dtype=np.float32)

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
        # Needed now; its first sample plays once what is left of the packet before has.
        before = len(self._fifo)
        need_delay = now - packet.arrival + packet.relative_delay
        self.playout_delay = need_delay + before / SAMPLE_RATE
        self._window.add(now, need_delay)
        target = self.target_delay(now)
        if self.timeline is not None:
            self.timeline.playout(now, self.playout_delay * 1000.0, self._as_playout_delay(target) * 1000.0)
        self._take(self._playout_ts, now + before / SAMPLE_RATE)
        pcm = self._decoder.decode(packet.payload)
        self._run_samples = 0  # a concealment run ends with real audio
        if self._concealed_ahead:  # the concealment did not stand in for a packet: it delayed them all
            self._window.shifted(self._pull_shift(self._concealed_ahead))
            self._concealed_ahead = 0
        self._last_samples = packet.samples
        self._playout_ts += packet.samples
        # What will be left for later pulls once this one is served, in samples
        left = before + len(pcm) - self._pull_samples
        return self._stretch(pcm, self._excess(target), left, now)

    def _pull_shift(self, samples: int, left: int = 0) -> float:
        """How much later (seconds) every later packet is needed once `samples` more audio is
        queued ahead of it, `left` samples being queued beyond this pull: whole pulls crossed."""
        pull = self._pull_samples
        return (math.floor((left + samples) / pull) - math.floor(left / pull)) * pull / SAMPLE_RATE

    def _stretch(self, pcm: Pcm, excess: float, left: int, now: float) -> Pcm:
        """Move toward the target where it cannot be heard (nor measured).

        Any change of delay inside an utterance is a time warp that listeners and PESQ
        notice (22 pitch-period stretches of the 8 s sample, with the neighbouring periods
        matching at 0.9 or better, took PESQ-WB of the bare signal from 4.6 to 2.6-3.2).
        So the buffer moves in pauses (100 ms of quiet packets): it lengthens a quiet packet
        by what it needs, and shortens one by up to half its length once `shorten_min_ms`
        can go. In speech it stretches by pitch periods only when it must: to lengthen when
        a packet is about to miss its turn, to shorten when far too much is buffered; such
        stretches are bounded to `max_stretch_rate` of the audio played.

        Needs come at pulls: what is queued beyond the next need (`left` modulo a pull) can
        be cut without moving any need, and only shortens the delay; beyond that, each
        pull crossed moves every later need a pull sooner. Lengthening gains punctuality
        only when it crosses a pull.
        """
        budget = min(3 * MAX_LAG, self._stretch_budget + self.config.max_stretch_rate * len(pcm))
        self._stretch_budget = budget
        quiet = _rms(pcm) < LOW_ENERGY_RMS
        self._quiet_samples = self._quiet_samples + len(pcm) if quiet else 0
        in_pause = self._quiet_samples >= PAUSE_SAMPLES
        pull = self._pull_samples
        spare = left % pull  # cut freely: no need moves
        margin = self.config.margin_ms / 1000.0
        if excess < -TOLERANCE_S and not self._ended:  # after BYE no packet will come to fill it
            # In a pause, any shortfall; in speech, once the margin is gone (lengthening speech
            # sooner cost PESQ more than the few late packets it saves). Gaining punctuality
            # takes up to a pull of added audio; a packet that repeats itself well is
            # stretched, and once the margin is gone twice over, any.
            if not (excess < -margin or in_pause):
                return pcm
            crossings = math.ceil(-excess * SAMPLE_RATE / pull)
            wanted = crossings * pull - spare
            lengthen = True
        else:
            cuttable = spare + (pull * math.floor(excess * SAMPLE_RATE / pull) if self._window.full(now) else 0)
            if cuttable < self.config.shorten_min_ms * SAMPLE_RATE / 1000 or not (in_pause or excess >= FAR_TOO_LATE_S):
                return pcm
            wanted = cuttable
            lengthen = False
        if quiet:
            lag = max(1, min(wanted, len(pcm) // 2))
            times = math.ceil(wanted / lag) if lengthen else 1
        else:
            longest = min(len(pcm) // 2, MAX_LAG) if lengthen else min(len(pcm) // 2, MAX_LAG, wanted)
            if longest < MIN_LAG:
                return pcm
            lag, correlation = best_period(pcm, MIN_LAG, longest)
            if lag > budget or (correlation < PERIODIC and not (lengthen and excess < -2 * margin)):
                return pcm
            # Lengthen by as many periods as it takes to gain a pull, in one place: one time
            # warp is less audible (and costs PESQ less) than several.
            times = min(math.ceil(wanted / lag), int(budget // lag)) if lengthen else 1
            self._stretch_budget -= times * lag
        out = pcm
        for _ in range(times):
            out = expand(out, lag) if lengthen else accelerate(out, lag)
        change = len(out) - len(pcm)
        if lengthen:
            self._expanded_samples += change
        else:
            self._accelerated_samples -= change
        self._window.shifted(self._pull_shift(change, left))
        if self.timeline is not None:
            self.timeline.stretched(now, _ms(change))
        return out

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
        following = self._packets[next_ts]
        fec_covers = following.samples if self._decoder.has_fec(following.payload) else 0
        if fec_covers:  # the stream carries FEC: keep the next packet here in time to rebuild a loss
            self._last_loss = now
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

    def _conceal(self, samples: int, now: float) -> Pcm:
        pcm = self._decoder.conceal(samples)
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
            buffer_target_ms=self.target_playout_delay(now) * 1000.0,
            accelerated_ms=_ms(self._accelerated_samples),
            expanded_ms=_ms(self._expanded_samples),
        )


def _rms(pcm: Pcm) -> float:
    return math.sqrt(float(np.dot(pcm, pcm)) / len(pcm)) if len(pcm) else 0.0


def _ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE
