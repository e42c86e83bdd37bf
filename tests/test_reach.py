"""Reaching peers behind NATs (issue 14), through real NATs: nftables masquerade in network
namespaces the tests make, and coturn as the STUN server on the outside.

    lan 10.201.1.2 --- 10.201.1.1 router 172.30.0.1 --- 172.30.0.2 (and .3) wan: coturn
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import Processes, assert_speech_carried, free_udp_port, run_voip, voip_command
from tests.netlab import NetLab, cannot_make_namespaces
from tests.test_call import SPEECH_A, _wait_for_line
from voip.io.files import read_48k

LAN, ROUTER_IN, ROUTER_OUT, WAN, WAN_OTHER = "10.201.1.2", "10.201.1.1", "172.30.0.1", "172.30.0.2", "172.30.0.3"
READY_S = 10.0

needs_lab = pytest.mark.skipif(
    (cannot_make_namespaces() is not None or shutil.which("turnserver") is None),
    reason=cannot_make_namespaces() or "needs coturn's turnserver (scripts/setup --test)",
)


class Network:
    def __init__(self, lab: NetLab, symmetric: bool) -> None:
        self.symmetric = symmetric
        self.lan, self.router, self.wan = lab.host("lan"), lab.host("rtr"), lab.host("wan")
        _, self.inside = lab.link(self.lan, LAN, self.router, ROUTER_IN)
        wan_end, outside = lab.link(self.wan, WAN, self.router, ROUTER_OUT)
        self.outside = outside
        lab.add_address(self.wan, wan_end, WAN_OTHER)
        lab.default_route(self.lan, ROUTER_IN)
        lab.nat(self.router, outside, symmetric)


def _start_coturn(processes: Processes, net: Network, tmp_path) -> None:
    """coturn on the outside, on two addresses so that it can answer from the other (RFC 5780)."""
    processes.start(
        [
            *NetLab.run_in(net.wan),
            "turnserver",
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file",
            "stdout",
            "--listening-ip",
            WAN,
            "--listening-ip",
            WAN_OTHER,
            "--relay-ip",  # one relay address: a listener permits it for callers relaying through the same server
            WAN,
            "--listening-port",
            "3478",
            "--realm",
            "voip.test",
            "--lt-cred-mech",
            "--user",
            "alice:secret",
            "--pidfile",
            str(tmp_path / "turn.pid"),
            "--userdb",
            str(tmp_path / "turndb"),
        ]
    )
    # Ready when coturn's own client gets an answer (it waits for ever on silence: bounded here)
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        probe = [*NetLab.run_in(net.wan), "timeout", "1", "turnutils_stunclient", WAN]
        if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
            return
    pytest.fail("coturn did not answer STUN")


@pytest.fixture(params=[False, True], ids=["endpoint-independent NAT", "symmetric NAT"])
def network(request, processes: Processes, tmp_path) -> Iterator[Network]:
    with NetLab() as lab:
        net = Network(lab, symmetric=request.param)
        _start_coturn(processes, net, tmp_path)
        yield net
        processes.cleanup()  # before the namespaces go


@needs_lab
def test_stun_shows_a_listener_its_public_address_and_the_nats_kind(network: Network, processes: Processes):
    listener = processes.start(
        [
            *NetLab.run_in(network.lan),
            *voip_command("listen", "--auto-answer", "--insecure", "--in", "silence", "--out", "null", "--stun", WAN),
        ]
    )
    # no router answers NAT-PMP here: the listener says it cannot be reached unasked...
    forwarding = _wait_for_line(listener, "reachable", stream="stdout")
    assert forwarding.strip() == (
        "not reachable from outside this network unless the router forwards this port: "
        "no NAT-PMP or UPnP router answered (docs/reach.md)"
    )
    line = _wait_for_line(listener, "public address", stream="stdout")
    if not network.symmetric:  # ...and a call from outside to its public address gets no answer
        outside = subprocess.run(
            [
                *NetLab.run_in(network.wan),
                *voip_command(
                    "call", f"{ROUTER_OUT}:5004", "--insecure", "--in", "silence", "--out", "null", "--timeout", "3"
                ),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert outside.returncode == 1 and outside.stderr.strip().endswith("no answer")
    if network.symmetric:
        assert f"public address {ROUTER_OUT}:" in line and "symmetric" in line and "only a relay" in line
    else:  # masquerade keeps the port: the address to give callers is the router's, with ours
        assert f"public address {ROUTER_OUT}:5004 " in line
        assert (
            "mapping endpoint-independent, filtering address-and-port-dependent" in line
            and "punching can get through" in line
        )
    listener.send_signal(signal.SIGTERM)
    assert listener.wait(timeout=10) in (0, 130)


def test_a_stun_server_that_is_not_there_is_one_clear_line():
    closed = free_udp_port("127.0.0.1")
    result = run_voip(
        "call", "127.0.0.1:9", "--insecure", "--in", "silence", "--out", "null", "--stun", f"127.0.0.1:{closed}"
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"voip: no STUN server at 127.0.0.1:{closed}: its port is closed"


@needs_lab
@pytest.mark.skipif(shutil.which("miniupnpd") is None, reason="needs miniupnpd (scripts/setup --test)")
@pytest.mark.parametrize("network", [False], ids=["endpoint-independent NAT"], indirect=True)
def test_doctor_checks_the_router_the_nat_and_the_peer(network: Network, processes: Processes, tmp_path):
    _start_router_daemon(processes, network, tmp_path, natpmp=True)
    listener = processes.start(
        [
            *NetLab.run_in(network.wan),
            *voip_command("listen", "--auto-answer", "--insecure", "--in", "silence", "--out", "null", "--bind", WAN),
        ]
    )
    _wait_for_line(listener, "listening on")
    found = _doctor(network, WAN, "--stun", WAN)
    inside = processes.start(
        [*NetLab.run_in(network.lan), *voip_command("listen", "--auto-answer", "--in", "silence", "--out", "null")]
    )
    assert _wait_for_line(inside, "reachable", stream="stdout").strip() == (
        "not reachable from outside this network: network failure (the router has no public address); "
        "use --relay (docs/reach.md)"
    )
    assert found["libopus"].startswith("ok")
    assert found["addresses"].startswith("warn") and LAN in found["addresses"]
    # miniupnpd answers, but its own outside address is private: what a router behind another NAT sees
    assert found["NAT-PMP"].startswith(f"warn router {ROUTER_IN} has no public address")
    assert found["UPnP"] == "warn no UPnP router answered"  # this miniupnpd answers NAT-PMP only
    assert (
        found["STUN"].startswith(f"ok public address {ROUTER_OUT}:") and "mapping endpoint-independent" in found["STUN"]
    )
    assert found["peer"].startswith(f"ok a voip answers at {WAN}, round trip")
    # nothing listens at the other address: the ICMP answer comes back through the NAT
    assert _doctor(network, f"{WAN_OTHER}:6000")["peer"] == f"FAIL nothing listens at {WAN_OTHER}:6000"


def _start_router_daemon(processes: Processes, network: Network, tmp_path, natpmp: bool) -> None:
    """miniupnpd on the router, answering NAT-PMP or UPnP IGD (its outside address is private,
    as a router behind another NAT has: it refuses every mapping, which is what can be tested)."""
    config = tmp_path / "miniupnpd.conf"
    config.write_text(
        f"ext_ifname={network.outside}\nlistening_ip={network.inside}\nport=0\n"
        f"enable_natpmp={'yes' if natpmp else 'no'}\nenable_upnp={'no' if natpmp else 'yes'}\n"
        "secure_mode=yes\nuuid=fc4ec57e-b051-11db-88f8-0060085db3f6\nallow 1024-65535 10.201.1.0/24 1024-65535\n"
    )
    router = processes.start([*NetLab.run_in(network.router), "miniupnpd", "-d", "-f", str(config)])
    _wait_for_line(router, "Listening for NAT-PMP" if natpmp else "HTTP listening on port")


@needs_lab
@pytest.mark.skipif(shutil.which("miniupnpd") is None, reason="needs miniupnpd (scripts/setup --test)")
@pytest.mark.parametrize("network", [False], ids=["endpoint-independent NAT"], indirect=True)
def test_a_listener_asks_an_upnp_router_and_says_why_it_is_not_reachable(
    network: Network, processes: Processes, tmp_path
):
    _start_router_daemon(processes, network, tmp_path, natpmp=False)
    listener = processes.start(
        [*NetLab.run_in(network.lan), *voip_command("listen", "--auto-answer", "--in", "silence", "--out", "null")]
    )
    # discovery found the router, and AddPortMapping got its answer (501, Action Failed)
    assert _wait_for_line(listener, "reachable", stream="stdout").strip() == (
        "not reachable from outside this network: the UPnP router refused to forward the port (Action Failed): "
        "it has no public address, it is behind another NAT; use --relay (docs/reach.md)"
    )
    found = _doctor(network)
    assert found["NAT-PMP"].startswith("warn no answer from router")
    assert found["UPnP"] == "warn the router found has no public address"


def _doctor(network: Network, *args: str) -> dict[str, str]:
    """`voip doctor` in the LAN host: each check's name to its verdict and detail."""
    doctor = subprocess.run(
        [*NetLab.run_in(network.lan), *voip_command("doctor", *args)], capture_output=True, text=True, timeout=60
    )
    found = {}
    for line in doctor.stdout.splitlines():
        if match := re.match(r"\s*(ok|warn|FAIL|skip)  ([^:]+): (.*)", line):
            found[match[2]] = f"{match[1]} {match[3]}"
    assert doctor.returncode == (1 if any(v.startswith("FAIL") for v in found.values()) else 0)
    return found


