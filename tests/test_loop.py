"""The real-time loop's edge: when a datagram read from a real socket arrived."""

from __future__ import annotations

import math
import random
import socket
import time

from voip.io.loop import Endpoint, MediaLoop
from voip.io.udp import open_socket, receive
from voip.session import Session, SessionConfig

STOP_S = 0.3  # a process stop (SIGSTOP, a starved machine), long against a loop's wake-up


def _wait_until_arrivals_are_stamped(receiver: socket.socket, sender: socket.socket) -> None:
    """Linux turns arrival stamps on for the whole stack when the first socket asks, by a
    deferred work item; until it runs, a datagram is stamped when it is read, not when it
    came. A socket opened while no other asks (as in a test run) must wait for it: a
    datagram that waits 20 ms in the socket then shows it waited (bounded: 2 s)."""
    for _ in range(100):
        sender.sendto(b"warm-up", receiver.getsockname())
        time.sleep(0.02)
        _, _, arrival = receive(receiver, 64, time.monotonic, -math.inf)
        if time.monotonic() - arrival >= 0.01:
            return
    raise AssertionError("the kernel did not stamp arrivals within 2 s")


def test_a_stop_after_the_socket_was_found_empty_does_not_make_what_came_meanwhile_late():
    """The process stands still right after finding its socket empty, and a datagram arrives
    meanwhile. Its arrival time must be the kernel's stamp, not when the process ran again:
    a time after the stop would make every packet that came during it late (CI once saw a
    recording lose 2.5 s to a SIGSTOP that fell there)."""
    receiver = open_socket("127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    calls = 0
    sent_at = resumed_at = 0.0

    def clock() -> float:
        nonlocal calls, sent_at, resumed_at
        calls += 1
        if calls == 2:  # the first reading after the socket was found empty: the stop falls here
            sender.sendto(b"during the stop", receiver.getsockname())
            sent_at = time.monotonic()
            time.sleep(STOP_S)
            resumed_at = time.monotonic()
        return time.monotonic()

    try:
        _wait_until_arrivals_are_stamped(receiver, sender)
        session = Session(SessionConfig(remote=("127.0.0.1", 9)), random.Random(1), 0.0)
        endpoint = Endpoint(session=session, sock=receiver)
        loop = MediaLoop([endpoint], 960, clock=clock)  # reads the clock once (calls == 1)
        calls = 0
        assert list(loop._read(endpoint, 8)) == []  # found empty
        ((arrival, data, _),) = list(loop._read(endpoint, 8))
        assert data == b"during the stop"
        assert resumed_at - sent_at >= STOP_S
        assert arrival < sent_at + STOP_S / 2, (arrival - sent_at, resumed_at - sent_at)
    finally:
        receiver.close()
        sender.close()
