"""UDP sockets: address parsing, resolution, binding with clear errors."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
import time
from collections.abc import Callable

from voip.errors import VoipError
from voip.session import Address

# Linux reports ICMP errors on an unconnected UDP socket only with these set; the socket
# module does not name them (<linux/in.h>, <linux/in6.h>).
IP_RECVERR = 11
IPV6_RECVERR = 25
MAX_ICMP_ERRORS = 64  # read per call, so an ICMP flood cannot hold the loop
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # the kernel stamps each datagram's arrival
_TIMESPEC = struct.Struct("@qq")
ARRIVAL_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
RECEIVE_BUFFER_BYTES = 4 << 20  # room for a flood's datagrams while the loop is not scheduled (docs/robustness.md)


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


def open_socket(
    bind_host: str, port: int, family: socket.AddressFamily | None = None, dual_stack: bool = False
) -> socket.socket:
    """A non-blocking UDP socket; one clear VoipError for the usual failures."""
    if family is None:
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if dual_stack:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
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
    _report_icmp_errors(sock, family)
    with contextlib.suppress(OSError):  # without stamps, arrival is when the loop reads
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    with contextlib.suppress(OSError):  # the system's cap (net.core.rmem_max) may hold it lower
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    return sock


def receive(
    sock: socket.socket, max_bytes: int, clock: Callable[[], float], since: float
) -> tuple[bytes, Address, float]:
    """A datagram, its sender, and when it arrived on `clock`: now less the time it waited in
    the socket, by the kernel's stamp. Jitter is then the network's, not also the loop's
    wake-up, and what came in while the process was stopped keeps its times. Both clocks are
    read after the datagram is in hand, so a stop of the process before the read cannot make
    it look late. `since` is a time before the caller last found the socket empty: no stamp
    is believed further back than that (the wall clock, on which the kernel stamps, may have
    been set meanwhile). Without a stamp, now."""
    data, ancillary, _, addr = sock.recvmsg(max_bytes, ARRIVAL_SPACE)
    now = clock()
    for level, kind, stamp in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(stamp) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(stamp)
            waited = time.time() - (seconds + nanoseconds * 1e-9)  # both on the wall clock
            if waited >= 0.0:
                return data, addr, max(now - waited, since)
    return data, addr, now


def _report_icmp_errors(sock: socket.socket, family: socket.AddressFamily) -> None:
    """Ask Linux to queue ICMP errors (port unreachable: the peer's port closed) for us to read."""
    if not sys.platform.startswith("linux"):
        return
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_RECVERR) if family == socket.AF_INET6 else (socket.IPPROTO_IP, IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
        if family == socket.AF_INET6:  # a dual-stack socket's IPv4 traffic reports at the IPv4 level
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except OSError:
        pass  # without the reports, a closed port is found by silence, as before


def unreachable_destinations(sock: socket.socket) -> list[Address]:
    """Drain the socket's queued ICMP errors: where each datagram that drew a port unreachable went."""
    unreachable: list[Address] = []
    for _ in range(MAX_ICMP_ERRORS):
        try:
            _, ancillary, _, destination = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
        except OSError:  # nothing (more) queued, or not Linux
            break
        # struct sock_extended_err begins with ee_errno: port unreachable is ECONNREFUSED;
        # host or network unreachable and "fragmentation needed" say nothing of the peer's port
        refused = any(
            (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))
            and len(data) >= 4
            and int.from_bytes(data[:4], sys.byteorder) == errno.ECONNREFUSED
            for level, kind, data in ancillary
        )
        if refused and destination:
            unreachable.append((str(destination[0]), int(destination[1])))
    return unreachable


def socket_address(sock: socket.socket, address: Address) -> Address:
    """`address` as `sock` takes it: an IPv4 address IPv4-mapped for a dual-stack IPv6 socket."""
    if sock.family == socket.AF_INET6 and "." in address[0] and not address[0].startswith("::ffff:"):
        return f"::ffff:{address[0]}", address[1]
    return address


def open_listening_socket(bind_host: str, port: int) -> socket.socket:
    """Like open_socket; "::" listens on IPv6 and IPv4 both (falls back to 0.0.0.0 without IPv6)."""
    if bind_host != "::":
        return open_socket(bind_host, port)
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        return open_socket("0.0.0.0", port)
    probe.close()
    return open_socket(bind_host, port, socket.AF_INET6, dual_stack=True)
