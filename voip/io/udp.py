"""UDP sockets: address parsing, resolution, binding with clear errors."""

from __future__ import annotations

import errno
import socket

from voip.errors import VoipError
from voip.session import Address


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
    return sock


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
