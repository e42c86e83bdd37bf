"""The call commands: `voip call HOST` and `voip listen`."""

from __future__ import annotations

import argparse
import ipaddress
import queue
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from voip.cli.console import (
    Metrics,
    StatusLine,
    draw_timeline,
    info,
    level_meter,
    record_timeline,
    security,
    show,
    status_fields,
    summary,
)
from voip.cli.options import (
    DEFAULT_PORT,
    MAX_WRONG_CODES,
    check_drift,
    frame_samples,
    processing_settings,
    session_config,
    simulator,
)
from voip.control import (
    NO_RESPONSE_S,
    CallControl,
    CallEnded,
    CallSettings,
    Connected,
    IncomingCall,
    PeerBack,
    PeerMoved,
    PeerSilent,
    Ringing,
    State,
)
from voip.crypto import new_code
from voip.errors import VoipError
from voip.io.files import SilenceSource
from voip.io.loop import MediaLoop
from voip.io.media import AudioIO, open_audio
from voip.io.portmap import Forwarding, default_gateway, forward_port
from voip.io.relay import allocate, relay_client, release
from voip.io.stun import probe_nat, stun_server
from voip.io.udp import open_listening_socket, open_socket, parse_host_port, resolve
from voip.session import Session
from voip.turn import TurnClient

PUNCH_TTL = 2  # hops: past our own router, not as far as the peer's
PUNCH_OPEN_S = 5.0  # how long each side only opens its own NAT


def run_call(args: argparse.Namespace) -> int:
    _check_code(args)
    if args.punch and not args.port:
        raise VoipError("--punch needs --port: the port here that the other side calls (and you gave it)")
    host, port = parse_host_port(args.destination, DEFAULT_PORT)
    family, peer = resolve(host, port)
    check_drift(args, args.source)
    io = open_audio(
        args.source, args.out or [args.default_out], frame_samples(args), processing_settings(args), args.room
    )
    try:
        sock = open_socket("::" if family == socket.AF_INET6 else "0.0.0.0", args.port, family)
        try:
            _show_public_address(args, sock)
            relay = _relay(args, sock)
            session = _call_session(args)
            assert session.control is not None
            session.control.call(peer, time.monotonic())
            info(f"calling {show(peer)}" + (f" through the relay at {show(relay.server)}" if relay else ""), args.quiet)
            words = _Words(args.sas_confirm, _Terminal() if sys.stdin.isatty() else None)
            punch = _Punch(sock, time.monotonic()) if args.punch else None
            try:
                ended = _converse(args, io, sock, session, None, words, args.started, punch, relay)
            finally:
                if relay is not None:
                    release(sock, relay)
            if args.punch and ended.reason == "no answer":
                raise VoipError(
                    f"no answer from {show(peer)} in {args.timeout:g} s: is the other side calling you "
                    f"({show(sock.getsockname())} here) at the same time? Hole punching cannot get "
                    "through a symmetric NAT on either side (voip doctor --stun tells)"
                )
            return _finish(ended)
        finally:
            sock.close()
    finally:
        io.close()


def run_listen(args: argparse.Namespace) -> int:
    if not args.auto_answer and not sys.stdin.isatty():
        raise VoipError("voip listen asks on the terminal whether to answer; without one, use --auto-answer")
    check_drift(args, args.source)
    _check_code(args)
    if args.code == "":
        args.code = new_code()
    sock = open_listening_socket(args.bind, args.port)
    terminal = _Terminal() if sys.stdin.isatty() else None
    answerer = _Answerer(args.auto_answer, terminal)
    wrong_codes = 0
    relay: TurnClient | None = None
    forwarded = _forward_port(args, sock)
    try:
        info(f"listening on {show(sock.getsockname())}", args.quiet)
        if forwarded is not None:
            print(forwarded.describe(), flush=True)
        _show_public_address(args, sock)
        relay = _relay(args, sock)
        if relay is not None:
            assert relay.relayed is not None
            for ip in {relay.relayed[0], relay.server[0]}:  # callers that relay through the same server
                relay.permit(ip, time.monotonic())
            print(
                f"relayed address {show(relay.relayed)}: callers run voip call {show(relay.relayed)} "
                f"--relay turn:USER:PASSWORD@{show(relay.server)}",
                flush=True,
            )
        if args.code:
            print(f"code: {args.code}  (the caller runs: voip call HOST --code {args.code})", flush=True)
        while True:
            io = open_audio(
                args.source, args.out or [args.default_out], frame_samples(args), processing_settings(args), args.room
            )
            try:
                words = _Words(args.sas_confirm, terminal)
                ended = _converse(args, io, sock, _call_session(args), answerer, words, relay=relay)
            finally:
                io.close()
            wrong_codes += ended.reason.startswith("wrong code")
            if wrong_codes >= MAX_WRONG_CODES:
                raise VoipError(f"{wrong_codes} wrong codes: start `voip listen --code` again for a new code")
            if args.once or ended.reason == "interrupted":
                return _finish(ended)
            info("listening for the next call", args.quiet)
    finally:
        if relay is not None:
            release(sock, relay)
        if forwarded is not None:
            forwarded.close()
        sock.close()


