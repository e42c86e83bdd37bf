"""The real-time media loop: one thread drives sessions, sockets, files and devices.

Two clocks pace the audio. Files, tones and file sinks are paced by our clock: every
frame tick the loop reads a frame from the source and pulls one for the sinks.
Devices bring their own clock: a microphone's blocks are encoded the moment they
arrive, and a speaker's requests pull audio from the jitter buffer (and then the
file sinks of that endpoint follow the speaker). Between events the loop waits in
`select` on sockets and devices, with a timeout equal to the next deadline (tick,
RTCP, simulated network delivery).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.io.audio import Microphone, Speaker
from voip.io.files import Sink, Source
from voip.io.realtime import LOOP_PRIORITY, realtime_thread
from voip.io.udp import receive, socket_address, unreachable_destinations
from voip.netsim import NetworkSimulator
from voip.processing import AudioProcessor
from voip.room import Room
from voip.session import Address, Session
from voip.turn import TurnClient

MAX_DATAGRAM = 65535
MAX_RECEIVE_BATCH = 64  # datagrams read per wake-up, so a flood cannot starve the clock
MAX_CATCH_UP_BATCH = 4096  # read after a stall: more than a full socket buffer of a peer's packets
MAX_SOURCE_LAG_S = 0.2  # a source this far behind its clock skips ahead instead of catching up


class Probe(Protocol):
    def captured(self, adc: float, pcm: Pcm) -> None:
        """A microphone block and the ADC time of its first sample."""

    def playing(self, pcm: Pcm) -> Pcm:
        """Audio on its way to the speaker; returns what to play instead."""
        ...

    def sent(self, data: bytes, now: float) -> None: ...

    def received(self, data: bytes, now: float) -> None: ...


@dataclass
class Endpoint:
    """A session with its socket, what it sends and where its received audio goes."""

    session: Session
    sock: socket.socket
    source: Source | None = None
    sinks: list[Sink] = field(default_factory=list)
    mic: Microphone | None = None  # instead of `source`
    speaker: Speaker | None = None  # with or without `sinks`; it then paces them
    network: NetworkSimulator[tuple[bytes, Address]] | None = None  # impairs what this endpoint sends
    probe: Probe | None = None  # watches (and may change) what passes, for measurements
    processor: AudioProcessor | None = None  # echo cancellation etc. between devices and codec
    room: Room | None = None  # a simulated room: what we play comes back into what we capture
    relay: TurnClient | None = None  # everything to and from peers goes through this TURN allocation
    source_done: bool = False
    capture_end: float | None = None  # the microphone's ADC time just after its last sample
    socket_emptied_at: float = -math.inf  # what is read later came after this
    send_errors: int = 0

    def captured(self, pcm: Pcm) -> Pcm:
        """What the microphone (or source) gave, as the encoder should have it."""
        if self.room is not None:
            pcm = self.room.capture(pcm)
        if self.processor is not None:
            pcm = self.processor.capture(pcm, self.echo_delay_s)
        return pcm

    def played(self, pcm: Pcm) -> None:
        """What goes to the speaker (or the sinks): the echo's source and the canceller's reference."""
        if self.room is not None:
            self.room.play(pcm)
        if self.processor is not None:
            self.processor.render(pcm)

    @property
    def echo_delay_s(self) -> float:
        """How long the devices hold audio, out and in: the echo comes at least this late."""
        delay = self.mic.input_delay.mean if self.mic is not None else 0.0
        return delay + (self.speaker.output_delay.mean if self.speaker is not None else 0.0)

    def transmit(self, now: float) -> None:
        if self.relay is not None:
            for request in self.relay.datagrams(now):
                self._send_raw(request, socket_address(self.sock, self.relay.server))
        for data, addr in self.session.datagrams_to_send(now):
            if self.probe is not None:
                self.probe.sent(data, now)
            if self.network is not None:
                self.network.send((data, addr), now)
            else:
                self._sendto(data, addr)
        if self.network is not None:
            for data, addr in self.network.deliver(now):
                self._sendto(data, addr)

    def _sendto(self, data: bytes, addr: Address) -> None:
        if self.relay is not None:
            data, addr = self.relay.wrap(data, (addr[0], addr[1])), socket_address(self.sock, self.relay.server)
        self._send_raw(data, addr)

    def _send_raw(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1  # e.g. ICMP unreachable reported on a later send: keep going

    def flush_network(self) -> None:
        """On exit, deliver what the simulated network still holds (the BYE among it)."""
        if self.network is not None:
            for data, addr in self.network.deliver(float("inf")):
                self._sendto(data, addr)

    def next_deadline(self) -> float | None:
        times = [self.session.next_deadline()]
        if self.network is not None:
            times.append(self.network.next_delivery())
        return min((t for t in times if t is not None), default=None)


class MediaLoop:
    """Runs endpoints in real time until `should_stop(now)` says so (or Ctrl-C)."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        frame_samples: int,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[float], None] | None = None,
        source_drift_ppm: float = 0.0,
    ) -> None:
        self.endpoints = endpoints
        self.frame_s = frame_samples / SAMPLE_RATE
        self.frame_samples = frame_samples
        self.clock = clock
        self.on_tick = on_tick  # every frame tick, and after packets arrived
        self.start = clock()
        self._next_tick = self.start
        # File sources may run on a clock that drifts against the one that plays (--network drift=).
        self.source_frame_s = self.frame_s / (1.0 + source_drift_ppm * 1e-6)
        self._next_source_tick = self.start

    def run(self, should_stop: Callable[[float], bool]) -> None:
        devices = [d for ep in self.endpoints for d in (ep.speaker, ep.mic) if d is not None]
        # The thread that feeds the devices answers them within a block, even on a busy machine
        realtime = realtime_thread(LOOP_PRIORITY) if devices else contextlib.nullcontext(False)
        try:
            with realtime:
                for device in devices:
                    device.start(self.clock())
                self._run(should_stop, devices)
        except Exception:  # a failure on our side (a full disk, a lost device): tell the peers first
            self._hang_up()
            raise
        finally:
            for device in devices:
                device.stop()

    def _hang_up(self) -> None:
        now = self.clock()
        for ep in self.endpoints:
            ep.session.hang_up(now)
            ep.transmit(now)
            ep.flush_network()

    def _run(self, should_stop: Callable[[float], bool], devices: list[Microphone | Speaker]) -> None:
        self._next_tick = self._next_source_tick = self.start = self.clock()
        waitables: list[socket.socket | Microphone | Speaker] = [ep.sock for ep in self.endpoints]
        waitables += devices
        while True:
            now = self.clock()
            self._skip_lost_source_time(now)
            while now >= self._next_source_tick:
                tick = self._next_source_tick
                self._next_source_tick += self.source_frame_s
                self._read_sources(tick)
            if self._away(now):
                self._catch_up(now)
            while now >= self._next_tick:
                tick = self._next_tick
                self._next_tick += self.frame_s
                self._tick(tick)
            for ep in self.endpoints:
                ep.session.handle_deadline(now)
                ep.transmit(now)
            if should_stop(now):
                for ep in self.endpoints:
                    ep.transmit(now)
                    ep.flush_network()
                return
            deadline = min(
                [self._next_tick, self._next_source_tick]
                + [t for ep in self.endpoints if (t := ep.next_deadline()) is not None]
            )
            readable, _, _ = select.select(waitables, [], [], max(0.0, deadline - self.clock()))
            if readable:
                self._on_readable(readable)
                if self.on_tick is not None:  # events that came with the packets are seen at once
                    self.on_tick(self.clock())

    def _away(self, now: float) -> bool:
        """A whole frame tick was missed: the process was stopped, or starved."""
        return now - self._next_tick >= self.frame_s

    def _catch_up(self, now: float) -> None:
        """After a stall of the process (SIGSTOP, a starved machine), the missed ticks are pulled
        as they would have been: what came in meanwhile is read first, with its arrival times,
        and handed over between them in time order. A recording then keeps what the socket held,
        with the delays it would have had. Pulling the ticks first would conceal them all and
        then find the buffer seconds full."""
        away = now - self._next_tick
        for ep in self.endpoints:
            for device in (ep.mic, ep.speaker):
                if device is not None:
                    device.loop_was_away(away, now)
        arrivals = sorted(
            ((arrival, index, data, addr) for index, ep in enumerate(self.endpoints)
             for arrival, data, addr in self._read(ep, MAX_CATCH_UP_BATCH)),
            key=lambda item: item[0],
        )  # fmt: skip
        delivered = 0
        while now >= self._next_tick:
            tick = self._next_tick
            self._next_tick += self.frame_s
            while delivered < len(arrivals) and arrivals[delivered][0] <= tick:
                arrival, index, data, addr = arrivals[delivered]
                self._deliver(self.endpoints[index], data, addr, arrival)
                delivered += 1
            self._tick(tick)
        for arrival, index, data, addr in arrivals[delivered:]:
            self._deliver(self.endpoints[index], data, addr, arrival)

    def _skip_lost_source_time(self, now: float) -> None:
        """After a stall of the process (SIGSTOP, a starved machine), file sources resume where
        they were, and the time they missed is skipped rather than sent as a burst of late frames."""
        behind = now - self._next_source_tick
        if behind <= MAX_SOURCE_LAG_S:
            return
        frames = int(behind / self.source_frame_s)
        self._next_source_tick += frames * self.source_frame_s
        for ep in self.endpoints:
            if ep.source is not None and not ep.source_done:
                ep.session.skip_audio(frames * self.frame_samples)

    def _skip_missed_capture(self, ep: Endpoint, adc: float, samples: int) -> None:
        """Audio the microphone never captured (the process stood still, so its device did too):
        its time passes on the RTP clock, as a file source's does, so that the receiver sees a
        gap rather than every packet after it late by the time missed."""
        if ep.capture_end is not None and adc - ep.capture_end > MAX_SOURCE_LAG_S:
            frames = round((adc - ep.capture_end) / self.frame_s)
            ep.session.skip_audio(frames * self.frame_samples)
        ep.capture_end = adc + samples / SAMPLE_RATE

    def tick_now(self) -> None:
        """Start the frame clock over from now: e.g. a call connected and its file should start at once."""
        self._next_tick = self._next_source_tick = self.clock()

    def _on_readable(self, readable: list[socket.socket | Microphone | Speaker]) -> None:
        now = self.clock()
        if self._away(now):
            return  # `_catch_up` reads what came, in time order with the missed ticks
        captured = False
        for ep in self.endpoints:  # captured audio first: encoded and sent at once
            if ep.mic is not None and ep.mic in readable:
                for adc, pcm in ep.mic.read_blocks(now):
                    self._skip_missed_capture(ep, adc, len(pcm))
                    if ep.probe is not None:
                        ep.probe.captured(adc, pcm)
                    ep.session.send_audio(ep.captured(pcm), now)
                ep.transmit(now)
                captured = True
        for ep in self.endpoints:  # then the network; after a capture a loopback packet may be waiting
            if captured or ep.sock in readable:
                self._drain(ep)
        for ep in self.endpoints:  # then playout, with the freshest packets in the jitter buffers
            if ep.speaker is not None and ep.speaker in readable:
                self._feed_speaker(ep, ep.speaker, self.clock())

    def _read_sources(self, now: float) -> None:
        for ep in self.endpoints:
            if ep.source is not None and not ep.source_done:
                pcm = ep.source.read(self.frame_samples)
                ep.session.send_audio(ep.captured(pcm), now)
                if len(pcm) < self.frame_samples:
                    ep.source_done = True
                    ep.session.flush_audio(now)

    def _tick(self, now: float) -> None:
        for ep in self.endpoints:
            if ep.sinks and ep.speaker is None and not ep.session.receive_finished:
                pcm = ep.session.pull_audio(self.frame_samples, now)
                self._write_sinks(ep, pcm)
                ep.played(pcm)
            for device in (ep.mic, ep.speaker):
                if device is not None:
                    device.check(now)
        if self.on_tick is not None:
            self.on_tick(now)

    def _feed_speaker(self, ep: Endpoint, speaker: Speaker, now: float) -> None:
        speaker.take_requests(now)
        while speaker.wants_audio:
            if ep.session.receive_finished:
                pcm = np.zeros(self.frame_samples, dtype=np.float32)
            else:
                pcm = ep.session.pull_audio(self.frame_samples, now)
                self._write_sinks(ep, pcm)
            pcm = pcm if ep.probe is None else ep.probe.playing(pcm)
            ep.played(pcm)
            speaker.write(pcm, now)

    @staticmethod
    def _write_sinks(ep: Endpoint, pcm: Pcm) -> None:
        if ep.session.jitter.started:  # file sinks start with the stream, not with the program
            for sink in ep.sinks:
                sink.write(pcm)

    def _drain(self, ep: Endpoint) -> None:
        for now, data, addr in self._read(ep, MAX_RECEIVE_BATCH):
            self._deliver(ep, data, addr, now)

    def _read(self, ep: Endpoint, limit: int) -> Iterator[tuple[float, bytes, Address]]:
        """Up to `limit` datagrams from the socket, each with its arrival time, as they are read."""
        for _ in range(limit):
            before = self.clock()  # what is read after finding the socket empty arrived after this
            try:
                data, addr, now = receive(ep.sock, MAX_DATAGRAM, self.clock, ep.socket_emptied_at)
            except (BlockingIOError, InterruptedError):
                ep.socket_emptied_at = before
                break
            except OSError:  # an ICMP error for something we sent: see whether the peer's port closed
                now = self.clock()
                for destination in unreachable_destinations(ep.sock):
                    ep.session.unreachable(destination, now)
                continue
            yield now, data, addr

    @staticmethod
    def _deliver(ep: Endpoint, data: bytes, addr: Address, now: float) -> None:
        if ep.relay is not None:
            if (str(addr[0]).removeprefix("::ffff:"), addr[1]) != ep.relay.server:
                return  # with a relay, peers come through it: anything else is a stranger's
            unwrapped = ep.relay.receive(data, now)
            if unwrapped is None:
                return
            data, addr = unwrapped
        if ep.probe is not None:
            ep.probe.received(data, now)
        ep.session.receive_datagram(data, addr, now)
