"""One media session: encoder, packetizer, RTCP, receiver statistics and jitter buffer behind one interface.

Sans-IO: bytes, PCM and `now` go in; bytes, PCM, events and deadlines come out.
Remote bytes never raise out of `receive_datagram`: every packet that cannot be
used is counted by reason and dropped.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import (
    Decoder,
    Encoder,
    L16Decoder,
    L16Encoder,
    OpusDecoder,
    OpusEncoder,
    OpusSettings,
    Pcm,
)
from voip.control import CallControl, CallSettings, ControlEvent, Offer, State, is_control
from voip.errors import CodecError, ParseError
from voip.playout import JitterBuffer, JitterConfig
from voip.red import MAX_BLOCK_BYTES, MAX_OFFSET, RED_PAYLOAD_TYPE, RedPayload, RedundantBlock
from voip.rtcp import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_from_seconds,
    ntp_middle,
    parse_compound,
    serialize_compound,
)
from voip.rtp import OPUS_PAYLOAD_TYPE, Packetizer, RtpPacket, is_rtcp, is_rtp_or_rtcp
from voip.srtp import SrtpContext, SrtpError, gcm_available
from voip.stats import ReceiverStats, StreamStats, round_trip_time

Address = tuple[str, int] | tuple[str, int, int, int]
L16_PAYLOAD_TYPE = 96
LOSS_SMOOTHING = 0.5  # weight of the newest RTCP loss report in the encoder's expected loss
NEW_SOURCE_AFTER_S = 2.0  # a stream this quiet may be taken over by another SSRC (a restarted sender)


class Drop(Enum):
    """Why a datagram from the peer's address was dropped unused (each counted in the statistics)."""

    MALFORMED = "malformed"  # not a packet: too short, bad header, or Opus that libopus rejects
    WRONG_SSRC = "wrong SSRC"  # another stream than the one announced or first heard
    WRONG_PAYLOAD_TYPE = "wrong payload type"
    SEQUENCE_JUMP = "sequence jump"  # held until a next packet confirms it (RFC 3550 A.1)


@dataclass(frozen=True)
class SessionConfig:
    opus: OpusSettings = field(default_factory=OpusSettings)
    jitter: JitterConfig = field(default_factory=JitterConfig)
    codec: str = "opus"  # "opus", or "l16": lossless PCM for tests
    payload_type: int = OPUS_PAYLOAD_TYPE
    cname: str = "voip"
    rtcp_interval_s: float = 1.0
    ntp_offset: float = 0.0  # seconds to add to `now` for NTP time (0 keeps tests clock-free)
    remote: Address | None = None  # None: learn the peer from the first valid packet
    # Redundant audio (RFC 2198, voip.red): taken, offered in a call, and sent while the peer
    # reports loss to a peer that takes it: in a call, one whose offer says so. Outside a call
    # nothing says so (ffmpeg and GStreamer take Opus alone) unless `plain_peer_takes_redundancy`.
    redundancy: bool = True
    plain_peer_takes_redundancy: bool = False

    @property
    def takes_redundancy(self) -> bool:
        return self.redundancy and self.codec == "opus" and self.payload_type != RED_PAYLOAD_TYPE

    def __post_init__(self) -> None:
        if self.codec not in ("opus", "l16"):
            raise ValueError(f"unknown codec {self.codec!r}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type must be 0..127, not {self.payload_type}")


@dataclass(frozen=True)
class StreamStarted:
    ssrc: int
    address: Address


@dataclass(frozen=True)
class ByeReceived:
    ssrc: int
    reason: str


Event = StreamStarted | ByeReceived | ControlEvent