# ---- hole punching: two homes, each behind its own NAT --------------------------------------

PEOPLE_SKEW_S = 2.0
LAN_B, ROUTER_B_IN, ROUTER_B_OUT = "10.201.2.2", "10.201.2.1", "172.30.1.4"


class TwoHomes:
    """lan A - router A (172.30.0.1) - the internet - (172.30.1.4) router B - lan B; each home
    router masquerades. The internet is one router here: homes are never next to each other."""

    def __init__(self, lab: NetLab, symmetric_b: bool) -> None:
        self.lan_a, self.router_a = lab.host("lana"), lab.host("rtra")
        self.lan_b, self.router_b = lab.host("lanb"), lab.host("rtrb")
        internet = lab.host("inet")
        lab.link(self.lan_a, LAN, self.router_a, ROUTER_IN)
        lab.link(self.lan_b, LAN_B, self.router_b, ROUTER_B_IN)
        outside_a, _ = lab.link(self.router_a, ROUTER_OUT, internet, "172.30.0.254")
        outside_b, _ = lab.link(self.router_b, ROUTER_B_OUT, internet, "172.30.1.254")
        lab.forward(internet)
        for host, via in (
            (self.lan_a, ROUTER_IN),
            (self.lan_b, ROUTER_B_IN),
            (self.router_a, "172.30.0.254"),
            (self.router_b, "172.30.1.254"),
        ):
            lab.default_route(host, via)
        lab.nat(self.router_a, outside_a)
        lab.nat(self.router_b, outside_b, symmetric=symmetric_b)


