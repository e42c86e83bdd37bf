"""`voip doctor [HOST]`: what stands between this machine and a call, one verdict per line.

The checks run in the order a call needs them: the codec and audio libraries, the devices,
the local addresses, a NAT-PMP or UPnP router, a STUN server (only with --stun), and whether a voip
answers at HOST. Each says what it found and, when something is wrong, what to do."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from voip.cli.options import DEFAULT_PORT
from voip.errors import VoipError

NATPMP_TRIES = (0.25, 0.5)  # seconds to wait after each request (RFC 6886 starts at 250 ms)
DOUBLE_NAT_HINT = "it sits behind another NAT (or is offline): no mapping it makes reaches outside; see docs/reach.md"
SIOCGIFADDR = 0x8915  # <linux/sockios.h>


class Verdict(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str
    hint: str = ""

    def line(self) -> str:
        hint = f"\n        {self.hint}" if self.hint else ""
        return f"{self.verdict.value:>6}  {self.check}: {self.detail}{hint}"


def run_doctor(args: argparse.Namespace) -> int:
    failed = False
    for check in _checks(args):
        finding = check()
        print(finding.line(), flush=True)
        failed |= finding.verdict is Verdict.FAIL
    return 1 if failed else 0


def _checks(args: argparse.Namespace) -> list[Callable[[], Finding]]:
    return [
        _codec,
        _portaudio,
        _devices,
        _realtime,
        _addresses,
        _nat_pmp,
        _upnp,
        lambda: _stun(args.stun),
        lambda: _peer(args.host),
    ]


def _codec() -> Finding:
    from voip.codec import opus_version
    from voip.errors import CodecError

    try:
        return Finding("libopus", Verdict.OK, opus_version())
    except CodecError as exc:
        return Finding("libopus", Verdict.FAIL, str(exc))


def _portaudio() -> Finding:
    from voip.io.audio import sounddevice

    try:
        version = sounddevice().get_portaudio_version()[1]
    except VoipError as exc:
        return Finding("PortAudio", Verdict.FAIL, str(exc))
    return Finding("PortAudio", Verdict.OK, version)


def _devices() -> Finding:
    from voip.io.audio import find_device

    try:
        microphone, speaker = find_device("", "input"), find_device("", "output")
    except VoipError as exc:
        return Finding("audio devices", Verdict.FAIL, str(exc), "list them with: voip devices")
    return Finding("audio devices", Verdict.OK, f"microphone {microphone.name!r}, speaker {speaker.name!r}")


def _realtime() -> Finding:
    from voip.io.realtime import realtime_permitted

    if realtime_permitted():
        return Finding("real-time scheduling", Verdict.OK, "granted: audio keeps up on a busy machine")
    return Finding(
        "real-time scheduling",
        Verdict.WARN,
        "not permitted: on a busy machine the speaker may run dry",
        "join the group your sound server's limits give rtprio (Debian: `adduser $USER pipewire`), then log in again",
    )


def _addresses() -> Finding:
    addresses = [a for a in _local_addresses() if not a.is_loopback and not a.is_link_local]
    if not addresses:
        return Finding("addresses", Verdict.FAIL, "none but loopback", "connect to a network")
    shown = ", ".join(str(a) for a in addresses)
    if all(a.is_private for a in addresses):
        hint = "private only: callers on this network reach you; from outside, see --stun and docs/reach.md"
        return Finding("addresses", Verdict.WARN, shown, hint)
    return Finding("addresses", Verdict.OK, shown)


def _local_addresses() -> Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every interface's IPv4 address (SIOCGIFADDR) and IPv6 addresses (/proc/net/if_inet6)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                yield ipaddress.IPv4Address(fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24])
    with contextlib.suppress(OSError):
        for row in Path("/proc/net/if_inet6").read_text().splitlines():
            yield ipaddress.IPv6Address(bytes.fromhex(row.split()[0]))


def _nat_pmp() -> Finding:
    """RFC 6886: ask the default gateway for its public address (opcode 0)."""
    from voip.io.portmap import default_gateway

    gateway = default_gateway()
    if gateway is None:
        return Finding("NAT-PMP", Verdict.SKIP, "no default route")
    from voip.errors import ParseError
    from voip.natpmp import NATPMP_PORT, RESULT_NETWORK_FAILURE, parse_answer, public_address_request

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wait in NATPMP_TRIES:
            try:
                sock.sendto(public_address_request(), (gateway, NATPMP_PORT))
                sock.settimeout(wait)
                answer = parse_answer(sock.recv(16))
            except (TimeoutError, ParseError):
                continue
            except OSError:  # port unreachable: the router runs no NAT-PMP
                break
            public = ipaddress.IPv4Address(answer.public_ip or "0.0.0.0")
            if answer.result == RESULT_NETWORK_FAILURE or (answer.result == 0 and not public.is_global):
                return Finding("NAT-PMP", Verdict.WARN, f"router {gateway} has no public address", DOUBLE_NAT_HINT)
            if answer.result != 0:
                return Finding("NAT-PMP", Verdict.WARN, f"router {gateway} answered with result code {answer.result}")
            return Finding("NAT-PMP", Verdict.OK, f"router {gateway}, public address {public}")
    hint = "callers outside this network cannot reach you unasked; see docs/reach.md"
    return Finding("NAT-PMP", Verdict.WARN, f"no answer from router {gateway}", hint)


def _upnp() -> Finding:
    """UPnP IGD: SSDP discovery (a second), then the router's own outside address."""
    from voip.io.portmap import discover_igd, is_public

    upnp, why = discover_igd()
    if upnp is None:
        return Finding("UPnP", Verdict.WARN, why.replace("NAT-PMP or ", ""), "see docs/reach.md")
    try:
        public = upnp.externalipaddress() or ""
    except Exception:  # the router's SOAP error, as miniupnpc words it
        public = ""
    if not is_public(public):
        return Finding("UPnP", Verdict.WARN, "the router found has no public address", DOUBLE_NAT_HINT)
    return Finding("UPnP", Verdict.OK, f"router found, public address {public}")


