"""An on-path attacker between two real processes on 127.0.0.1: it sees every packet, can send
from the relay's address (which is the peer's, as each side sees it), replays, forges and
flips bits. An encrypted call goes on to its end regardless, and counts what it refused."""

from __future__ import annotations

import json
import math
import random
import select
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import Processes, assert_speech_carried, free_udp_port, voip_command
from tests.test_call import SPEECH_A, _listener, _wait_for_line
from voip.control import ControlMessage, MessageType
from voip.crypto import CONFIRM_BYTES, SPAKE_MESSAGE_BYTES, CodeAgreement, KeyPair, call_context
from voip.io.files import read_48k
from voip.quality import utterance_pesq, utterances
from voip.rtcp import Bye, serialize_compound
from voip.rtp import is_rtcp, is_rtp_or_rtcp

MAX_DATAGRAMS = 20_000  # every loop that sends is bounded: about 25 s of a call both ways, with the attacks


class Attacker(threading.Thread):
    """Relays caller <-> listener and attacks what it relays:
    * replays: every 10th datagram, an older one it saw going the same way;
    * forgeries: HANGUP (plain and with a made-up tag) with the call id it saw in INVITE, and
      RTCP BYE for every SSRC it saw, to both sides, once a second from the moment the keys are
      agreed (the caller's REVEAL has passed). Before that, set-up messages cannot be
      authenticated: an attacker on the path can stop a call from starting (as by dropping its
      packets), which docs/security.md states; what must hold is that no forgery ends a call;
    * bit flips: one random bit in every `flip_every`-th datagram it relays each way (0: none).
      Evenly spaced, so each flip costs one isolated packet, as the same share of random loss
      would on average but without its luck: the test judges what a flip does, not the draw."""

    def __init__(
        self,
        listener: tuple[str, int],
        flip_every: int,
        seconds: float,
        attack: bool = True,
        move_after_s: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the caller calls this
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # to the listener, as "the caller"
        self.back.bind(("127.0.0.1", 0))
        self.listener = listener
        self.caller: tuple[str, int] | None = None
        self.flip_every = flip_every
        self.deadline = time.monotonic() + seconds
        self.rng = random.Random(11)
        self.seen: dict[str, list[bytes]] = {"to listener": [], "to caller": []}
        self.call_id: bytes | None = None
        self.keyed = False  # the caller's REVEAL went by: both sides have keys
        self.ssrcs: set[bytes] = set()
        self.forged = self.replayed = self.flipped = 0
        self.attack = attack
        self.move_at = time.monotonic() + move_after_s if move_after_s else math.inf
        self.old_backs: list[socket.socket] = []  # after a move, replies to the old port still come in
        self.moved_to: int | None = None
        self.rewrite: Callable[[bytes], bytes] | None = None  # a man in the middle's hand on the handshake
        self._halt = threading.Event()

    @property
    def port(self) -> int:
        return int(self.front.getsockname()[1])

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        for sock in (self.front, self.back, *self.old_backs):
            sock.close()

    def run(self) -> None:
        sent = 0
        next_forgery = time.monotonic() + 1.0
        while not self._halt.is_set() and time.monotonic() < self.deadline and sent < MAX_DATAGRAMS:
            if time.monotonic() >= self.move_at:  # as a NAT that rebinds: the caller now comes from a new port
                self.move_at = math.inf
                self.old_backs.append(self.back)
                self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.back.bind(("127.0.0.1", 0))
                self.moved_to = int(self.back.getsockname()[1])
            ready, _, _ = select.select([self.front, self.back, *self.old_backs], [], [], 0.05)
            for sock in ready:
                data, addr = sock.recvfrom(65536)
                if sock is self.front:
                    self.caller = addr
                    sent += self._relay(data, self.back, self.listener, "to listener")
                elif self.caller is not None:
                    sent += self._relay(data, self.front, self.caller, "to caller")
            if not self.attack:
                continue
            if time.monotonic() >= next_forgery and self.keyed and self.call_id is not None and self.caller is not None:
                next_forgery += 1.0
                sent += self._forge()

    def _relay(self, data: bytes, sock: socket.socket, to: tuple[str, int], way: str) -> int:
        self._learn(data)
        if self.rewrite is not None:
            data = self.rewrite(data)
        seen = self.seen[way]
        seen.append(data)
        out = bytearray(data)
        if not self.attack:
            sock.sendto(data, to)
            return 1
        if self.flip_every and len(seen) % self.flip_every == 0:
            bit = self.rng.randrange(8 * len(out))
            out[bit // 8] ^= 1 << (bit % 8)
            self.flipped += 1
        sock.sendto(bytes(out), to)
        if len(seen) % 10 == 0 and len(seen) > 20:
            sock.sendto(seen[self.rng.randrange(len(seen) - 10)], to)
            self.replayed += 1
            return 2
        return 1

    def _learn(self, data: bytes) -> None:
        kind = data[3] & 0x7F if data[:2] == b"vC" and len(data) >= 12 else None
        if kind == MessageType.INVITE:
            self.call_id = data[4:12]
        elif kind == MessageType.REVEAL:
            self.keyed = True
        elif is_rtp_or_rtcp(data) and not is_rtcp(data) and len(data) >= 12:
            self.ssrcs.add(data[8:12])

    def _forge(self) -> int:
        assert self.call_id is not None and self.caller is not None
        call_id = int.from_bytes(self.call_id, "big")
        forgeries = [
            ControlMessage(MessageType.HANGUP, call_id, reason="forged").serialize(),
            ControlMessage(MessageType.HANGUP, call_id).serialize(bytes(32), 1 << 40),
            ControlMessage(MessageType.HANGUP_ACK, call_id).serialize(bytes(32), 1 << 40),
        ]
        forgeries += [serialize_compound([Bye((int.from_bytes(ssrc, "big"),), b"forged")]) for ssrc in self.ssrcs]
        for data in forgeries:
            self.back.sendto(data, self.listener)
            self.front.sendto(data, self.caller)
        self.forged += 2 * len(forgeries)
        return 2 * len(forgeries)


@pytest.mark.slow
@pytest.mark.parametrize("flip_every", [0, 20])
def test_an_encrypted_call_survives_replays_forgeries_and_bit_flips(tmp_path, speech, processes: Processes, flip_every):
    port = free_udp_port()
    got_caller, got_listener = tmp_path / "caller.wav", tmp_path / "listener.wav"
    stats_caller, stats_listener = tmp_path / "caller.json", tmp_path / "listener.json"
    listener = _listener(
        processes, "127.0.0.1", port, "--in", SPEECH_A, "--out", str(got_listener), "--stats-json", str(stats_listener)
    )
    attacker = Attacker(("127.0.0.1", port), flip_every, seconds=30.0)
    attacker.start()
    try:
        caller = processes.start(
            voip_command(
                "call",
                f"127.0.0.1:{attacker.port}",
                "--in",
                SPEECH_A,
                "--out",
                str(got_caller),
                "--duration",
                "8",
                "--stats-json",
                str(stats_caller),
            )
        )
        _wait_for_line(caller, "connected to")
        _, caller_err = caller.communicate(timeout=40)
        listener_out, listener_err = listener.communicate(timeout=40)
    finally:
        attacker.stop()
    assert caller.returncode == 0 and listener.returncode == 0, caller_err + listener_err
    stats = [json.loads(path.read_text()) for path in (stats_caller, stats_listener)]
    # the call ran its course (the listener's 7.9 s file, the caller's 8 s), not cut short by a forgery
    assert all(values["packets_received"] >= 350 for values in stats), listener_out
    assert attacker.forged >= 20 and attacker.replayed >= 50
    refused = sum(values["packets_unauthenticated"] for values in stats)
    assert refused >= attacker.replayed // 2  # replays of media and forged HANGUPs under keys
    print(f"flips every {flip_every}: refused {refused}, forged {attacker.forged}, replayed {attacker.replayed}")
    for got in (got_caller, got_listener):
        if flip_every == 0:
            assert_speech_carried(speech, read_48k(got))
        else:  # a flipped packet fails authentication and is lost, as a packet lost on the path:
            # each packet carries a copy of the one before (RFC 2198) until the first report,
            # and again from the report of the first loss on (the packet after it sends that),
            # with in-band FEC: nearly every loss comes back (means of 3.51-3.86 per sentence
            # in eight recordings, 3.68-3.86 beside a benchmark on both cores; 3.62 with no flips,
            # where nothing is protected; 2.83-3.17 before stop 28). A lost or dead stream
            # scores about 1. Issue 11 asks 3.3: the margin is for a slow CI machine.
            scores = utterance_pesq(speech, read_48k(got), utterances(speech))
            assert np.mean(scores) >= 3.2, scores
    for values in stats:
        assert values["fec_recovered"] >= values["packets_lost"] // 2, values


@pytest.mark.slow
def test_a_call_follows_a_caller_whose_port_changes(tmp_path, speech, processes: Processes):
    """Two seconds in, the relay (the caller's NAT) sends from a new port: the listener checks
    the new path, moves the call there, and the call goes on to its end."""
    port = free_udp_port()
    got_caller, got_listener = tmp_path / "caller.wav", tmp_path / "listener.wav"
    listener = _listener(processes, "127.0.0.1", port, "--in", SPEECH_A, "--out", str(got_listener))
    relay = Attacker(("127.0.0.1", port), 0, seconds=30.0, attack=False, move_after_s=3.0)
    relay.start()
    try:
        caller = processes.start(
            voip_command(
                "call", f"127.0.0.1:{relay.port}", "--in", SPEECH_A, "--out", str(got_caller), "--duration", "8"
            )
        )
        _, caller_err = caller.communicate(timeout=40)
        _, listener_err = listener.communicate(timeout=40)
    finally:
        relay.stop()
    assert caller.returncode == 0 and listener.returncode == 0, caller_err + listener_err
    assert relay.moved_to is not None and f"peer moved to 127.0.0.1:{relay.moved_to}" in listener_err
    for got in (got_caller, got_listener):
        assert_speech_carried(speech, read_48k(got))


class KeySwap:
    """A man in the middle on the handshake. By words: its own commitment and key to the
    listener, its own key to the caller, so each side agrees keys with it and not with the
    other. By code: SPAKE2 messages of its own, made with a guess of the code."""

    OFFER_END = 12 + 11  # header, then the offer; the key field follows
    KEY = 32
    SPAKE = SPAKE_MESSAGE_BYTES + CONFIRM_BYTES

    def __init__(self, guess: str) -> None:
        self.to_listener, self.to_caller = KeyPair(), KeyPair()
        self.guess = guess
        self.caller_message = self.caller_offer = b""

    def __call__(self, data: bytes) -> bytes:
        if data[:2] != b"vC" or len(data) < 12:
            return data
        kind, head = data[3] & 0x7F, data[: self.OFFER_END]
        if kind == MessageType.INVITE and len(data) == self.OFFER_END + self.KEY:
            return head + self.to_listener.commitment
        if kind == MessageType.ACCEPT and len(data) == self.OFFER_END + self.KEY:
            return head + self.to_caller.public
        if kind == MessageType.REVEAL and len(data) == 12 + self.KEY:
            return data[:12] + self.to_listener.public
        if kind == MessageType.INVITE and len(data) == self.OFFER_END + self.SPAKE:
            self.caller_message = data[self.OFFER_END : self.OFFER_END + SPAKE_MESSAGE_BYTES]
            self.caller_offer = data[12 : self.OFFER_END]
            return head + CodeAgreement(self.guess, caller=True).message + bytes(CONFIRM_BYTES)
        if kind == MessageType.ACCEPT and len(data) == self.OFFER_END + self.SPAKE and self.caller_message:
            as_listener = CodeAgreement(self.guess, caller=False)
            context = call_context(int.from_bytes(data[4:12], "big"), self.caller_offer, data[12 : self.OFFER_END])
            _, confirmation, _ = as_listener.agree(self.caller_message, context)
            return head + as_listener.message + confirmation
        return data


@pytest.mark.parametrize("code", [None, "4-pilot-zebra"])
def test_a_man_in_the_middle_shows_different_words_or_fails_the_code(processes: Processes, code):
    port = free_udp_port()
    with_code = ("--code", code) if code else ()
    listener = _listener(processes, "127.0.0.1", port, "--in", "silence", "--out", "null", *with_code)
    relay = Attacker(("127.0.0.1", port), 0, seconds=30.0, attack=False)
    relay.rewrite = KeySwap(guess="5-pilot-zebra")
    relay.start()
    try:
        caller = processes.start(
            voip_command(
                "call", f"127.0.0.1:{relay.port}", "--in", "silence", "--out", "null", "--duration", "2", *with_code
            )
        )
        _, caller_err = caller.communicate(timeout=40)
        if code is None:
            listener_line = _wait_for_line(listener, "connected to")
    finally:
        relay.stop()
    if code is not None:
        assert caller.returncode == 1
        assert (
            caller_err.strip().splitlines()[-1] == "voip: call ended: wrong code: the listener's code is not this one"
        )
        return
    caller_line = next(line for line in caller_err.splitlines() if "connected to" in line)
    words = [line.split("unverified: ")[1].strip() for line in (caller_line, listener_line)]
    assert words[0] != words[1]  # read aloud, they give the man in the middle away (1 in 65,536 match)
