"""The listening port forwarded by the home router, kept while `voip listen` runs.

Two ways to ask: NAT-PMP (RFC 6886; `voip.natpmp`, a datagram to the default gateway), then,
where no router answers it, UPnP IGD (SSDP discovery and SOAP, through miniupnpc). Either
says in one line the address to give callers, or why there is none, and gives the
forwarding back on exit."""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from voip.natpmp import NATPMP_PORT, Mapping, PortMapper


def default_gateway() -> str | None:
    """The IPv4 default route's gateway, from /proc/net/route (Linux); None without one."""
    with contextlib.suppress(OSError, ValueError):
        for row in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = row.split()
            if len(fields) > 2 and fields[1] == "00000000":
                return str(ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16))))
    return None


class Forwarding(Protocol):
    def describe(self) -> str: ...

    def close(self) -> None: ...


def forward_port(gateway: str, port: int) -> Forwarding:
    """NAT-PMP first (under two seconds when nothing answers), then UPnP IGD."""
    natpmp = RouterMapping(gateway, port)
    if natpmp.state is not Mapping.NO_ROUTER:
        return natpmp
    natpmp.close()
    return UpnpMapping(port)


class RouterMapping:
    """Asks the router by NAT-PMP (a second or two), then renews the mapping from a thread until `close`."""

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

    @property
    def state(self) -> Mapping:
        return self._mapper.state

    def describe(self) -> str:
        """One line: the address to give callers, or why there is none."""
        mapper = self._mapper
        if mapper.state is Mapping.MAPPED:
            return f"reachable at {mapper.public_ip}:{mapper.external_port} (forwarded by the router, NAT-PMP)"
        return _not_reachable(mapper.reason, router_found=mapper.state is not Mapping.NO_ROUTER)

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


UPNP_DISCOVER_MS = 1000  # SSDP: how long to wait for routers to answer
UPNP_LEASE_S = 3600  # asked for, and renewed at half of it


def discover_igd() -> tuple[Any, str]:
    """An UPnP Internet Gateway Device found by SSDP (miniupnpc, selected), or None and why not."""
    try:
        import miniupnpc
    except ImportError:
        return None, "no NAT-PMP router answered, and UPnP needs the miniupnpc package"
    upnp = miniupnpc.UPnP()
    upnp.discoverdelay = UPNP_DISCOVER_MS
    try:
        found = upnp.discover()
        if found:
            upnp.selectigd()
    except Exception:  # miniupnpc raises a bare Exception when nothing (usable) answers
        found = 0
    if not found:
        return None, "no NAT-PMP or UPnP router answered"
    return upnp, ""


class UpnpMapping:
    """Asks an UPnP Internet Gateway Device for the port; renews it from a thread until `close`."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._upnp: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.external_ip = ""
        self.reason = ""
        upnp, self.reason = discover_igd()
        if upnp is None:
            return
        try:
            self.external_ip = upnp.externalipaddress() or ""
            upnp.addportmapping(port, "UDP", upnp.lanaddr, port, "voip", "", UPNP_LEASE_S)
        except Exception as exc:  # the router's UPnP error, as miniupnpc words it
            self.reason = f"the UPnP router refused to forward the port ({exc})"
            if not self.external_ip:
                self.reason += ": it has no public address, it is behind another NAT"
            elif not is_public(self.external_ip):
                self.reason += f": its own address {self.external_ip} is not public, it is behind another NAT"
            return
        self._upnp = upnp
        self._thread = threading.Thread(target=self._keep, name="voip-upnp", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(UPNP_LEASE_S / 2):
            with contextlib.suppress(Exception):  # a failed renewal holds until the lease ends
                self._upnp.addportmapping(self._port, "UDP", self._upnp.lanaddr, self._port, "voip", "", UPNP_LEASE_S)

    def describe(self) -> str:
        if self._upnp is not None:
            return f"reachable at {self.external_ip}:{self._port} (forwarded by the router, UPnP)"
        return _not_reachable(self.reason, router_found=not self.reason.startswith("no NAT-PMP"))

    def close(self) -> None:
        self._stop.set()
        if self._upnp is not None:
            with contextlib.suppress(Exception):
                self._upnp.deleteportmapping(self._port, "UDP")


def is_public(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


def _not_reachable(reason: str, router_found: bool) -> str:
    if router_found:  # a router that cannot forward: nothing will, a relay is the way
        return f"not reachable from outside this network: {reason}; use --relay (docs/reach.md)"
    return f"not reachable from outside this network unless the router forwards this port: {reason} (docs/reach.md)"