def _stun(server: str | None) -> Finding:
    if not server:
        return Finding("STUN", Verdict.SKIP, "no server given (--stun SERVER)")
    from voip.io.stun import probe_nat, stun_server
    from voip.io.udp import open_socket

    try:
        address = stun_server(server)
        with contextlib.closing(open_socket("::" if ":" in address[0] else "0.0.0.0", 0)) as sock:
            report = probe_nat(sock, address)
    except VoipError as exc:
        return Finding("STUN", Verdict.FAIL, str(exc))
    verdict = Verdict.WARN if report.punchable is False else Verdict.OK
    return Finding("STUN", verdict, report.describe())


def _peer(host: str | None) -> Finding:
    if not host:
        return Finding("peer", Verdict.SKIP, "no HOST given")
    from voip.io.ping import PING_TRIES, PING_WAIT_S, PortClosed, ping
    from voip.io.udp import open_socket, parse_host_port, resolve

    try:
        name, port = parse_host_port(host, DEFAULT_PORT)
        family, peer = resolve(name, port)
        with contextlib.closing(open_socket("::" if family == socket.AF_INET6 else "0.0.0.0", 0, family)) as sock:
            rtt = ping(sock, peer)
    except VoipError as exc:
        return Finding("peer", Verdict.FAIL, str(exc))
    except PortClosed:
        return Finding(
            "peer", Verdict.FAIL, f"nothing listens at {host}", "is `voip listen` running there, on that port?"
        )
    if rtt is None:
        waited = PING_TRIES * PING_WAIT_S
        hint = "a firewall or NAT in the way, or no `voip listen` there; see docs/reach.md"
        return Finding("peer", Verdict.FAIL, f"no answer from {host} in {waited:g} s", hint)
    return Finding("peer", Verdict.OK, f"a voip answers at {host}, round trip {rtt * 1000:.1f} ms")