class Session:
    """One media stream each way. With `call`, one call: media flows only while connected,
    to and from the peer the call connected, and every packet from the peer keeps it alive."""

    def __init__(
        self,
        config: SessionConfig,
        rng: random.Random,
        now: float,
        srtp: SrtpContext | None = None,
        call: CallSettings | None = None,
    ) -> None:
        """`srtp` protects a stream whose keys were set up outside a call (SDES); a call's keys
        come from its control (`call`) once connected."""
        self.config = config
        self._rng = rng
        self.remote = config.remote
        self.ssrc = rng.getrandbits(32)
        self.frame_samples = config.opus.frame_samples
        self.control = _call_control(config, self.ssrc, call, rng) if call is not None else None
        self._takes_plain_stream = call is not None and call.takes_plain_stream
        self._encoder: Encoder
        self._decoder: Decoder
        if config.codec == "opus":
            self._encoder = OpusEncoder(config.opus)
            self._decoder = OpusDecoder()
        else:
            self._encoder = L16Encoder(self.frame_samples)
            self._decoder = L16Decoder()
        self._packetizer = Packetizer(
            self.ssrc,
            config.payload_type,
            initial_sequence=rng.randrange(0x8000),
            initial_timestamp=rng.getrandbits(32),
        )
        self.jitter = JitterBuffer(self._decoder, config.jitter)
        self._receiver = ReceiverStats(SAMPLE_RATE)
        self.remote_ssrc: int | None = None
        self._expected_ssrc: int | None = None  # announced by the peer's call offer
        self._receive_payload_type = config.payload_type
        self._input = np.zeros(0, dtype=np.float32)
        self._outbox: list[bytes] = []
        self._events: deque[Event] = deque()
        self._next_rtcp = now + config.rtcp_interval_s * rng.uniform(0.25, 0.75)
        self._closed = False
        # sender state
        self.packets_sent = 0
        self._octets_sent = 0
        self._first_send: float | None = None
        self._last_send: float | None = None
        self._last_rtp_timestamp = 0
        # receiver state
        self._drops: Counter[Drop] = Counter()  # from the peer, dropped: why (`packets_invalid` is their sum)
        self._media_unauthenticated = 0  # SRTP or SRTCP that failed authentication or the replay check
        self._srtp = srtp  # given, or once an encrypted call connects
        self._media_foreign = 0
        self.remote_jitter_ms: float | None = None
        self._octets_received = 0
        self._first_receive: float | None = None
        self._last_receive = -math.inf  # the last packet of the stream we play
        self.rtt: float | None = None
        self.remote_fraction_lost: float | None = None
        self._expected_loss = 0.0
        self._reported_loss = False  # our last report told the peer of loss
        self._previous_payload: tuple[int, bytes] | None = None  # RTP timestamp and payload of the last packet sent
        self._takes_redundancy = config.takes_redundancy  # read on every packet

    @property
    def first_send(self) -> float | None:
        """When the first audio packet was sent."""
        return self._first_send

    @property
    def expected_loss_percent(self) -> int:
        """The loss the encoder is told to expect, from RTCP reports: above 0, Opus may add FEC.

        Below half a percent the smoothed loss is the memory of old reports decaying: no loss,
        no FEC bits. Above it, round up: some FEC beats none when packets are lost.
        """
        return math.ceil(self._expected_loss * 100) if self._expected_loss >= 0.005 else 0

    @property
    def codec_delay_samples(self) -> int:
        """Encoder lookahead: part of the mouth-to-ear delay that no buffer can remove."""
        return int(getattr(self._encoder, "lookahead_samples", 0))

    # ---- sending -------------------------------------------------------------------------

    def send_audio(self, pcm: Pcm, now: float) -> None:
        """Encode and packetize whole frames; a partial frame waits for the next call."""
        if self.control is not None and self.remote is None and not self._follow_call():
            return  # a call that is not connected (yet, or any more) sends no audio
        n = self.frame_samples
        if len(pcm) == n and not len(self._input):  # the usual case: one whole frame
            self._send_frame(pcm, now)
            return
        self._input = np.concatenate((self._input, pcm)) if len(self._input) else pcm
        while len(self._input) >= n:
            frame, self._input = self._input[:n], self._input[n:]
            self._send_frame(frame, now)

    def skip_audio(self, samples: int) -> None:
        """Audio that was never captured (our process stood still): its time passes on the RTP
        clock, as in a pause, so the receiver sees a gap, not a burst of packets late by it."""
        self._packetizer.skip(samples)

    def flush_audio(self, now: float) -> None:
        """Send what is left of the input, padded with silence to a whole frame."""
        if len(self._input):
            pad = np.zeros(self.frame_samples - len(self._input), dtype=np.float32)
            self.send_audio(pad, now)

    def _send_frame(self, frame: Pcm, now: float) -> None:
        payload = self._encoder.encode(frame)
        if self.config.opus.dtx and len(payload) <= 2:
            self._packetizer.skip(len(frame))  # libopus: packets of 2 bytes or less need not be sent
            return
        packet = self._packetizer.packetize(payload, len(frame))
        self._last_rtp_timestamp = packet.timestamp
        previous, self._previous_payload = self._previous_payload, (packet.timestamp, payload)
        if previous is not None and self._sends_redundancy:
            offset = (packet.timestamp - previous[0]) & 0xFFFFFFFF
            if offset <= MAX_OFFSET and len(previous[1]) <= MAX_BLOCK_BYTES:
                red = RedPayload(packet.payload_type, payload, (RedundantBlock(offset, previous[1]),))
                packet = replace(packet, payload_type=RED_PAYLOAD_TYPE, payload=red.serialize())
        self._outbox.append(packet.serialize())
        self.packets_sent += 1
        self._octets_sent += len(packet.payload)
        if self._first_send is None:
            self._first_send = now
        self._last_send = now

    @property
    def _sends_redundancy(self) -> bool:
        """To a peer that takes copies: until its first report, and while it reports loss.
        Before any report nothing is known of the path, and a call that starts on a lossy
        one would lose its first second unprotected; a clean path costs that second's copies."""
        if not self._takes_redundancy:
            return False
        if self.expected_loss_percent == 0 and self.remote_fraction_lost is not None:
            return False
        if self.control is None:
            return self.config.plain_peer_takes_redundancy
        offer = self.control.remote_offer
        return offer is not None and offer.red

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.control.datagrams_to_send() if self.control is not None else []
        if self.remote is not None:  # before a call connects, what was encoded goes nowhere
            out += [(self._protect(data), self.remote) for data in self._outbox]
        self._outbox.clear()
        return out

    # ---- receiving -----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self.control is not None and is_control(data):
            self.control.receive_datagram(data, addr, now)
            self._follow_call()
            return
        not_connected = self.control is not None and self.remote is None and not self._follow_call()
        if not_connected and self._plain_stream_begins(data):
            not_connected = False
        elsewhere = self.remote is not None and _host_port(addr) != _host_port(self.remote)
        # Only an encrypted call's peer may move, and only under its keys: anything else from
        # a new address is a stranger's, dropped unread.
        may_have_moved = elsewhere and self.control is not None and self._srtp is not None
        if not_connected or (elsewhere and not may_have_moved):
            self._media_foreign += 1
            return
        opened = self._open(data)
        if opened is None:
            if elsewhere:
                self._media_foreign += 1
            elif is_rtp_or_rtcp(data):
                self._media_unauthenticated += 1  # dropped before it touches any state
            else:
                self._drops[Drop.MALFORMED] += 1
            return
        data = opened
        if may_have_moved:  # the peer's own keys, from a new address: the call checks the path
            assert self.control is not None
            self.control.check_path(addr, now)
        drop: Drop | None = None
        try:
            if is_rtcp(data):
                self._receive_rtcp(parse_compound(data), now)
            else:
                drop = self._receive_rtp(RtpPacket.parse(data), addr, now)
        except ParseError:  # the parsers' one way to say the bytes are not a packet
            drop = Drop.MALFORMED
        if drop is not None:
            self._drops[drop] += 1
            return
        if self.control is not None:
            self.control.heard_from_peer(now)
        if self.remote is None and self.remote_ssrc is not None:
            self.remote = addr

    def unreachable(self, addr: Address, now: float) -> None:
        """What we sent to `addr` came back as ICMP port unreachable (see voip.io.udp)."""
        if self.control is not None:
            self.control.peer_unreachable(addr, now)

    def _plain_stream_begins(self, data: bytes) -> bool:
        """A receiver that takes plain streams, with no call under way, gets RTP: from now on
        it is a plain stream's receiver (the session is no longer a call)."""
        control = self.control
        if not self._takes_plain_stream or control is None or control.state is not State.IDLE:
            return False
        if not is_rtp_or_rtcp(data):
            return False
        self.control = None
        self._takes_plain_stream = False
        return True

    def _follow_call(self) -> bool:
        """Once the call connects (by a message, or by our user picking up), media goes to the
        peer, and only the stream the peer announced is played. Returns whether connected."""
        control = self.control
        if control is None or not control.connected or control.remote_offer is None:
            return False
        if self.remote is None:
            self.remote = control.peer
            self._expected_ssrc = control.remote_offer.ssrc
            self._receive_payload_type = control.remote_offer.payload_type
            if control.keys is not None:
                self._srtp = SrtpContext(control.keys, gcm=control.offer.gcm and control.remote_offer.gcm)
        elif control.peer is not None and control.peer != self.remote:
            self.remote = control.peer  # the peer moved, and proved it (roaming)
        return True

    def _open(self, data: bytes) -> bytes | None:
        """RTP or RTCP, unprotected when the stream is SRTP; None for anything else."""
        if not is_rtp_or_rtcp(data):
            return None
        if self._srtp is None:
            return data
        try:
            return self._srtp.unprotect_rtcp(data) if is_rtcp(data) else self._srtp.unprotect(data)
        except SrtpError:
            return None

    def _protect(self, data: bytes) -> bytes:
        if self._srtp is None:
            return data
        return self._srtp.protect_rtcp(data) if is_rtcp(data) else self._srtp.protect(data)

    @property
    def packets_unauthenticated(self) -> int:
        """Media and control from the peer's address that failed authentication or replay checks."""
        return self._media_unauthenticated + (self.control.messages_unauthenticated if self.control else 0)

    @property
    def encryption(self) -> str | None:
        """The SRTP profile of an encrypted call once connected; None in the clear."""
        return self._srtp.profile if self._srtp is not None else None

    @property
    def packets_foreign(self) -> int:
        """Packets from anyone but the peer (media, RTCP and call control)."""
        return self._media_foreign + (self.control.messages_foreign if self.control is not None else 0)

    def _receive_rtp(self, packet: RtpPacket, addr: Address, now: float) -> Drop | None:
        """Into the jitter buffer; or why not."""
        red = packet.payload_type == RED_PAYLOAD_TYPE and self._takes_redundancy
        if packet.payload_type != self._receive_payload_type and not red:
            return Drop.WRONG_PAYLOAD_TYPE
        if self._expected_ssrc is not None and packet.ssrc != self._expected_ssrc:
            return Drop.WRONG_SSRC  # not the stream the call announced
        if self.remote_ssrc is None:
            self.remote_ssrc = packet.ssrc
            self._events.append(StreamStarted(packet.ssrc, addr))
        elif packet.ssrc != self.remote_ssrc:
            if self._expected_ssrc is not None or now - self._last_receive < NEW_SOURCE_AFTER_S:
                return Drop.WRONG_SSRC  # a call's stream was announced; a live stream is not taken over
            self._follow_new_source(packet.ssrc, addr, now)
        primary = packet.payload
        copies: tuple[RedundantBlock, ...] = ()
        if red:
            blocks = RedPayload.parse(packet.payload)  # ParseError: malformed
            if blocks.payload_type != self._receive_payload_type:
                return Drop.WRONG_PAYLOAD_TYPE
            primary, copies = blocks.primary, blocks.redundant
        try:
            samples = self._decoder.packet_samples(primary)
        except CodecError:
            return Drop.MALFORMED  # an Opus packet libopus rejects
        if not self._receiver.on_packet(packet.sequence, packet.timestamp, now):
            return Drop.SEQUENCE_JUMP  # until the next packet confirms the jump (RFC 3550 A.1)
        self.jitter.push(packet.timestamp, primary, samples, now)
        self._push_copies(copies, packet.timestamp, now)
        if not self._reported_loss and not self._closed and self._receiver.lost_since_report > 0:
            self._queue_rtcp(now)  # loss began: tell the sender now, so its FEC starts now
        self._last_receive = now
        self._octets_received += len(packet.payload)
        if self._first_receive is None:
            self._first_receive = now
        return None

    def _push_copies(self, copies: tuple[RedundantBlock, ...], carrier: int, now: float) -> None:
        """RFC 2198 copies, after the packet that carried them: into the buffer where their
        packets are missing. A copy libopus rejects, or one that would overlap its carrier,
        stands for nothing."""
        for copy in copies:
            try:
                samples = self._decoder.packet_samples(copy.payload)
            except CodecError:
                continue
            if samples <= copy.timestamp_offset:
                timestamp = (carrier - copy.timestamp_offset) & 0xFFFFFFFF
                self.jitter.push_copy(timestamp, copy.payload, samples, carrier, now)

    def _follow_new_source(self, ssrc: int, addr: Address, now: float) -> None:
        """The stream went quiet and another SSRC came (a sender restarted): play that one now.
        Its sequence numbers start over, and so do the statistics of RFC 3550 A.1."""
        self.remote_ssrc = ssrc
        self._receiver = ReceiverStats(SAMPLE_RATE)
        self.jitter.new_source(now)
        self._events.append(StreamStarted(ssrc, addr))

    @property
    def packets_invalid(self) -> int:
        """Datagrams from the peer's address dropped as unusable, for any reason of `Drop`."""
        invalid_control = self.control.messages_invalid if self.control is not None else 0
        return sum(self._drops.values()) + invalid_control

    def _receive_rtcp(self, packets: list[RtcpPacket], now: float) -> None:
        for packet in packets:
            if isinstance(packet, SenderReport):
                if packet.ssrc == self.remote_ssrc:
                    self._receiver.on_sender_report(ntp_middle(packet.ntp_timestamp), now)
                self._on_report_blocks(packet.reports, now)
            elif isinstance(packet, ReceiverReport):
                self._on_report_blocks(packet.reports, now)
            elif isinstance(packet, Bye) and self.remote_ssrc in packet.ssrcs:
                self.jitter.end_of_stream(now)
                reason = packet.reason.decode("utf-8", "replace")
                self._events.append(ByeReceived(packet.ssrcs[0], reason))

    def _on_report_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            rtt = round_trip_time(block, ntp_middle(self._ntp(now)))
            if rtt is not None:
                self.rtt = rtt
                self.jitter.observe_path_delay(rtt / 2)  # a symmetric path's one-way delay
            loss = block.fraction_lost / 256.0
            self.remote_fraction_lost = loss
            self.remote_jitter_ms = block.jitter * 1000.0 / SAMPLE_RATE
            self._expected_loss += LOSS_SMOOTHING * (loss - self._expected_loss)
            self._encoder.set_expected_loss(self.expected_loss_percent)

    def pull_audio(self, samples: int, now: float) -> Pcm:
        return self.jitter.pull(samples, now)

    @property
    def receive_finished(self) -> bool:
        """The peer said BYE and everything it sent has been played."""
        return self.jitter.drained

    # ---- RTCP timing ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [] if self._closed else [self._next_rtcp]
        if self.control is not None and (call_deadline := self.control.next_deadline()) is not None:
            times.append(call_deadline)
        return min(times, default=None)

    def handle_deadline(self, now: float) -> None:
        if self.control is not None:
            self.control.handle_deadline(now)
        if self._closed or now < self._next_rtcp:
            return
        self._queue_rtcp(now)
        # RFC 3550 6.3.5: randomize the interval to avoid synchronized reports.
        self._next_rtcp = now + self.config.rtcp_interval_s * self._rng.uniform(0.5, 1.5)

    def hang_up(self, now: float, reason: str = "") -> None:
        """Queue a final report and BYE (and end the call); no media is sent after."""
        if self.control is not None:
            self.control.hang_up(now, reason)
        if self._closed:
            return
        self._queue_rtcp(now, bye=Bye((self.ssrc,), reason.encode()[:255]))
        self._closed = True

    def _queue_rtcp(self, now: float, bye: Bye | None = None) -> None:
        if self.remote is None:
            return
        blocks: tuple[ReportBlock, ...] = ()
        if self.remote_ssrc is not None:
            blocks = (self._receiver.report_block(self.remote_ssrc, now),)
            self._reported_loss = blocks[0].fraction_lost > 0
        report: RtcpPacket
        if self._last_send is not None:
            elapsed = now - self._last_send
            rtp_now = (self._last_rtp_timestamp + int(elapsed * SAMPLE_RATE)) & 0xFFFFFFFF
            report = SenderReport(
                self.ssrc,
                self._ntp(now),
                rtp_now,
                self.packets_sent & 0xFFFFFFFF,
                self._octets_sent & 0xFFFFFFFF,
                blocks,
            )
        else:
            report = ReceiverReport(self.ssrc, blocks)
        sdes = SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.config.cname.encode()),)),))
        packets: list[RtcpPacket] = [report, sdes]
        if bye is not None:
            packets.append(bye)
        self._outbox.append(serialize_compound(packets))

    def _ntp(self, now: float) -> int:
        return ntp_from_seconds(now + self.config.ntp_offset)

    # ---- events and statistics -----------------------------------------------------------

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        return self.control.next_event() if self.control is not None else None

    def stats(self, now: float) -> StreamStats:
        j = self.jitter.stats(now)
        r = self._receiver
        return StreamStats(
            packets_sent=self.packets_sent,
            packets_received=r.received,
            packets_lost=max(0, r.lost),
            packets_late=j.packets_late,
            packets_duplicate=j.packets_duplicate,
            packets_reordered=r.reordered,
            packets_invalid=self.packets_invalid,
            packets_malformed=self._drops[Drop.MALFORMED] + (self.control.messages_invalid if self.control else 0),
            packets_wrong_ssrc=self._drops[Drop.WRONG_SSRC],
            packets_wrong_payload_type=self._drops[Drop.WRONG_PAYLOAD_TYPE],
            packets_sequence_jump=self._drops[Drop.SEQUENCE_JUMP],
            packets_foreign=self.packets_foreign,
            packets_unauthenticated=self.packets_unauthenticated,
            fec_recovered=j.fec_recovered,
            fec_packets_received=j.fec_packets_received,
            concealed_ms=j.concealed_ms,
            concealment_events=j.concealment_events,
            interruptions=j.interruptions,
            jitter_ms=r.jitter * 1000.0 / SAMPLE_RATE,
            rtt_ms=None if self.rtt is None else self.rtt * 1000.0,
            remote_fraction_lost=self.remote_fraction_lost,
            remote_jitter_ms=self.remote_jitter_ms,
            buffer_delay_ms=j.buffer_delay_ms,
            buffer_delay_p95_ms=j.buffer_delay_p95_ms,
            buffer_target_ms=j.buffer_target_ms,
            accelerated_ms=j.accelerated_ms,
            expanded_ms=j.expanded_ms,
            packets_played=j.packets_played,
            bitrate_kbps=self._bitrate_kbps(now),
            frame_ms=self.frame_samples * 1000.0 / SAMPLE_RATE,
            lookahead_ms=self.codec_delay_samples * 1000.0 / SAMPLE_RATE,
        )

    def _bitrate_kbps(self, now: float) -> float:
        """Payload bitrate of what we send, or of what we receive when we only receive."""
        if self._first_send is not None:
            octets, start = self._octets_sent, self._first_send
        elif self._first_receive is not None:
            octets, start = self._octets_received, self._first_receive
        else:
            return 0.0
        elapsed = max(now - start, self.frame_samples / SAMPLE_RATE)
        return octets * 8 / elapsed / 1000.0


def _call_control(config: SessionConfig, ssrc: int, call: CallSettings, rng: random.Random) -> CallControl:
    """The call's control, offering what this session sends: the peer decodes by it."""
    opus = config.opus
    offer = Offer(
        ssrc,
        config.payload_type,
        opus.frame_ms,
        opus.bitrate,
        opus.fec,
        opus.dtx,
        encrypted=call.encrypted,
        gcm=call.encrypted and gcm_available(),
        code=call.code is not None,
        red=config.takes_redundancy,
    )
    return CallControl(offer, rng, timeout_s=call.timeout_s, code=call.code, no_answer_s=call.no_answer_s)


def _host_port(addr: Address) -> tuple[str, int]:
    return addr[0], addr[1]