def _forward_port(args: argparse.Namespace, sock: socket.socket) -> Forwarding | None:
    """Unless --no-map: ask the router to forward our port (NAT-PMP, then UPnP), where there is a router with a NAT
    (no default route, a loopback or public address: nothing to ask)."""
    gateway = default_gateway()
    if args.no_map or args.relay or gateway is None or ipaddress.ip_address(gateway).is_global:
        return None
    bound = ipaddress.ip_address(str(sock.getsockname()[0]).removeprefix("::ffff:"))
    if bound.is_loopback:
        return None
    return forward_port(gateway, sock.getsockname()[1])


def _relay(args: argparse.Namespace, sock: socket.socket) -> TurnClient | None:
    """With --relay: an allocation on the TURN server, made now, that the call runs through."""
    if not args.relay:
        return None
    client = relay_client(args.relay)
    allocate(sock, client)
    return client


def _show_public_address(args: argparse.Namespace, sock: socket.socket) -> None:
    """With --stun: the address callers outside this network should use, and whether it works."""
    if args.stun:
        server = stun_server(args.stun)
        print(probe_nat(sock, server).describe(), flush=True)


def _check_code(args: argparse.Namespace) -> None:
    if args.code is not None and args.insecure:
        raise VoipError("--code authenticates an encrypted call: it cannot go with --insecure")


def _call_session(args: argparse.Namespace) -> Session:
    # Punching waits for the other side to start calling too, as long as --timeout
    no_answer_s = args.timeout if getattr(args, "punch", False) else min(NO_RESPONSE_S, args.timeout)
    call = CallSettings(
        encrypted=not args.insecure, code=args.code or None, timeout_s=args.timeout, no_answer_s=no_answer_s
    )
    session = Session(session_config(args), random.Random(), time.monotonic(), call=call)
    record_timeline(args, session)
    return session


def _converse(
    args: argparse.Namespace,
    io: AudioIO,
    sock: socket.socket,
    session: Session,
    answerer: _Answerer | None,
    words: _Words,
    started: float | None = None,
    punch: _Punch | None = None,
    relay: TurnClient | None = None,
) -> CallEnded:
    """Run one call to its end: ringing, connected, hung up by either side, or failed."""
    control = session.control
    assert control is not None
    endpoint = io.endpoint(session, sock, network=simulator(args), relay=relay)
    endpoint.source = None  # a file starts playing when the call connects, not while it rings
    status = StatusLine(args.quiet)
    metrics = Metrics(args.metrics)  # appended to: a listener's calls follow each other in one file
    connected_at: float | None = None
    ended: CallEnded | None = None
    setup_ms: float | None = None

    def on_tick(now: float) -> None:
        nonlocal connected_at, ended, setup_ms
        for event in iter(session.next_event, None):
            if isinstance(event, IncomingCall):
                status.clear()
                info(f"incoming call from {show(event.peer)} (SSRC {event.offer.ssrc:#010x})", args.quiet)
                if answerer is not None:
                    answerer.incoming(event, control, now)
                else:  # the one we call called us at the same moment, and its call goes on
                    control.accept(now)
            elif isinstance(event, Ringing):
                info("ringing", args.quiet)
            elif isinstance(event, Connected):
                connected_at = now
                endpoint.source = io.source
                loop.tick_now()  # the first frame goes out now, not at the next tick
                status.clear()
                info(f"connected to {show(event.peer)}, {security(control, words.confirmed)}", args.quiet)
                words.ask(control, args.quiet)
            elif isinstance(event, PeerMoved):
                status.clear()
                info(f"peer moved to {show(event.peer)}", args.quiet)
            elif isinstance(event, PeerSilent):
                status.clear()
                info(f"peer silent for {event.seconds:.0f} s", args.quiet)
            elif isinstance(event, PeerBack):
                status.clear()
                info("peer is back", args.quiet)
            elif isinstance(event, CallEnded):
                ended = event
        if answerer is not None:
            answerer.poll(now)
        if punch is not None:
            punch.poll(now)
        words.poll(args.quiet)
        if started is not None and setup_ms is None and session.first_send is not None:
            setup_ms = (session.first_send - started) * 1000.0
        if connected_at is not None and ended is None:
            talk = f"{int(now - connected_at) // 60:02d}:{int(now - connected_at) % 60:02d}"
            status.show(
                now,
                lambda: [
                    (0, talk),
                    (0, security(control, words.confirmed)),
                    (3, level_meter(io.mic)),
                    *status_fields(io.device_counters(session.stats(now))),
                ],
            )
            metrics.write(now, lambda: io.device_counters(session.stats(now)))

    def should_stop(now: float) -> bool:
        nonlocal ended
        if ended is not None:
            return True
        if connected_at is not None:
            if args.duration is not None:
                if now >= connected_at + args.duration:
                    session.hang_up(now)
                elif endpoint.source_done:  # the file ended early: silence until the duration (DESIGN.md 1)
                    endpoint.source, endpoint.source_done = SilenceSource(), False
            elif endpoint.source_done:
                session.hang_up(now)
        if interrupted.is_set():
            if control.state is State.IDLE:  # a listener between calls
                ended = CallEnded("interrupted", normal=True)
                return True
            session.hang_up(now)
        return False

    loop = MediaLoop([endpoint], session.frame_samples, on_tick=on_tick, source_drift_ppm=args.network.drift_ppm)
    with _first_interrupt_sets() as interrupted:
        try:
            loop.run(should_stop)
        finally:
            metrics.close()
    status.clear()
    assert ended is not None
    if connected_at is not None:
        stats = io.device_counters(session.stats(time.monotonic()))
        extra: dict[str, object] = {"call_setup_ms": setup_ms, "send_errors": endpoint.send_errors}
        summary(f"call ended: {ended.reason}", stats, args, extra=extra)
        draw_timeline(args, session, stats, f"call with {show(control.peer) if control.peer else '-'}")
    elif ended.normal and ended.reason != "interrupted":
        info(f"call ended: {ended.reason}", args.quiet)  # (otherwise the reason is the error line)
    return ended


