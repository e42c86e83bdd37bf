"""Receiver statistics of RFC 3550 (A.1 sequence/loss, A.3 report blocks, A.8 jitter) and RTT.

Everything takes `now` (seconds, monotonic) as an argument; reading a value never
changes state.
"""

from __future__ import annotations

from dataclasses import dataclass

from voip.emodel import estimate_mos, mouth_to_ear_ms
from voip.rtcp import ReportBlock

MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16


class ReceiverStats:
    """Per-source state of RFC 3550 appendix A.1, without the probation period.

    Probation guards against a stray packet being taken for a new source; here the
    session already ties one SSRC to one peer, so the first packet is trusted.
    """

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = SEQ_MOD + 1
        self.received = 0
        self.reordered = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0  # RTP timestamp units (A.8)
        self._last_transit: float | None = None
        self.last_sr_ntp_middle = 0
        self.last_sr_arrival: float | None = None

    def on_packet(self, sequence: int, timestamp: int, now: float) -> bool:
        """Account one RTP packet; False when A.1 calls it invalid (a wild jump, not yet confirmed)."""
        if not self.started:
            self.started = True
            self.base_seq = sequence
            self.max_seq = sequence
            self.bad_seq = SEQ_MOD + 1
        else:
            delta = (sequence - self.max_seq) % SEQ_MOD
            if 0 < delta < MAX_DROPOUT:
                if sequence < self.max_seq:
                    self.cycles += SEQ_MOD
                self.max_seq = sequence
            elif delta == 0:
                pass  # duplicate of the newest packet
            elif delta <= SEQ_MOD - MAX_MISORDER:
                if sequence == self.bad_seq:
                    # Two sequential packets after a jump: the sender restarted; resync.
                    self.base_seq = sequence
                    self.max_seq = sequence
                    self.cycles = 0
                    self.received = 0
                    self.expected_prior = 0
                    self.received_prior = 0
                    self._last_transit = None
                else:
                    self.bad_seq = (sequence + 1) % SEQ_MOD
                    return False
            else:
                self.reordered += 1
        self.received += 1
        self._update_jitter(timestamp, now)
        return True

    def _update_jitter(self, timestamp: int, now: float) -> None:
        transit = now * self.clock_rate - timestamp
        if self._last_transit is not None:
            d = transit - self._last_transit
            # Timestamps wrap at 2**32; a wrapped difference is not jitter.
            if abs(d) < (1 << 31):
                self.jitter += (abs(d) - self.jitter) / 16.0
        self._last_transit = transit

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.started else 0

    @property
    def lost(self) -> int:
        """Cumulative lost: may be negative when duplicates arrive (RFC 3550 6.4.1)."""
        return self.expected - self.received

    @property
    def lost_since_report(self) -> int:
        """Packets missing since the last report block (negative or zero when none are)."""
        return (self.expected - self.expected_prior) - (self.received - self.received_prior)

    def on_sender_report(self, ntp_middle: int, now: float) -> None:
        self.last_sr_ntp_middle = ntp_middle
        self.last_sr_arrival = now

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """Build the next report block; this closes a reporting interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self.last_sr_arrival is not None:
            dlsr = int((now - self.last_sr_arrival) * 65536) & 0xFFFFFFFF
        lost = max(-(1 << 23), min((1 << 23) - 1, self.lost))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            last_sr=self.last_sr_ntp_middle,
            delay_since_last_sr=dlsr,
        )


def round_trip_time(block: ReportBlock, now_ntp_middle: int) -> float | None:
    """RTT in seconds from a report block about our stream: A - LSR - DLSR (RFC 3550 6.4.1)."""
    if block.last_sr == 0:
        return None
    rtt_units = (now_ntp_middle - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
    if rtt_units >= 1 << 31:  # negative: clocks or a forged report
        return None
    return rtt_units / 65536.0


@dataclass(frozen=True)
class StreamStats:
    """Final and live statistics; the field names are the keys of `--stats-json` (DESIGN.md 5)."""

    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    packets_late: int = 0
    packets_duplicate: int = 0
    packets_reordered: int = 0
    packets_invalid: int = 0  # from the peer's address but unusable: the sum of the four below
    packets_malformed: int = 0
    packets_wrong_ssrc: int = 0
    packets_wrong_payload_type: int = 0
    packets_sequence_jump: int = 0
    packets_foreign: int = 0  # from anyone but the peer: dropped
    packets_unauthenticated: int = 0  # from the peer's address, failing authentication or replay: dropped
    fec_recovered: int = 0  # lost packets rebuilt: from in-band FEC, or from an RFC 2198 copy
    fec_packets_received: int = 0  # W3C fecPacketsReceived: packets that carried in-band FEC
    concealed_ms: float = 0.0
    concealment_events: int = 0
    interruptions: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    remote_fraction_lost: float | None = None  # what the peer reports of our stream (RTCP)
    remote_jitter_ms: float | None = None
    buffer_delay_ms: float = 0.0  # mean over the packets played; the mean between two readings is
    packets_played: int = 0  # (delay2 * played2 - delay1 * played1) / (played2 - played1), as in W3C's stats
    buffer_delay_p95_ms: float = 0.0
    buffer_target_ms: float = 0.0
    accelerated_ms: float = 0.0
    expanded_ms: float = 0.0
    bitrate_kbps: float = 0.0
    input_overflows: int = 0  # audio device counters (PortAudio status flags and our queues)
    output_underflows: int = 0
    audio_scheduling: str | None = None  # "real-time": the threads feeding the devices got SCHED_FIFO
    erle_db: float | None = None  # speakerphone processing (voip.processing), None when off
    echo_delay_ms: float | None = None
    input_level_dbfs: float | None = None
    output_level_dbfs: float | None = None
    frame_ms: float = 20.0  # framing and codec lookahead: mouth-to-ear delay no buffer removes
    lookahead_ms: float = 0.0

    @property
    def mos(self) -> float | None:
        """The E-model's MOS of what we hear, with no reference signal (G.107, Ie and Bpl fitted
        for our Opus stream: voip.emodel). Loss is what could not be played: lost or late, less
        what FEC rebuilt. The path's delay is half the round trip (0 until RTCP measures it),
        the devices get the usual allowance. None until a packet has arrived."""
        if not self.packets_received:
            return None
        unplayed = max(0, self.packets_lost + self.packets_late - self.fec_recovered)
        path_ms = self.rtt_ms / 2 if self.rtt_ms is not None else 0.0
        ta_ms = mouth_to_ear_ms(self.frame_ms, self.lookahead_ms, path_ms, self.buffer_delay_ms)
        return estimate_mos(ta_ms, unplayed / (self.packets_received + self.packets_lost))