@needs_lab
def test_hole_punching_connects_two_sides_behind_endpoint_independent_nats(
    processes: Processes, tmp_path, speech, speech_b
):
    got_a, got_b = tmp_path / "got_a.wav", tmp_path / "got_b.wav"
    with NetLab() as lab:
        homes = TwoHomes(lab, symmetric_b=False)
        side_a = processes.start(
            [
                *NetLab.run_in(homes.lan_a),
                *voip_command("call", f"{ROUTER_B_OUT}:5004", "--punch", "--port", "5004", "--in", SPEECH_A),
                *("--out", str(got_a), "--duration", "8", "--timeout", "15", "--sas-confirm"),
            ]
        )
        _wait_for_line(side_a, "calling")
        time.sleep(PEOPLE_SKEW_S)  # the other person starts a moment later, as people do
        side_b = processes.start(
            [
                *NetLab.run_in(homes.lan_b),
                *voip_command("call", f"{ROUTER_OUT}:5004", "--punch", "--port", "5004", "--in", str(speech_b)),
                *("--out", str(got_b), "--duration", "8", "--timeout", "15", "--sas-confirm"),
            ]
        )
        outputs = [side.communicate(timeout=60) for side in (side_a, side_b)]
        processes.cleanup()
    for side, (_, err) in zip((side_a, side_b), outputs, strict=True):
        assert side.returncode == 0, err
        assert "connected to 172.30." in err and "encrypted" in err
    # each side heard the other, through both NATs (b's speech reached a, a's reached b)
    assert_speech_carried(read_48k(speech_b), read_48k(got_a))
    assert_speech_carried(speech, read_48k(got_b))


@needs_lab
def test_hole_punching_through_a_symmetric_nat_fails_with_one_clear_line(processes: Processes):
    with NetLab() as lab:
        homes = TwoHomes(lab, symmetric_b=True)
        sides = [
            processes.start(
                [
                    *NetLab.run_in(lan),
                    *voip_command("call", f"{public}:5004", "--punch", "--port", "5004", "--timeout", "4"),
                    *("--in", "silence", "--out", "null"),
                ]
            )
            for lan, public in ((homes.lan_a, ROUTER_B_OUT), (homes.lan_b, ROUTER_OUT))
        ]
        outputs = [side.communicate(timeout=30) for side in sides]
        processes.cleanup()
    for side, (_, err) in zip(sides, outputs, strict=True):
        assert side.returncode == 1
        last = err.strip().splitlines()[-1]
        assert last.startswith("voip: no answer from 172.30.") and "symmetric NAT" in last