class _Punch:
    """Hole punching's opening: our first INVITEs leave with a small TTL, so that they open our
    own NAT for the peer's address but die on the way, before they reach the peer's NAT.

    A datagram that reaches a NAT before its own side has sent leaves a connection-tracking
    entry there (Linux keeps one for 30 s, refreshed by every further datagram), and that
    entry takes the very port pair the peer's NAT would map its own datagrams to: it maps
    them to another port, and the two sides never meet. So for PUNCH_OPEN_S each side only
    opens its own NAT; once both have, the first full INVITE goes through. Both sides must
    start within PUNCH_OPEN_S of each other (docs/reach.md)."""

    def __init__(self, sock: socket.socket, now: float) -> None:
        self._sock = sock
        self._until = now + PUNCH_OPEN_S
        self._level, self._option = (
            (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
            if sock.family == socket.AF_INET6
            else (socket.IPPROTO_IP, socket.IP_TTL)
        )
        self._default = sock.getsockopt(self._level, self._option)
        sock.setsockopt(self._level, self._option, PUNCH_TTL)
        self._opening = True

    def poll(self, now: float) -> None:
        if self._opening and now >= self._until:
            self._sock.setsockopt(self._level, self._option, self._default)
            self._opening = False


def _finish(ended: CallEnded) -> int:
    if not ended.normal:
        raise VoipError(f"call ended: {ended.reason}")
    return 0


class _Terminal:
    """Lines typed on the terminal, read by one thread for the command's life: input() would
    block the loop. At the end of input, one "n" (a ringing call is declined)."""

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        for line in sys.stdin:
            self._lines.put(line)
        self._lines.put("n")

    def line(self) -> str | None:
        return None if self._lines.empty() else self._lines.get_nowait()

    def discard(self) -> None:
        while not self._lines.empty():
            self._lines.get_nowait()


class _Answerer:
    """Picks up at once (--auto-answer), or asks on the terminal without stopping the loop."""

    def __init__(self, auto: bool, terminal: _Terminal | None) -> None:
        assert auto or terminal is not None
        self.auto = auto
        self._terminal = terminal
        self._ringing: CallControl | None = None

    def incoming(self, event: IncomingCall, control: CallControl, now: float) -> None:
        if self.auto:
            control.accept(now)
            return
        assert self._terminal is not None
        self._terminal.discard()  # what was typed before the call rang is no answer to it
        print(f"answer the call from {show(event.peer)}? [Y/n] ", end="", file=sys.stderr, flush=True)
        self._ringing = control

    def poll(self, now: float) -> None:
        control = self._ringing
        if control is None or self._terminal is None:
            return
        line = self._terminal.line()
        if line is None:
            return
        self._ringing = None
        if control.state is State.RINGING:
            if line.strip().lower() in ("", "y", "yes"):
                control.accept(now)
            else:
                control.decline(now)


class _Words:
    """Whether the user confirmed the words: --sas-confirm, or Enter on the terminal once shown."""

    def __init__(self, confirmed: bool, terminal: _Terminal | None) -> None:
        self.confirmed = confirmed
        self._terminal = terminal
        self._asked = False

    def ask(self, control: CallControl, quiet: bool) -> None:
        keys = control.keys
        if keys is None or keys.sas is None or self.confirmed:
            return
        self._asked = True
        if self._terminal is not None:
            self._terminal.discard()
            info(f'read the words "{keys.sas}" to each other; press Enter if they match', quiet)
        else:
            info(f'read the words "{keys.sas}" to each other: if they differ, hang up', quiet)

    def poll(self, quiet: bool) -> None:
        if not self._asked or self.confirmed or self._terminal is None:
            return
        line = self._terminal.line()
        if line is not None and line.strip().lower() in ("", "y", "yes"):
            self.confirmed = True
            info("words confirmed: the call is verified", quiet)


@contextmanager
def _first_interrupt_sets() -> Iterator[threading.Event]:
    """Ctrl-C (or SIGTERM, as from a service manager) once: hang up cleanly (the loop sees the
    flag). Twice: stop at once."""
    flag = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    for signum in previous:
        signal.signal(signum, on_interrupt)
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
