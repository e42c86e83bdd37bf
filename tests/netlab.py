"""Test hosts in network namespaces that a test makes and deletes: hosts, links, NAT routers.

Only the addresses a test gives its own hosts are used; nothing leaves the machine. Names
carry the test process's PID, so parallel runs do not collide, and every namespace made is
deleted at the end (deleting one removes its ends of the veth links)."""

from __future__ import annotations

import os
import shutil
import subprocess


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot run namespace tests, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


def _run(*command: str, stdin: str | None = None) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=10, input=stdin)


class NetLab:
    def __init__(self) -> None:
        self._tag = f"{os.getpid() % 100000}"
        self._namespaces: list[str] = []
        self._links = 0

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
        self._namespaces.clear()

    def host(self, name: str) -> str:
        """A new namespace with its loopback up; returns its name."""
        namespace = f"voip-{name}-{self._tag}"
        _run("ip", "netns", "add", namespace)
        self._namespaces.append(namespace)
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        return namespace

    def link(self, a: str, a_address: str, b: str, b_address: str, prefix: int = 24) -> tuple[str, str]:
        """A veth pair between two hosts, each end with its address; returns the interface names."""
        self._links += 1
        ends = (f"v{self._links}a-{self._tag}", f"v{self._links}b-{self._tag}")
        _run("ip", "link", "add", ends[0], "netns", a, "type", "veth", "peer", ends[1], "netns", b)
        for namespace, end, address in ((a, ends[0], a_address), (b, ends[1], b_address)):
            _run("ip", "-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", end)
            _run("ip", "-n", namespace, "link", "set", end, "up")
        return ends

    def add_address(self, host: str, interface: str, address: str, prefix: int = 24) -> None:
        _run("ip", "-n", host, "addr", "add", f"{address}/{prefix}", "dev", interface)

    def default_route(self, host: str, via: str) -> None:
        _run("ip", "-n", host, "route", "add", "default", "via", via)

    def forward(self, router: str) -> None:
        _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def nat(self, router: str, outside: str, symmetric: bool = False) -> None:
        """Forwarding and masquerade out of `outside`, as a home router does. Linux keeps the
        source port where it can (an endpoint-independent mapping); `symmetric` picks a random
        port per destination (fully-random), as a symmetric NAT does."""
        self.forward(router)
        flags = " fully-random" if symmetric else ""
        rules = (
            "table ip nat {\n"
            "  chain postrouting {\n"
            f'    type nat hook postrouting priority srcnat; oifname "{outside}" masquerade{flags};\n'
            "  }\n"
            "}\n"
        )
        _run("ip", "netns", "exec", router, "nft", "-f", "-", stdin=rules)

    @staticmethod
    def run_in(host: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", host)