# ---- a TURN relay, for the NAT nothing else gets through ------------------------------------

RELAY = f"turn:alice:secret@{WAN}"


@needs_lab
@pytest.mark.parametrize("network", [True], ids=["symmetric NAT"], indirect=True)
def test_a_listener_behind_a_symmetric_nat_is_reached_through_the_relay(
    network: Network, processes: Processes, tmp_path, speech, speech_b
):
    got_listener, got_caller = tmp_path / "listener.wav", tmp_path / "caller.wav"
    listener = processes.start(
        [
            *NetLab.run_in(network.lan),
            *voip_command("listen", "--once", "--auto-answer", "--relay", RELAY, "--in", SPEECH_A),
            *("--out", str(got_listener)),
        ]
    )
    line = _wait_for_line(listener, "relayed address", stream="stdout")
    relayed = line.split()[2].rstrip(":")
    assert relayed.startswith(f"{WAN}:")
    caller = subprocess.run(
        [
            *NetLab.run_in(network.wan),
            *voip_command("call", relayed, "--relay", RELAY, "--in", str(speech_b), "--out", str(got_caller)),
            *("--duration", "8", "--sas-confirm"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert caller.returncode == 0, caller.stderr
    assert "through the relay" in caller.stderr and "connected to" in caller.stderr
    listener.communicate(timeout=30)
    assert listener.returncode == 0
    assert_speech_carried(speech, read_48k(got_caller))
    assert_speech_carried(read_48k(speech_b), read_48k(got_listener))


@needs_lab
@pytest.mark.parametrize("network", [False], ids=["endpoint-independent NAT"], indirect=True)
def test_a_wrong_relay_password_is_one_clear_line(network: Network):
    result = subprocess.run(
        [
            *NetLab.run_in(network.lan),
            *voip_command("call", f"{WAN}:5004", "--relay", f"turn:alice:wrong@{WAN}", "--in", "silence"),
            *("--out", "null"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"voip: TURN server {WAN}:3478 refused the user name or password"


# ---- a link that goes down mid-call (issue 12's fault catalogue) ----------------------------


@needs_lab
@pytest.mark.slow
def test_a_call_survives_its_link_going_down_for_three_seconds(processes: Processes, tmp_path):
    """Two hosts on one link; 2 s into the call the caller's interface goes down for 3 s
    (its sends fail: no route), then comes back. The call goes on to its duration, and the
    caller's tone is heard again after the outage."""
    recording, stats = tmp_path / "heard.wav", tmp_path / "caller.json"
    with NetLab() as lab:
        a, b = lab.host("a"), lab.host("b")
        end_a, _ = lab.link(a, "10.203.0.1", b, "10.203.0.2")
        listener = processes.start(
            [
                *NetLab.run_in(b),
                *voip_command("listen", "--once", "--auto-answer", "--insecure", "--bind", "10.203.0.2"),
                *("--in", "silence", "--out", str(recording)),
            ]
        )
        _wait_for_line(listener, "listening on")
        caller = processes.start(
            [
                *NetLab.run_in(a),
                *voip_command("call", "10.203.0.2", "--insecure", "--in", "tone:440", "--out", "null"),
                *("--duration", "10", "--stats-json", str(stats)),
            ]
        )
        _wait_for_line(caller, "connected to")
        time.sleep(2.0)  # the fault's own timing: 2 s of call, then 3 s without a link
        subprocess.run(["ip", "-n", a, "link", "set", end_a, "down"], check=True, timeout=10)
        time.sleep(3.0)
        subprocess.run(["ip", "-n", a, "link", "set", end_a, "up"], check=True, timeout=10)
        assert caller.wait(timeout=60) == 0, caller.stderr.read() if caller.stderr else ""
        assert listener.wait(timeout=30) == 0
        processes.cleanup()
    heard = read_48k(str(recording))
    after = heard[-3 * 48000 :]  # the last 3 s, well after the link came back
    level = 10 * np.log10(float(np.mean(after.astype(np.float64) ** 2)) + 1e-15)
    assert level > -30, f"the tone did not come back: {level:.1f} dBFS"
    values = json.loads(stats.read_text())
    assert values["packets_sent"] > 300  # it kept sending through the outage and after
    assert values["send_errors"] >= 100, values  # 3 s of 20 ms frames refused ("network unreachable"), counted
