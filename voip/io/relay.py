"""A TURN allocation made before a call, on the call's own socket (`--relay`)."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import time

from voip.errors import VoipError
from voip.io.udp import parse_host_port, resolve, socket_address
from voip.stun import Address
from voip.turn import TurnClient, TurnState

TURN_PORT = 3478
MAX_DATAGRAM = 2048


def relay_client(uri: str) -> TurnClient:
    """`turn:USER:PASSWORD@HOST[:PORT]` (the password may hold ':'; the host follows the last '@')."""
    rest = uri.removeprefix("turn:")
    credentials, at, where = rest.rpartition("@")
    username, colon, password = credentials.partition(":")
    if not (at and colon and username and where):
        raise VoipError(f"bad relay {uri!r}: expected turn:USER:PASSWORD@HOST[:PORT]")
    host, port = parse_host_port(where, TURN_PORT)
    _, server = resolve(host, port)
    return TurnClient((server[0], server[1]), username, password, random.Random())


def allocate(sock: socket.socket, client: TurnClient) -> Address:
    """Run the allocation to its end (a few seconds at most); the relayed address, or VoipError."""
    while client.state is TurnState.ALLOCATING:
        for request in client.datagrams(time.monotonic()):
            with contextlib.suppress(OSError):  # unanswered, it times out in the client
                sock.sendto(request, socket_address(sock, client.server))
        if client.state is not TurnState.ALLOCATING:
            break
        readable, _, _ = select.select([sock], [], [], 0.05)
        if not readable:
            continue
        try:
            data, source = sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, ConnectionRefusedError):
            continue
        if (str(source[0]).removeprefix("::ffff:"), source[1]) == client.server:
            client.receive(data, time.monotonic())
    if client.error is not None or client.relayed is None:
        raise VoipError(str(client.error or "the TURN allocation failed"))
    return client.relayed


def release(sock: socket.socket, client: TurnClient) -> None:
    """Give the allocation back (best effort: the server frees it anyway when it lapses)."""
    request = client.close()
    if request is not None:
        with contextlib.suppress(OSError):
            sock.sendto(request, socket_address(sock, client.server))
