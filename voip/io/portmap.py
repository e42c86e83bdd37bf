"""The listening port forwarded by the home router (NAT-PMP), kept while `voip listen` runs."""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import threading
import time
from pathlib import Path

from voip.natpmp import NATPMP_PORT, Mapping, PortMapper


def default_gateway() -> str | None:
    """The IPv4 default route's gateway, from /proc/net/route (Linux); None without one."""
    with contextlib.suppress(OSError, ValueError):
        for row in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = row.split()
            if len(fields) > 2 and fields[1] == "00000000":
                return str(ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16))))
    return None


class RouterMapping:
    """Asks the router (a second or two), then renews the mapping from a thread until `close`."""

    def __init__(self, gateway: str, port: int) -> None:
        self._router = (gateway, NATPMP_PORT)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._mapper = PortMapper(port, time.monotonic())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        while self._mapper.state is Mapping.ASKING:
            self._step(time.monotonic())
        self._thread: threading.Thread | None = None
        if self._mapper.state is Mapping.MAPPED:
            self._thread = threading.Thread(target=self._keep, name="voip-portmap", daemon=True)
            self._thread.start()

    def _step(self, now: float) -> None:
        with self._lock:
            for request in self._mapper.datagrams(now):
                with contextlib.suppress(OSError):
                    self._sock.sendto(request, self._router)
            deadline = self._mapper.deadline()
        wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        readable, _, _ = select.select([self._sock], [], [], wait)
        if readable:
            try:
                data, source = self._sock.recvfrom(64)
            except OSError:  # port unreachable: the router runs no NAT-PMP; the mapper times out
                return
            if source[0] == self._router[0]:
                with self._lock:
                    self._mapper.receive(data, time.monotonic())

    def _keep(self) -> None:
        while not self._stop.is_set():
            self._step(time.monotonic())

    def describe(self) -> str:
        """One line: the address to give callers, or why there is none."""
        mapper = self._mapper
        if mapper.state is Mapping.MAPPED:
            return f"reachable at {mapper.public_ip}:{mapper.external_port} (forwarded by the router, NAT-PMP)"
        if mapper.state is Mapping.NO_ROUTER:
            return (
                "not reachable from outside this network unless the router forwards this port: "
                f"{mapper.reason} (docs/reach.md)"
            )
        return f"not reachable from outside this network: {mapper.reason}; use --relay (docs/reach.md)"

    def close(self) -> None:
        """Stop renewing and remove the mapping."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            request = self._mapper.unmap()
        if request is not None:
            with contextlib.suppress(OSError):
                self._sock.sendto(request, self._router)
        self._sock.close()
