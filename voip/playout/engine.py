"""The playout engine: packets in, exactly the requested audio out, on the caller's clock.

States (`PlayoutState`), each change an event (`next_event`):

    WAITING  --enough buffered, or waited long enough-->  PLAYING
    PLAYING  --the sender said BYE-->                     DRAINING
    DRAINING --everything buffered has played-->          DRAINED
    PLAYING/DRAINING --the stream jumped far ahead-->     WAITING (a sender restarted)

* Packets wait in a `PacketStore` by unwrapped timestamp. Every pull yields the requested
  number of samples: decoded audio; for a missing packet whose successor is here, the
  successor's in-band FEC or PLC; with nothing buffered, PLC that holds the playout point.
* Concealment played while the buffer was empty stands in for the timestamps it covered:
  when packets return after a loss burst the playout point jumps over them, so delay does
  not ratchet up by every burst. A stall longer than the delay bound is skipped.
* The level is measured at the moments the output pulls: a packet's need delay is the time
  from when it would have arrived by the fastest path to the pull that first needs it. The
  least need delay of the last second (`PunctualityWindow`) is the buffer's level; the
  delay model (`voip.playout.delay`) says where it should be, and the policy
  (`voip.playout.policy`) how to get there: by time-stretching (`voip.playout.stretch`),
  in pauses by preference.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Decoder, Pcm
from voip.playout.config import JitterConfig
from voip.playout.delay import DelayModel
from voip.playout.pauses import PauseDetector
from voip.playout.policy import Action, Situation, decide
from voip.playout.store import Buffered, PacketStore, PushResult
from voip.playout.stretch import MAX_LAG, MIN_LAG, accelerate, best_period, expand
from voip.timeline import Timeline

# This much quiet audio in a row is a pause between talkspurts, where the delay may move:
# longer than most gaps between the words of a sentence (docs/benchmarks.md, stop 27).
PAUSE_SAMPLES = SAMPLE_RATE // 5
PERIODIC = 0.9  # correlation of neighbouring periods above which a period can go or repeat unheard
INTERRUPTION_MS = 150.0  # W3C: concealment runs this long count as an interruption
DELAY_HISTOGRAM_MS = 2000  # buffer-delay statistics: 1 ms bins up to here


class PlayoutState(Enum):
    WAITING = "waiting"  # for the first packets of a stream
    PLAYING = "playing"
    DRAINING = "draining"  # the sender said BYE; what is buffered still plays
    DRAINED = "drained"


@dataclass(frozen=True)
class StateChanged:
    state: PlayoutState
    time: float


@dataclass(frozen=True)
class JitterStats:
    packets_late: int
    packets_duplicate: int
    fec_recovered: int
    fec_packets_received: int
    concealed_ms: float
    concealment_events: int
    interruptions: int
    buffer_delay_ms: float
    buffer_delay_p95_ms: float
    buffer_target_ms: float
    accelerated_ms: float
    expanded_ms: float
    packets_played: int


class PunctualityWindow:
    """The least need delay and the least wait of the last second.

    A packet's need delay is the time from when it would have arrived by the fastest path
    to the pull that first needs it: the least is the buffer's level. Its wait is the time
    from when it did arrive to that pull: the least says how near a packet came to being
    late. Records are kept net of the shifts since: after a stretch moves every later need
    by whole pulls, old evidence stays valid. Monotonic deques, so the least costs O(1)
    per packet.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._need: deque[tuple[float, float]] = deque()  # rising: front is the least
        self._wait: deque[tuple[float, float]] = deque()
        self._since: float | None = None
        self._shift = 0.0  # seconds by which needs moved later since the window started

    def add(self, now: float, need_delay: float, wait: float) -> None:
        self._keep_least(self._need, now, need_delay - self._shift)
        self._keep_least(self._wait, now, wait - self._shift)
        if self._since is None:
            self._since = now

    def _keep_least(self, least: deque[tuple[float, float]], now: float, value: float) -> None:
        while least and least[0][0] < now - self._seconds:
            least.popleft()
        while least and least[-1][1] >= value:
            least.pop()
        least.append((now, value))

    def shifted(self, seconds: float) -> None:
        """Every later packet is needed `seconds` later (negative: sooner)."""
        self._shift += seconds

    @property
    def least_need_delay(self) -> float:
        return self._need[0][1] + self._shift if self._need else 0.0

    @property
    def least_wait(self) -> float:
        return self._wait[0][1] + self._shift if self._wait else 0.0

    def full(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self._seconds

    def restart(self) -> None:
        self._need.clear()
        self._wait.clear()
        self._since = None
        self._shift = 0.0


class JitterBuffer:
    def __init__(self, decoder: Decoder, config: JitterConfig | None = None, timeline: Timeline | None = None) -> None:
        self.config = config or JitterConfig()
        self.timeline = timeline  # records what happens, for --plot
        self._decoder = decoder
        self._delay = DelayModel(self.config)
        self._store = PacketStore(self.config.max_packets)
        self._window = PunctualityWindow(self.config.delay_window_s)
        self.state = PlayoutState.WAITING
        self._events: deque[StateChanged] = deque(maxlen=16)  # a caller that never reads them loses only old ones
        self._playout_ts: int | None = None  # the next timestamp to play; set while not WAITING
        self._concealed_ahead = 0  # samples concealed past the playout point while nothing was here
        self._fifo = np.zeros(0, dtype=np.float32)
        self._last_samples = 960
        self._pauses = PauseDetector(self.config.relative_pauses)
        self._quiet_samples = 0  # decoded quiet audio in a row: how deep into a pause we are
        self._since_pause = 0  # decoded audio since the last pause: music, a tone or a noisy line has none
        self._stretch_budget = float(2 * MAX_LAG)  # samples of speech stretching allowed now
        self._first_arrival: float | None = None
        self._bye = False  # the sender said BYE
        self._last_fec: float | None = None  # when the last packet with in-band FEC came
        self._pull_samples = 960  # of the last pull
        self._last_pull: float | None = None  # when it came
        self.playout_delay = 0.0  # seconds from the fastest path's arrival to play-out, of the last packet
        # statistics
        self.packets_late = 0
        self.packets_duplicate = 0
        self.fec_recovered = 0
        self.fec_packets = 0  # pushed packets that carry in-band FEC for the one before (W3C fecPacketsReceived)
        self._concealed_samples = 0
        self._concealment_events = 0
        self._interruptions = 0
        self._run_samples = 0  # length of the current concealment run
        self._accelerated_samples = 0
        self._expanded_samples = 0
        self._delay_histogram = [0] * (DELAY_HISTOGRAM_MS + 1)
        self._delay_sum = 0.0

    # ---- states and events ---------------------------------------------------------------

    def _enter(self, state: PlayoutState, now: float) -> None:
        if state is not self.state:
            self.state = state
            self._events.append(StateChanged(state, now))

    def next_event(self) -> StateChanged | None:
        return self._events.popleft() if self._events else None

    @property
    def started(self) -> bool:
        return self.state is not PlayoutState.WAITING

    @property
    def drained(self) -> bool:
        return self.state is PlayoutState.DRAINED

    # ---- input ---------------------------------------------------------------------------

    def push(self, timestamp: int, payload: bytes, samples: int, now: float) -> PushResult:
        """Insert one packet: its 32-bit RTP timestamp, payload and duration (validated by the caller)."""
        ts = self._store.unwrap(timestamp)
        # How far ahead of what is playing now: the playout point stands still while the buffer
        # conceals an empty stretch, so a stream back from an outage is measured from past it.
        ahead = ts - self._playout_ts - self._concealed_ahead if self._playout_ts is not None else 0
        if ahead > self.config.resync_after_s * SAMPLE_RATE:
            self._resync(now)
        if self._decoder.has_fec(payload):
            self.fec_packets += 1
            self._last_fec = now
        result = self._store.classify(ts, self._playout_ts)
        if result is PushResult.DUPLICATE and (held := self._store.get(ts)) is not None and held.copy:
            self._store.remove(ts)  # the packet itself, after its copy: its arrival is what counts
            result = PushResult.ACCEPTED
        if result is PushResult.DUPLICATE:
            self.packets_duplicate += 1
            return result
        relative_delay = self._delay.observe(ts, now, samples, self._fec_armed(now))
        if result is PushResult.LATE:
            # Too late to play, but its delay is what the model most needs to know: it was counted.
            self.packets_late += 1
            if self.timeline is not None:
                self.timeline.late_packet(now)
            return result
        if self._store.full:
            self._drop_oldest(now)
        if self.timeline is not None:
            self.timeline.arrival(now, relative_delay * 1000.0)
        self._store.add(ts, Buffered(payload, samples, now, relative_delay))
        if self._first_arrival is None:
            self._first_arrival = now
        return result

    def push_copy(self, timestamp: int, payload: bytes, samples: int, carrier: int, now: float) -> bool:
        """A copy of an earlier packet that rode in the packet at `carrier` (both 32-bit RTP
        timestamps; RFC 2198), pushed after its carrier. Kept only where that earlier packet is
        neither here nor played, and not counted as an arrival: the delay model learns from
        packets as they came, not from copies. Its delay is its carrier's, and its own place."""
        ts = self._store.unwrap(timestamp)
        host = self._store.get(self._store.unwrap(carrier))
        if host is None or self._store.full or self._store.classify(ts, self._playout_ts) is not PushResult.ACCEPTED:
            return False
        later = (carrier - timestamp) % (1 << 32) / SAMPLE_RATE
        self._store.add(ts, Buffered(payload, samples, now, host.relative_delay + later, copy=True))
        return True

    def end_of_stream(self, now: float = 0.0) -> None:
        """The sender said BYE: play out what is buffered, then report `drained`."""
        self._bye = True
        if self.state is PlayoutState.PLAYING:
            self._enter(PlayoutState.DRAINING, now)
        elif self.state is PlayoutState.WAITING and not len(self._store):
            self._enter(PlayoutState.DRAINED, now)

    def observe_path_delay(self, seconds: float) -> None:
        """The one-way network delay (half the round trip): the delay model weighs the buffer's
        delay by the mouth-to-ear delay it makes."""
        self._delay.observe_path_delay(seconds)

    def new_source(self, now: float) -> None:
        """Another sender took over (a restarted one: new SSRC, new timeline): what is buffered
        of the old one is dropped (late) and playout starts over; what was learnt of the path stays."""
        self._resync(now)
        self._store.restart()

    def _resync(self, now: float) -> None:
        """The stream jumped far ahead (sender restarted its clock): start over. What was
        buffered will never play: it is late."""
        while len(self._store):
            self._drop_oldest(now)
        self._playout_ts = None
        self._concealed_ahead = 0
        self._first_arrival = None
        self._delay.reset_reference()
        self._window.restart()
        self._enter(PlayoutState.WAITING, now)

    def _drop_oldest(self, now: float) -> None:
        """The oldest packet will never play (the buffer is full, or a stall was skipped): it is late."""
        self._store.drop_oldest()
        self.packets_late += 1
        if self.timeline is not None:
            self.timeline.late_packet(now)

    # ---- output --------------------------------------------------------------------------

    def pull(self, samples: int, now: float) -> Pcm:
        """Exactly `samples` of audio for the output clock; silence before start and after end."""
        if self._last_pull is not None and self._playout_ts is not None:
            stood_still = now - self._last_pull - self._pull_samples / SAMPLE_RATE
            if stood_still > self.config.output_stall_ms / 1000.0:
                self._skip_missed_output(stood_still, now)
        self._last_pull = now
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
        if self.state is PlayoutState.DRAINING and not len(self._store) and not len(self._fifo):
            self._enter(PlayoutState.DRAINED, now)
        return out

    def _skip_missed_output(self, seconds: float, now: float) -> None:
        """The output stood still (the process was stopped, its device with it): the packets it
        would have played meanwhile can no longer be heard in time. They are skipped, as late,
        so the buffer keeps the delay it had instead of adding the stall. A packet that came
        within the target delay of now is live and stays: if the sender stood still too,
        nothing after the stall is skipped."""
        assert self._playout_ts is not None
        end = self._store.newest_end
        if end is None:
            return
        missed = int(seconds * SAMPLE_RATE) // self._last_samples * self._last_samples
        horizon = min(self._playout_ts + self._concealed_ahead + missed, end)
        live_since = now - self.target_delay(now)
        while (oldest := self._store.oldest) is not None and oldest < horizon:
            packet = self._store.get(oldest)
            assert packet is not None
            if packet.arrival >= live_since:
                break
            self._drop_oldest(now)
        oldest = self._store.oldest
        self._playout_ts = oldest if oldest is not None and oldest < horizon else horizon
        self._concealed_ahead = 0
        self._fifo = self._fifo[:0]
        self._window.restart()

    def target_delay(self, now: float) -> float:
        """Seconds from a fastest-path arrival to the pull that needs the packet, to steer toward.

        The margin over the delay model's target. While the stream carries FEC, at least a
        packet more than most packets' delay: the packet whose FEC rebuilds a lost one is
        then here in time.
        """
        delay = self._delay.target
        if self._fec_armed(now):
            delay = max(delay, self._delay.typical + self._last_samples / SAMPLE_RATE)
        target_ms = (self.config.margin_ms / 1000.0 + delay) * 1000.0
        return min(self.config.max_delay_ms, max(self.config.min_delay_ms, target_ms)) / 1000.0

    def _fec_armed(self, now: float) -> bool:
        """The stream carries FEC: a sender adds it when its receiver reports loss (ours does)."""
        return self._last_fec is not None and now - self._last_fec < self.config.fec_memory_s

    def target_playout_delay(self, now: float) -> float:
        """The target as a playout delay (fastest-path arrival to first sample played): needs
        come at pulls, so this is the target plus half a pull."""
        return self._as_playout_delay(self.target_delay(now))

    def _as_playout_delay(self, need_delay: float) -> float:
        return need_delay + self._pull_samples / SAMPLE_RATE / 2

    def _excess(self, target: float) -> float:
        """How much sooner every packet could be needed, the least punctual one keeping its margin."""
        return self._window.least_need_delay - target

    def _next_chunk(self, now: float) -> Pcm | None:
        if self.state is PlayoutState.WAITING and not self._try_start(now):
            return None
        if self.state is PlayoutState.DRAINED:
            return None
        assert self._playout_ts is not None
        packet = self._store.get(self._playout_ts)
        if packet is not None:
            if self._concealed_ahead > self.config.max_delay_ms * SAMPLE_RATE / 1000:
                return self._skip_concealed(now)
            return self._play_packet(packet, now)
        oldest = self._store.oldest
        if oldest is not None:
            return self._fill_gap(oldest, now)
        if self.state is PlayoutState.DRAINING:
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
        while (oldest := self._store.oldest) is not None and oldest < self._playout_ts:
            self._drop_oldest(now)
        return np.zeros(0, dtype=np.float32)

    def _try_start(self, now: float) -> bool:
        oldest = self._store.oldest
        if oldest is None or self._first_arrival is None:
            return False
        buffered = self._store.span_samples() / SAMPLE_RATE
        waited = now - self._first_arrival
        target = self.target_delay(now)
        if buffered <= target and waited < target and not self._bye:
            return False
        self._playout_ts = oldest
        packet = self._store.get(oldest)
        assert packet is not None
        self._last_samples = packet.samples
        self._window.restart()
        self._enter(PlayoutState.DRAINING if self._bye else PlayoutState.PLAYING, now)
        return True

    def _play_packet(self, packet: Buffered, now: float) -> Pcm:
        assert self._playout_ts is not None
        # Needed now; its first sample plays once what is left of the packet before has.
        before = len(self._fifo)
        need_delay = now - packet.arrival + packet.relative_delay
        self.playout_delay = need_delay + before / SAMPLE_RATE
        self._window.add(now, need_delay, now - packet.arrival)
        target = self.target_delay(now)
        if self.timeline is not None:
            self.timeline.playout(now, self.playout_delay * 1000.0, self._as_playout_delay(target) * 1000.0)
        self._take(self._playout_ts, now + before / SAMPLE_RATE)
        pcm = self._decoder.decode(packet.payload)
        if packet.copy:
            self.fec_recovered += 1
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

    def _situation(self, pcm: Pcm, excess: float, left: int, now: float) -> Situation:
        quiet = self._pauses.quiet(_rms(pcm), len(pcm))
        self._quiet_samples = self._quiet_samples + len(pcm) if quiet else 0
        in_pause = self._quiet_samples >= PAUSE_SAMPLES
        self._since_pause = 0 if in_pause else self._since_pause + len(pcm)
        config = self.config
        return Situation(
            excess=excess,
            headroom=self._window.least_wait,
            margin=config.margin_ms / 1000.0,
            in_pause=in_pause,
            pause_overdue=self._since_pause >= config.pause_wait_s * SAMPLE_RATE,
            spare=left % self._pull_samples,
            pull=self._pull_samples,
            settled=self._window.full(now),
            ended=self.state is PlayoutState.DRAINING,
            shorten_min=round(config.shorten_min_ms * SAMPLE_RATE / 1000),
            speech_deficit=config.speech_deficit_ms / 1000.0,
            far_too_late=config.far_too_late_ms / 1000.0,
        )

    def _stretch(self, pcm: Pcm, excess: float, left: int, now: float) -> Pcm:
        """Carry out the policy's decision: a quiet packet is cut or repeated at any length, speech
        by whole pitch periods that match (`PERIODIC`), within `max_stretch_rate` of what played."""
        budget = min(3 * MAX_LAG, self._stretch_budget + self.config.max_stretch_rate * len(pcm))
        self._stretch_budget = budget
        decision = decide(self._situation(pcm, excess, left, now))
        if decision.action is Action.KEEP:
            return pcm
        lengthen = decision.action is Action.LENGTHEN
        wanted = decision.samples
        if self._quiet_samples:
            lag = max(1, min(wanted, len(pcm) // 2))
            times = math.ceil(wanted / lag) if lengthen else 1
        else:
            longest = min(len(pcm) // 2, MAX_LAG) if lengthen else min(len(pcm) // 2, MAX_LAG, wanted)
            if longest < MIN_LAG:
                return pcm
            lag, correlation = best_period(pcm, MIN_LAG, longest)
            if lag > budget or (correlation < PERIODIC and not decision.any_period):
                return pcm
            # Lengthen by as many periods as it takes to gain a pull, in one place: one time
            # warp is less audible than several.
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
        following = self._store.get(next_ts)
        assert following is not None
        fec_covers = following.samples if self._decoder.has_fec(following.payload) else 0
        draining = self.state is PlayoutState.DRAINING
        if not waited and gap > fec_covers and not draining and self._excess(self.target_delay(now)) < 0:
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
        packet = self._store.take(ts)
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

    # ---- statistics (reading never changes state) ----------------------------------------

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
            fec_packets_received=self.fec_packets,
            concealed_ms=_ms(self._concealed_samples),
            concealment_events=self._concealment_events,
            interruptions=self._interruptions,
            buffer_delay_ms=self._delay_sum / played if played else 0.0,
            buffer_delay_p95_ms=p95,
            buffer_target_ms=self.target_playout_delay(now) * 1000.0,
            accelerated_ms=_ms(self._accelerated_samples),
            expanded_ms=_ms(self._expanded_samples),
            packets_played=played,
        )


def _rms(pcm: Pcm) -> float:
    return math.sqrt(float(np.dot(pcm, pcm)) / len(pcm)) if len(pcm) else 0.0


def _ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE
