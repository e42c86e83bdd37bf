"""Call setup and teardown: the messages, and one endpoint's state machine, free of I/O.

Control messages share the media port. RFC 7983 demultiplexes by the first byte:
RTP/RTCP use 128..191, STUN 0..3, ZRTP 16..19, DTLS 20..63, TURN 64..79; ours start
with 'v' (118), then 'C', a version and a type:

    0        1        2        3
    'v'      'C'      version  type (high bit: authenticated)
    call id (64 bits)
    INVITE, ACCEPT: SSRC (32), payload type (8), frame ms (8), bitrate (32),
                    flags (8: FEC 1, DTX 2, ENCRYPTED 4, GCM 8, CODE 16, RED 32),
                    and when ENCRYPTED: INVITE the caller's key commitment (256 bits),
                    ACCEPT the listener's X25519 public key (256 bits)
    REVEAL:         the caller's X25519 public key (256 bits)
    REFUSED:        why (8: 1 the listener encrypts and the caller does not, 2 the reverse)
    PATH_CHALLENGE, PATH_RESPONSE: a token (64 bits); always authenticated
    PING, PONG:     a token (64 bits); never authenticated, answered in any state,
                    from anyone, by a PONG of the same size
    HANGUP:         reason length (8), reason (UTF-8)
    RINGING, BUSY, HANGUP_ACK: nothing more
    authenticated:  then a sequence number (64) and an HMAC-SHA256 tag (128) under the
                    sender's control key (voip.crypto)

The caller repeats INVITE on a timer (250 ms, doubling, at most 2 s apart) until the
callee answers ACCEPT or BUSY; RINGING says a person is being asked and keeps the
caller waiting longer. Two sides that call each other at once (hole punching: each
side's INVITEs open its own NAT for the other's) settle it by call id: the larger one's
caller stays the caller, the other side answers it as a listener. The callee repeats
nothing before it answers: a lost RINGING is answered again when the next INVITE arrives.
Hang-up is HANGUP, repeated until HANGUP_ACK (or for 2 s); the media session adds an RTCP BYE.

Encrypted calls (the default in the CLI) agree keys inside this exchange, as ZRTP does
(voip.crypto): INVITE commits to the caller's key, ACCEPT carries the listener's, and the
caller reveals its own only then (REVEAL). The caller is connected once it has ACCEPT; the
listener repeats ACCEPT until REVEAL comes, and is connected then. From then on, media
is SRTP, and HANGUP and HANGUP_ACK are accepted only with a valid tag and a sequence
number above the last: a forged or replayed one is counted (`messages_unauthenticated`)
and changes nothing. No reply is larger than the message that caused it.

Roaming (encrypted calls only): when authenticated media comes from a new address (NAT
rebinding, a laptop changing networks), the session asks the control to check the path
(`check_path`): an authenticated PATH_CHALLENGE goes to the new address, and only the
peer's authenticated PATH_RESPONSE from that address moves the call there (`PeerMoved`),
as QUIC does. Nothing unauthenticated ever moves a call.

Liveness: every packet from the peer (media, RTCP, control) counts. After
SILENT_AFTER_S without one, `PeerSilent`; after the timeout, the call ends, or
sooner when the network reports the peer's port closed and the peer is quiet too.
Messages from anyone but the peer never change the call: they are counted, and a
stranger's INVITE is answered BUSY.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum, IntEnum

from voip.crypto import (
    COMMITMENT_BYTES,
    CONFIRM_BYTES,
    PUBLIC_KEY_BYTES,
    SPAKE_MESSAGE_BYTES,
    TAG_BYTES,
    CallKeys,
    KeyAgreementError,
    KeyPair,
    call_context,
    control_tag,
    tag_matches,
)
from voip.errors import ParseError
from voip.handshake import CodeHandshake, Handshake, WordsHandshake, WrongCode

Address = tuple[str, int] | tuple[str, int, int, int]
MAGIC = b"vC"
VERSION = 2
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 2.0
NO_RESPONSE_S = 10.0  # nothing at all from the callee: "no answer"
RING_TIMEOUT_S = 60.0  # a person was asked and did not pick up
HANGUP_TIMEOUT_S = 2.0
SILENT_AFTER_S = 5.0
UNREACHABLE_COUNT = 10  # ICMP port unreachable for the peer, with UNREACHABLE_QUIET_S of quiet: it is gone
UNREACHABLE_QUIET_S = 0.5
_HEADER = struct.Struct("!2sBBQ")
_OFFER = struct.Struct("!IBBIB")
_SEQUENCE = struct.Struct("!Q")
AUTHENTICATED = 0x80  # in the type byte: a sequence number and a tag follow
TRAILER_BYTES = _SEQUENCE.size + TAG_BYTES
FEC, DTX, ENCRYPTED, GCM, CODE, RED = 1, 2, 4, 8, 16, 32
PATH_TOKEN_BYTES = 8
PATH_CHECK_S = 1.0  # at most one path check a second (each is one datagram, as small as what caused it)


class MessageType(IntEnum):
    INVITE = 1
    RINGING = 2
    ACCEPT = 3
    BUSY = 4
    HANGUP = 5
    HANGUP_ACK = 6
    REVEAL = 7
    REFUSED = 8
    PATH_CHALLENGE = 9  # is the peer at this new address? (always authenticated)
    PATH_RESPONSE = 10
    PING = 11  # does a voip answer here? (needs no call; `voip doctor HOST`)
    PONG = 12


AUTHENTICATED_TYPES = (
    MessageType.HANGUP,
    MessageType.HANGUP_ACK,
    MessageType.PATH_CHALLENGE,
    MessageType.PATH_RESPONSE,
)


class Refusal(IntEnum):
    ENCRYPTION_REQUIRED = 1  # the listener encrypts, the caller runs --insecure
    ENCRYPTION_UNSUPPORTED = 2  # the caller encrypts, the listener runs --insecure
    CODE_REQUIRED = 3  # the listener takes calls with its code only
    CODE_UNEXPECTED = 4  # the caller has a code, the listener none
    WRONG_CODE = 5  # sent by a caller whose code proved different from the listener's


@dataclass(frozen=True)
class Offer:
    """What a side will send: the other side decodes by it (and locks onto the SSRC)."""

    ssrc: int
    payload_type: int
    frame_ms: int
    bitrate: int
    fec: bool = True
    dtx: bool = False
    encrypted: bool = False  # keys are agreed in the call set-up, and media is SRTP
    gcm: bool = False  # our libsrtp has AES-GCM: used when both sides have it
    code: bool = False  # keys come from a shared code (SPAKE2), not X25519 and words
    red: bool = False  # takes redundant audio (RFC 2198, voip.red), and sends it to a peer that does

    def to_bytes(self) -> bytes:
        return _OFFER.pack(self.ssrc, self.payload_type, self.frame_ms, self.bitrate, self.flags)

    @property
    def flags(self) -> int:
        return (
            FEC * self.fec
            | DTX * self.dtx
            | ENCRYPTED * self.encrypted
            | GCM * self.gcm
            | CODE * self.code
            | RED * self.red
        )


@dataclass(frozen=True)
class CallSettings:
    """What makes a media session a call (`Session(..., call=CallSettings())`): the session
    offers what its own settings say it sends, under these terms."""

    encrypted: bool = True  # keys agreed in the set-up, SRTP (False: --insecure)
    code: str | None = None  # authenticate by a shared code (SPAKE2) instead of words
    timeout_s: float = 30.0  # nothing from the peer this long: the call ends
    no_answer_s: float = NO_RESPONSE_S  # a caller hears nothing from the callee this long: "no answer"
    # A receiver (`voip receive`): until a call arrives, a plain RTP stream from whoever sends
    # first is taken instead, in the clear (ffmpeg, GStreamer, `voip send --insecure`).
    takes_plain_stream: bool = False


@dataclass(frozen=True)
class ControlMessage:
    type: MessageType
    call_id: int
    offer: Offer | None = None  # INVITE and ACCEPT
    reason: str = ""  # HANGUP
    key: bytes = b""  # INVITE: the caller's commitment; ACCEPT, REVEAL: a public key
    refusal: Refusal | None = None  # REFUSED
    sequence: int | None = None  # authenticated messages: their number and tag
    tag: bytes = b""

    def serialize(self, control_key: bytes | None = None, sequence: int = 0) -> bytes:
        """The message; with `control_key`, authenticated under it as number `sequence`."""
        kind = self.type | (AUTHENTICATED if control_key is not None else 0)
        out = _HEADER.pack(MAGIC, VERSION, kind, self.call_id)
        if self.type in (MessageType.INVITE, MessageType.ACCEPT):
            o = self.offer
            assert o is not None, "INVITE and ACCEPT carry an offer"
            out += o.to_bytes() + self.key
        elif self.type is MessageType.REVEAL or kind_has_token(self.type):
            out += self.key
        elif self.type is MessageType.REFUSED:
            assert self.refusal is not None
            out += bytes((self.refusal,))
        elif self.type is MessageType.HANGUP:
            reason = self.reason.encode()[:255].decode("utf-8", "ignore").encode()  # whole characters
            out += bytes((len(reason),)) + reason
        if control_key is not None:
            out += _SEQUENCE.pack(sequence)
            out += control_tag(control_key, out)
        return out

    @classmethod
    def parse(cls, data: bytes) -> ControlMessage:
        if len(data) < _HEADER.size:
            raise ParseError(f"control message of {len(data)} bytes is too short")
        magic, version, type_code, call_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ParseError("not a control message")
        if version != VERSION:
            raise ParseError(f"control version {version} (we speak {VERSION})")
        try:
            kind = MessageType(type_code & ~AUTHENTICATED)
        except ValueError:
            raise ParseError(f"unknown control message type {type_code}") from None
        body = data[_HEADER.size :]
        sequence, tag = None, b""
        if type_code & AUTHENTICATED:
            if len(body) < TRAILER_BYTES:
                raise ParseError("authenticated control message without its tag")
            (sequence,) = _SEQUENCE.unpack_from(body, len(body) - TRAILER_BYTES)
            body, tag = body[:-TRAILER_BYTES], body[-TAG_BYTES:]
        if kind in (MessageType.INVITE, MessageType.ACCEPT):
            if len(body) < _OFFER.size:
                raise ParseError(f"{kind.name} body of {len(body)} bytes, expected {_OFFER.size} or more")
            ssrc, payload_type, frame_ms, bitrate, flags = _OFFER.unpack_from(body)
            if payload_type > 127 or frame_ms not in (10, 20, 40, 60) or flags > 63:
                raise ParseError(f"bad {kind.name} offer")
            bits = (FEC, DTX, ENCRYPTED, GCM, CODE, RED)
            offer = Offer(ssrc, payload_type, frame_ms, bitrate, *(bool(flags & bit) for bit in bits))
            key = body[_OFFER.size :]
            size = _key_field_bytes(kind, offer)
            if len(key) != size:
                raise ParseError(f"{kind.name} key of {len(key)} bytes, expected {size}")
            return cls(kind, call_id, offer, key=key, sequence=sequence, tag=tag)
        if kind is MessageType.REVEAL:
            if len(body) not in (PUBLIC_KEY_BYTES, CONFIRM_BYTES):
                raise ParseError(f"REVEAL of {len(body)} bytes, expected {PUBLIC_KEY_BYTES} or {CONFIRM_BYTES}")
            return cls(kind, call_id, key=body, sequence=sequence, tag=tag)
        if kind_has_token(kind):
            authenticated = kind in AUTHENTICATED_TYPES
            if len(body) != PATH_TOKEN_BYTES or (sequence is None) == authenticated:
                raise ParseError(
                    f"{kind.name} must carry a {PATH_TOKEN_BYTES}-byte token" + " and a tag" * authenticated
                )
            return cls(kind, call_id, key=body, sequence=sequence, tag=tag)
        if kind is MessageType.REFUSED:
            if len(body) != 1 or body[0] not in tuple(Refusal):
                raise ParseError("REFUSED without a known reason")
            return cls(kind, call_id, refusal=Refusal(body[0]), sequence=sequence, tag=tag)
        if kind is MessageType.HANGUP:
            if not body or len(body) != 1 + body[0]:
                raise ParseError("HANGUP reason length does not match")
            return cls(kind, call_id, reason=body[1:].decode("utf-8", "replace"), sequence=sequence, tag=tag)
        if body:
            raise ParseError(f"{kind.name} carries {len(body)} unexpected bytes")
        return cls(kind, call_id, sequence=sequence, tag=tag)


def _key_field_bytes(kind: MessageType, offer: Offer) -> int:
    """What INVITE and ACCEPT carry after the offer. Encrypted by words: INVITE the caller's
    commitment, ACCEPT the listener's public key. By code: the SPAKE2 message and, in ACCEPT,
    the listener's confirmation; INVITE is padded to the same length, so no answer is larger."""
    if not offer.encrypted:
        return 0
    if offer.code:
        return SPAKE_MESSAGE_BYTES + CONFIRM_BYTES
    return COMMITMENT_BYTES if kind is MessageType.INVITE else PUBLIC_KEY_BYTES


def _refusal(ours: Offer, theirs: Offer) -> Refusal | None:
    """Why a listener with offer `ours` cannot take a call offered as `theirs`, if it cannot."""
    if theirs.encrypted != ours.encrypted:
        return Refusal.ENCRYPTION_REQUIRED if ours.encrypted else Refusal.ENCRYPTION_UNSUPPORTED
    if theirs.code != ours.code:
        return Refusal.CODE_REQUIRED if ours.code else Refusal.CODE_UNEXPECTED
    return None


def kind_has_token(kind: MessageType) -> bool:
    return kind in (MessageType.PATH_CHALLENGE, MessageType.PATH_RESPONSE, MessageType.PING, MessageType.PONG)


def is_control(data: bytes) -> bool:
    return len(data) >= 2 and data[:2] == MAGIC


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingCall:
    """A call arrived at a listener: answer with `accept` or `decline`."""

    peer: Address
    offer: Offer


@dataclass(frozen=True)
class Ringing:
    """The callee is asking its user."""


@dataclass(frozen=True)
class Connected:
    peer: Address
    remote_offer: Offer


@dataclass(frozen=True)
class PeerMoved:
    """The peer proved it is at a new address: media and control go there from now on."""

    peer: Address


@dataclass(frozen=True)
class PeerSilent:
    seconds: float


@dataclass(frozen=True)
class PeerBack:
    pass


@dataclass(frozen=True)
class CallEnded:
    reason: str
    normal: bool  # hung up by either side: exit 0; no answer, busy, declined, timeout: not


REFUSALS = {
    Refusal.ENCRYPTION_REQUIRED: "refused: the listener takes encrypted calls only (call without --insecure)",
    Refusal.ENCRYPTION_UNSUPPORTED: "refused: the listener runs --insecure (add --insecure to talk in the clear)",
    Refusal.CODE_REQUIRED: "refused: the listener takes calls with its code only (voip call HOST --code CODE)",
    Refusal.CODE_UNEXPECTED: "refused: the listener has no code (call without --code)",
    Refusal.WRONG_CODE: "wrong code: the caller's code is not this one",
}

ControlEvent = IncomingCall | Ringing | Connected | PeerMoved | PeerSilent | PeerBack | CallEnded


class State(Enum):
    IDLE = "idle"  # a listener waiting for a call
    CALLING = "calling"
    RINGING = "ringing"  # caller: the callee asks its user; callee: asking ours
    KEYING = "agreeing keys"  # listener: answered, waiting for the caller's key (REVEAL)
    CONNECTED = "connected"
    HANGING_UP = "hanging up"
    ENDED = "ended"


class CallControl:
    """One endpoint's side of one call, as caller (`call`) or as listener (start IDLE)."""

    def __init__(
        self,
        offer: Offer,
        rng: random.Random,
        timeout_s: float = 30.0,
        key_pair: KeyPair | None = None,
        code: str | None = None,
        no_answer_s: float = NO_RESPONSE_S,
    ) -> None:
        """An encrypted offer agrees keys by `code` (SPAKE2) when given, else by X25519 with
        `key_pair` (a fresh one if not given) and words to compare. A caller gives up after
        `no_answer_s` of silence from the callee."""
        self.offer = offer
        self.timeout_s = timeout_s
        self.no_answer_s = no_answer_s
        self.state = State.IDLE
        self.peer: Address | None = None
        self.remote_offer: Offer | None = None
        self.call_id = 0
        self.messages_foreign = 0
        self.messages_invalid = 0
        self.messages_unauthenticated = 0  # from the peer's address, once keys are agreed: forged or replayed
        self.keys: CallKeys | None = None  # once agreed: SRTP and control keys, and the words to compare
        assert offer.code == (code is not None) and (offer.encrypted or code is None)
        self._handshake: Handshake | None = None
        if offer.encrypted:
            self._handshake = CodeHandshake(code) if code is not None else WordsHandshake(key_pair)
        self._hello = b""  # the key fields of INVITE, ACCEPT and REVEAL, kept for repeats
        self._answer = b""
        self._reveal = b""
        self._send_sequence = 0
        self._receive_sequence = -1  # of the last authenticated message accepted
        self._path_check: tuple[Address, bytes] | None = None  # the new address asked, and the token
        self._path_checked_at = -math.inf
        self._rng = rng
        self._caller = False
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[ControlEvent] = deque()
        self._retry_at: float | None = None
        self._retry_interval = RETRY_FIRST_S
        self._give_up_at: float | None = None
        self._last_heard = 0.0
        self._unreachable = 0  # ICMP port unreachable for the peer since we last heard from it
        self._silent = False
        self._hangup_reason = ""

    # ---- the user's actions ----------------------------------------------------------------

    def call(self, peer: Address, now: float) -> None:
        assert self.state is State.IDLE
        self._caller = True
        self.peer = peer
        self.call_id = self._rng.getrandbits(64)
        self.state = State.CALLING
        self._give_up_at = now + self.no_answer_s
        if self._handshake is not None:
            self._hello = self._handshake.hello(self.call_id)
        self._send_invite()
        self._retry(now, RETRY_FIRST_S)

    def accept(self, now: float) -> None:
        """Pick up the incoming call (an encrypted one connects when the caller's key comes)."""
        if self.state is State.RINGING and not self._caller:
            if self._handshake is None:
                self._connect(now)
            else:
                assert self.remote_offer is not None  # the INVITE's, which made the call ring
                try:
                    self._answer = self._handshake.answer(self._hello, self._context(self.remote_offer, self.offer))
                except KeyAgreementError as exc:
                    self._end(f"key agreement failed: {exc}", normal=False)
                    return
                self.state = State.KEYING
                self._give_up_at = now + NO_RESPONSE_S
                self._retry(now, RETRY_FIRST_S)
            self._send_accept()

    def decline(self, now: float) -> None:
        if self.state is State.RINGING and not self._caller:
            self._send(MessageType.BUSY)
            self._end("declined", normal=True)

    def hang_up(self, now: float, reason: str = "") -> None:
        if self.state in (State.CALLING, State.RINGING, State.KEYING, State.CONNECTED):
            self.state = State.HANGING_UP
            self._hangup_reason = reason
            self._give_up_at = now + HANGUP_TIMEOUT_S
            self._send(MessageType.HANGUP, reason=reason)
            self._retry(now, RETRY_FIRST_S)

    # ---- what comes in -------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A control message from anyone; never raises on remote bytes."""
        try:
            msg = ControlMessage.parse(data)
        except ParseError:
            self.messages_invalid += 1
            return
        if msg.type is MessageType.PING:  # as large as what caused it, whoever asks
            self._outbox.append((ControlMessage(MessageType.PONG, msg.call_id, key=msg.key).serialize(), addr))
            return
        if msg.type is MessageType.PONG:  # we never ping from a call
            self.messages_foreign += 1
            return
        if self.state is State.IDLE and not self._caller:
            self._on_idle_message(msg, addr, now)
        elif msg.type is MessageType.PATH_RESPONSE and self._path_check is not None and msg.call_id == self.call_id:
            self._on_path_response(msg, data, addr, now)
        elif self._calls_us_too(msg, addr):
            self._settle_simultaneous_calls(msg, addr, now)
        elif self.peer is None or _host_port(addr) != _host_port(self.peer) or msg.call_id != self.call_id:
            self._on_stranger(msg, addr)
        elif self.keys is not None and not self._authentic(msg, data):
            if msg.type in AUTHENTICATED_TYPES or msg.sequence is not None:
                self.messages_unauthenticated += 1
            else:  # a set-up message repeated: answered as before keys, but it is no sign of life
                self._on_peer_message(msg, now)
        else:
            self.heard_from_peer(now)
            self._on_peer_message(msg, now)

    def check_path(self, addr: Address, now: float) -> None:
        """Authenticated media came from `addr`, not the peer's address: ask whether the peer
        is there (at most once a second); it moves there when it answers from there."""
        if self.keys is None or self.state is not State.CONNECTED or now - self._path_checked_at < PATH_CHECK_S:
            return
        self._path_checked_at = now
        token = self._rng.getrandbits(64).to_bytes(PATH_TOKEN_BYTES, "big")
        self._path_check = (addr, token)
        self._send(MessageType.PATH_CHALLENGE, key=token, to=addr)

    def _on_path_response(self, msg: ControlMessage, data: bytes, addr: Address, now: float) -> None:
        assert self._path_check is not None
        candidate, token = self._path_check
        if _host_port(addr) != _host_port(candidate) or msg.key != token or not self._authentic(msg, data):
            self.messages_unauthenticated += 1
            return
        self._path_check = None
        self.peer = addr
        self.heard_from_peer(now)
        self._events.append(PeerMoved(addr))

    def _authentic(self, msg: ControlMessage, data: bytes) -> bool:
        """Under the peer's control key, and newer than the last one (no replay)."""
        assert self.keys is not None
        if msg.sequence is None or msg.sequence <= self._receive_sequence:
            return False
        if not tag_matches(self.keys.receive.control, data[:-TAG_BYTES], msg.tag):
            return False
        self._receive_sequence = msg.sequence
        return True

    def peer_unreachable(self, addr: Address, now: float) -> None:
        """The network said nothing listens at `addr` (ICMP port unreachable for what we sent).

        A hint, not proof: ICMP is not authenticated, so it ends the call only when the peer
        has also been quiet for UNREACHABLE_QUIET_S (a live peer cannot be hung up on by a
        forged ICMP) and UNREACHABLE_COUNT have come, which takes under a second at 50
        packets a second, where silence alone waits for the timeout."""
        if self.state is not State.CONNECTED or self.peer is None or addr[:2] != self.peer[:2]:
            return  # (an IPv6 peer's address may carry flow and scope: host and port decide)
        self._unreachable += 1
        if self._unreachable >= UNREACHABLE_COUNT and now - self._last_heard >= UNREACHABLE_QUIET_S:
            self._end("peer gone: nothing listens on its port any more (ICMP port unreachable)", normal=False)

    def heard_from_peer(self, now: float) -> None:
        """Any packet from the peer, media included: the peer is alive."""
        self._last_heard = now
        self._unreachable = 0
        if self._silent and self.state is State.CONNECTED:
            self._silent = False
            self._events.append(PeerBack())

    def _on_idle_message(self, msg: ControlMessage, addr: Address, now: float) -> None:
        if msg.type is MessageType.INVITE and msg.offer is not None:
            why = _refusal(self.offer, msg.offer)
            if why is not None:
                self._outbox.append((ControlMessage(MessageType.REFUSED, msg.call_id, refusal=why).serialize(), addr))
                return
            self.peer, self.call_id, self.remote_offer = addr, msg.call_id, msg.offer
            self._hello = msg.key
            self.state = State.RINGING
            self._last_heard = now
            self._events.append(IncomingCall(addr, msg.offer))
            self._send(MessageType.RINGING)
        elif msg.type is MessageType.HANGUP:  # the end of a call we no longer know: let it finish
            self._outbox.append((ControlMessage(MessageType.HANGUP_ACK, msg.call_id).serialize(), addr))
        else:
            self.messages_foreign += 1

    def _calls_us_too(self, msg: ControlMessage, addr: Address) -> bool:
        """The one we call calls us at the same time (both ran `voip call`, as hole punching does)."""
        return (
            self._caller
            and self.state is State.CALLING
            and msg.type is MessageType.INVITE
            and self.peer is not None
            and _host_port(addr) == _host_port(self.peer)
            and msg.call_id != self.call_id
        )

    def _settle_simultaneous_calls(self, msg: ControlMessage, addr: Address, now: float) -> None:
        """The call with the larger call id goes on: its caller stays the caller, and the other
        side becomes its listener (both sides decide alike, with no message more). Our own
        INVITE, repeated, makes the peer decide the same way when ours wins."""
        if msg.call_id < self.call_id:
            return
        self._caller = False
        self.state = State.IDLE
        self._retry_at = self._give_up_at = None
        self._on_idle_message(msg, addr, now)

    def _on_stranger(self, msg: ControlMessage, addr: Address) -> None:
        self.messages_foreign += 1
        if msg.type is MessageType.INVITE:
            self._outbox.append((ControlMessage(MessageType.BUSY, msg.call_id).serialize(), addr))
        elif msg.type is MessageType.HANGUP:
            self._outbox.append((ControlMessage(MessageType.HANGUP_ACK, msg.call_id).serialize(), addr))

    def _on_peer_message(self, msg: ControlMessage, now: float) -> None:
        kind = msg.type
        if kind is MessageType.HANGUP:
            self._send(MessageType.HANGUP_ACK)
            if self.state is not State.ENDED:
                self._end("remote hung up", normal=True)
        elif kind is MessageType.HANGUP_ACK:
            if self.state is State.HANGING_UP:
                self._end("hung up", normal=True)
        elif self._caller:
            self._on_answer(msg, now)
        elif kind is MessageType.INVITE:  # our answer was lost, or the caller is still waiting
            if self.state is State.RINGING:
                self._send(MessageType.RINGING)
            elif self.state in (State.KEYING, State.CONNECTED):
                self._send_accept()
        elif kind is MessageType.REVEAL and self.state is State.KEYING:
            self._on_reveal(msg, now)
        elif kind is MessageType.REFUSED and msg.refusal is Refusal.WRONG_CODE and self.state is State.KEYING:
            self._end(REFUSALS[Refusal.WRONG_CODE], normal=False)
        if kind is MessageType.PATH_CHALLENGE and self.keys is not None:  # authenticated: _authentic passed
            self._send(MessageType.PATH_RESPONSE, key=msg.key)

    def _on_reveal(self, msg: ControlMessage, now: float) -> None:
        assert self._handshake is not None
        try:
            self.keys = self._handshake.take_reveal(msg.key)
        except KeyAgreementError:  # forged on the path, perhaps: the caller's own may still come
            self.messages_unauthenticated += 1
            return
        self._connect(now)

    def _on_answer(self, msg: ControlMessage, now: float) -> None:
        if msg.type is MessageType.ACCEPT and self.state is State.CONNECTED and self.keys is not None:
            if msg.key == self._answer:  # the listener has not had our REVEAL yet
                self._send_reveal()
            return
        if self.state not in (State.CALLING, State.RINGING):
            return
        if msg.type is MessageType.REFUSED and msg.refusal is not None:
            self._end(REFUSALS[msg.refusal], normal=False)
            return
        if msg.type is MessageType.RINGING and self.state is State.CALLING:
            self.state = State.RINGING
            self._give_up_at = now + RING_TIMEOUT_S
            self._events.append(Ringing())
        elif msg.type is MessageType.ACCEPT and msg.offer is not None:
            if self._handshake is not None and not self._agree_as_caller(msg):
                return
            self.remote_offer = msg.offer
            self._connect(now)
        elif msg.type is MessageType.BUSY:
            self._end("busy", normal=False)

    def _context(self, caller_offer: Offer, listener_offer: Offer) -> bytes:
        return call_context(self.call_id, caller_offer.to_bytes(), listener_offer.to_bytes())

    def _agree_as_caller(self, msg: ControlMessage) -> bool:
        """Keys from the listener's ACCEPT; then REVEAL. False: no call (yet)."""
        assert self._handshake is not None and msg.offer is not None
        try:
            self.keys, self._reveal = self._handshake.take_answer(msg.key, self._context(self.offer, msg.offer))
        except WrongCode as exc:
            self._send(MessageType.REFUSED, refusal=Refusal.WRONG_CODE)
            self._end(f"wrong code: {exc}", normal=False)
            return False
        except KeyAgreementError:  # not a usable key: forged, perhaps; the listener repeats ACCEPT
            self.messages_unauthenticated += 1
            return False
        self._answer = msg.key
        self._send_reveal()
        return True

    def _connect(self, now: float) -> None:
        assert self.peer is not None and self.remote_offer is not None
        self.state = State.CONNECTED
        self._retry_at = self._give_up_at = None
        self._last_heard = now
        self._events.append(Connected(self.peer, self.remote_offer))

    # ---- timers --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self._retry_at, self._give_up_at) if t is not None]
        if self.state is State.CONNECTED:
            times.append(self._last_heard + (self.timeout_s if self._silent else SILENT_AFTER_S))
        return min(times, default=None)

    def handle_deadline(self, now: float) -> None:
        if self._give_up_at is not None and now >= self._give_up_at:
            if self.state is State.HANGING_UP:
                self._end("hung up", normal=True)  # no acknowledgement: the peer may be gone
            elif self.state is State.KEYING:
                self._end("key agreement failed: the caller's key never came", normal=False)
            else:
                self._end("no answer", normal=False)
            return
        if self._retry_at is not None and now >= self._retry_at:
            if self.state in (State.CALLING, State.RINGING):
                self._send_invite()
            elif self.state is State.KEYING:
                self._send_accept()
            elif self.state is State.HANGING_UP:
                self._send(MessageType.HANGUP, reason=self._hangup_reason)
            self._retry(now, min(self._retry_interval * 2, RETRY_MAX_S))
        if self.state is State.CONNECTED:
            quiet = now - self._last_heard
            if quiet >= self.timeout_s:
                self._end(f"peer timeout: nothing heard for {quiet:.0f} s", normal=False)
            elif quiet >= SILENT_AFTER_S and not self._silent:
                self._silent = True
                self._events.append(PeerSilent(quiet))

    def _retry(self, now: float, interval: float) -> None:
        self._retry_interval = interval
        self._retry_at = now + interval

    # ---- output --------------------------------------------------------------------------

    def _send(
        self,
        kind: MessageType,
        offer: Offer | None = None,
        reason: str = "",
        key: bytes = b"",
        to: Address | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        """Once keys are agreed, every message but a set-up repeat is authenticated."""
        to = to or self.peer
        assert to is not None
        message = ControlMessage(kind, self.call_id, offer, reason, key, refusal)
        if self.keys is not None and kind in AUTHENTICATED_TYPES:
            self._send_sequence += 1
            data = message.serialize(self.keys.send.control, self._send_sequence)
        else:
            data = message.serialize()
        self._outbox.append((data, to))

    def _send_invite(self) -> None:
        self._send(MessageType.INVITE, offer=self.offer, key=self._hello)

    def _send_accept(self) -> None:
        self._send(MessageType.ACCEPT, offer=self.offer, key=self._answer)

    def _send_reveal(self) -> None:
        self._send(MessageType.REVEAL, key=self._reveal)

    def _end(self, reason: str, normal: bool) -> None:
        self.state = State.ENDED
        self._retry_at = self._give_up_at = None
        self._events.append(CallEnded(reason, normal))

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> ControlEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED


def _host_port(addr: Address) -> tuple[str, int]:
    return addr[0], addr[1]
