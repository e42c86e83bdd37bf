"""UDP sockets and the real-time media loop that drives sessions.

One thread does everything: every frame tick it feeds the sources to the sessions
and pulls audio for the sinks; between ticks it waits on the sockets with a
timeout equal to the next deadline (tick, RTCP, simulated network delivery).
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voip import SAMPLE_RATE
from voip.errors import VoipError
from voip.io.files import Sink, Source
from voip.netsim import NetworkSimulator
from voip.session import Address, Session

MAX_DATAGRAM = 65535
MAX_RECEIVE_BATCH = 64  # datagrams read per wake-up, so a flood cannot starve the clock


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text)
    if not host:
        raise VoipError(f"bad address {text!r}: expected HOST or HOST:PORT")
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise VoipError(f"bad port {text!r}: expected a number from 1 to 65535")
    return int(text)


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise VoipError(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def open_socket(bind_host: str, port: int, family: socket.AddressFamily | None = None) -> socket.socket:
    """A non-blocking UDP socket; one clear VoipError for the usual failures."""
    if family is None:
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((bind_host, port))
    except OSError as exc:
        sock.close()
        where = f"[{bind_host}]:{port}" if ":" in bind_host else f"{bind_host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise VoipError(f"port {port} is already in use ({where}); pick another with --port") from None
        if exc.errno == errno.EACCES:
            raise VoipError(f"not allowed to bind {where}: ports below 1024 need root") from None
        raise VoipError(f"cannot bind {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@dataclass
class Endpoint:
    """A session with its socket, what it sends and where its received audio goes."""

    session: Session
    sock: socket.socket
    source: Source | None = None
    sinks: list[Sink] = field(default_factory=list)
    network: NetworkSimulator[tuple[bytes, Address]] | None = None  # impairs what this endpoint sends
    source_done: bool = False
    send_errors: int = 0

    def transmit(self, now: float) -> None:
        for data, addr in self.session.datagrams_to_send(now):
            if self.network is not None:
                self.network.send((data, addr), now)
            else:
                self._sendto(data, addr)
        if self.network is not None:
            for data, addr in self.network.deliver(now):
                self._sendto(data, addr)

    def _sendto(self, data: bytes, addr: Address) -> None:
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
    ) -> None:
        self.endpoints = endpoints
        self.frame_s = frame_samples / SAMPLE_RATE
        self.frame_samples = frame_samples
        self.clock = clock
        self.on_tick = on_tick
        self.start = clock()

    def run(self, should_stop: Callable[[float], bool]) -> None:
        next_tick = self.start
        by_socket = {ep.sock.fileno(): ep for ep in self.endpoints}
        socks = [ep.sock for ep in self.endpoints]
        while True:
            now = self.clock()
            while now >= next_tick:
                self._tick(next_tick)
                next_tick += self.frame_s
            for ep in self.endpoints:
                ep.session.handle_deadline(now)
                ep.transmit(now)
            if should_stop(now):
                for ep in self.endpoints:
                    ep.transmit(now)
                    ep.flush_network()
                return
            deadline = min([next_tick] + [t for ep in self.endpoints if (t := ep.next_deadline()) is not None])
            timeout = max(0.0, deadline - self.clock())
            readable, _, _ = select.select(socks, [], [], timeout)
            for sock in readable:
                self._drain(by_socket[sock.fileno()])

    def _tick(self, now: float) -> None:
        for ep in self.endpoints:
            if ep.source is not None and not ep.source_done:
                pcm = ep.source.read(self.frame_samples)
                ep.session.send_audio(pcm, now)
                if len(pcm) < self.frame_samples:
                    ep.source_done = True
                    ep.session.flush_audio(now)
            if ep.sinks and not ep.session.receive_finished:
                pcm = ep.session.pull_audio(self.frame_samples, now)
                if ep.session.jitter.started:  # sinks start with the stream, not with the program
                    for sink in ep.sinks:
                        sink.write(pcm)
        if self.on_tick is not None:
            self.on_tick(now)

    def _drain(self, ep: Endpoint) -> None:
        for _ in range(MAX_RECEIVE_BATCH):
            try:
                data, addr = ep.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors surface here on some systems; the next read may succeed
            ep.session.receive_datagram(data, addr, self.clock())
