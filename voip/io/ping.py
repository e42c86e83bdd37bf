"""Asking whether a voip answers at an address: PING, and the PONG that any voip sends back."""

from __future__ import annotations

import random
import select
import socket
import time

from voip.control import PATH_TOKEN_BYTES, ControlMessage, MessageType, is_control
from voip.errors import ParseError
from voip.io.udp import unreachable_destinations
from voip.session import Address

PING_TRIES = 3
PING_WAIT_S = 1.0  # per try
MAX_DATAGRAM = 2048


class PortClosed(Exception):
    """The network said nothing listens there (ICMP port unreachable)."""


def ping(sock: socket.socket, peer: Address) -> float | None:
    """The round trip in seconds to a voip at `peer`, or None if nothing answered in
    PING_TRIES x PING_WAIT_S; PortClosed if the network says no one listens there."""
    token = random.getrandbits(64).to_bytes(PATH_TOKEN_BYTES, "big")
    ping_message = ControlMessage(MessageType.PING, 0, key=token).serialize()
    for _ in range(PING_TRIES):
        sent = time.monotonic()
        sock.sendto(ping_message, peer)
        deadline = sent + PING_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                break
            try:
                data, _ = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                if any(where[1] == peer[1] for where in unreachable_destinations(sock)):
                    raise PortClosed from None
                continue
            if _is_pong(data, token):
                return time.monotonic() - sent
    return None


def _is_pong(data: bytes, token: bytes) -> bool:
    if not is_control(data):
        return False
    try:
        message = ControlMessage.parse(data)
    except ParseError:
        return False
    return message.type is MessageType.PONG and message.key == token
