"""Asking a STUN server about our NAT, from the socket that will carry the call."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import time

from voip.errors import VoipError
from voip.io.udp import parse_host_port, resolve, socket_address, unreachable_destinations
from voip.nat import NatProbe, NatReport
from voip.stun import Address, is_stun, show_address

STUN_PORT = 3478
MAX_DATAGRAM = 2048


def stun_server(text: str) -> Address:
    """`HOST[:PORT]` (3478 by default), resolved; a `stun:` prefix, as in URIs, is allowed."""
    host, port = parse_host_port(text.removeprefix("stun:"), STUN_PORT)
    _, address = resolve(host, port)
    return address[0], address[1]


def probe_nat(sock: socket.socket, server: Address, discover: bool = True) -> NatReport:
    """Run RFC 5780 discovery on `sock` (a few seconds at most); VoipError if the server is silent.

    Datagrams that are not STUN (a caller's first INVITE, say) are dropped: they are repeated."""
    probe = NatProbe(server, _local_address(sock, server), random.Random(), discover)
    while not probe.done:
        now = time.monotonic()
        for data, destination in probe.datagrams(now):
            with contextlib.suppress(OSError):  # a send that fails is a query that goes unanswered
                sock.sendto(data, socket_address(sock, destination))
        deadline = probe.deadline()
        if probe.done or deadline is None:
            break
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            continue
        try:
            data, _ = sock.recvfrom(MAX_DATAGRAM)
        except BlockingIOError:
            continue
        except ConnectionRefusedError:
            if any(_same(server, where) for where in unreachable_destinations(sock)):
                raise VoipError(f"no STUN server at {show_address(server)}: its port is closed") from None
            continue
        if is_stun(data):
            probe.receive(data, time.monotonic())
    if probe.error is not None:
        raise VoipError(str(probe.error))
    assert probe.report is not None
    return probe.report


def _local_address(sock: socket.socket, server: Address) -> Address | None:
    """The address `sock` sends to `server` from: its bound one, or the route's source."""
    host, port = sock.getsockname()[:2]
    if host not in ("0.0.0.0", "::"):
        return host, port
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as route:
        try:
            route.connect(server)  # no packet is sent: this only asks the routing table
        except OSError:
            return None
        return route.getsockname()[0], port


def _same(a: Address, b: tuple[str, int] | tuple[str, int, int, int]) -> bool:
    return a[1] == b[1] and a[0].removeprefix("::ffff:") == b[0].removeprefix("::ffff:")
