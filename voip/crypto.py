"""Keys for one call: ephemeral X25519 with a hash commitment and a short authentication
string, or SPAKE2 with a code both users know; HKDF for the keys.

As ZRTP does it: the caller commits to its public key (a hash of it, in INVITE) before it
sees the listener's (in ACCEPT), and reveals it only then (REVEAL). A man in the middle
must therefore pick its own keys before it can know what either side's words will be, so
it cannot search for keys that make the two sides read the same words: with two words of
256 each, it fools a careful pair once in 65,536 calls.

From the shared secret and the whole exchange (call id, commitment, both public keys),
HKDF-SHA256 derives, per direction, an SRTP master key and salt and a control key; and
the SAS. With a code (`CodeAgreement`), SPAKE2's key takes the shared secret's place and
each side proves it with a confirmation instead of words. Pure: no I/O; the only
randomness is the key pairs and SPAKE2's scalars, and a fresh code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from voip.errors import ParseError
from voip.sas_words import WORDS

PUBLIC_KEY_BYTES = 32
COMMITMENT_BYTES = 32
SRTP_KEY_BYTES = 30  # master key (16) and salt (14); AES-GCM uses the first 12 bytes of the salt
CONTROL_KEY_BYTES = 32
TAG_BYTES = 16  # HMAC-SHA256, truncated: what authenticates a control message
_KEYS_INFO = b"voip call keys v1"
_CODE_INFO = b"voip code keys v1"
CONFIRM_BYTES = 16
SPAKE_MESSAGE_BYTES = 33
_COMMIT_LABEL = b"voip commitment v1"


class KeyAgreementError(ParseError):
    """The peer's key does not fit: it is not the one committed to, or not a usable X25519 key."""


@dataclass(frozen=True)
class DirectionKeys:
    srtp: bytes  # master key and salt
    control: bytes  # HMAC key for control messages


@dataclass(frozen=True)
class CallKeys:
    """What one side sends with and receives with, and the words both sides read out."""

    send: DirectionKeys
    receive: DirectionKeys
    sas: str | None  # None when a shared code authenticated the call


class KeyPair:
    """One side's ephemeral X25519 key pair for one call."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private or X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def commitment(self) -> bytes:
        return commitment_of(self.public)

    def agree(self, peer_public: bytes, caller: bool, context: bytes, commitment: bytes) -> CallKeys:
        """The keys of this call, from the peer's public key. `commitment` is the caller's:
        the listener checks it against the caller's key before calling this. `context` is
        what else both sides must have seen alike (`call_context`): the keys and the words
        differ if anyone changed it on the way."""
        if len(peer_public) != PUBLIC_KEY_BYTES:
            raise KeyAgreementError(f"public key of {len(peer_public)} bytes, expected {PUBLIC_KEY_BYTES}")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # a low-order point: the shared secret would be all zeros
            raise KeyAgreementError(f"unusable public key ({exc})") from None
        caller_public, listener_public = (self.public, peer_public) if caller else (peer_public, self.public)
        transcript = context + commitment + listener_public + caller_public
        keys, _ = _derive(shared, transcript, caller, _KEYS_INFO)
        return keys


class CodeAgreement:
    """SPAKE2 (the `spake2` package) with a short code both users know, roles bound: each side
    proves it knows the code (explicit key confirmation), and someone who does not can test
    one guess per call, no more. No words to compare."""

    def __init__(self, code: str, caller: bool) -> None:
        from spake2 import SPAKE2_A, SPAKE2_B  # imported on use: ~20 ms that calls without a code do not need

        self._caller = caller
        role = SPAKE2_A if caller else SPAKE2_B
        self._spake = role(normalize_code(code).encode(), idA=b"voip caller", idB=b"voip listener")
        self.message: bytes = self._spake.start()

    def agree(self, peer_message: bytes, context: bytes) -> tuple[CallKeys, bytes, bytes]:
        """The keys, our confirmation (to send) and the one the peer must send; `context` as
        for `KeyPair.agree`."""
        try:
            shared = self._spake.finish(peer_message)
        except Exception as exc:  # spake2 raises its own errors and ValueError on bad elements
            raise KeyAgreementError(f"unusable code message ({exc})") from None
        caller_message, listener_message = (
            (self.message, peer_message) if self._caller else (peer_message, self.message)
        )
        transcript = context + caller_message + listener_message
        keys, confirmations = _derive(shared, transcript, self._caller, _CODE_INFO)
        caller_confirms, listener_confirms = confirmations
        keys = CallKeys(keys.send, keys.receive, sas=None)
        if self._caller:
            return keys, caller_confirms, listener_confirms
        return keys, listener_confirms, caller_confirms


def call_context(call_id: int, caller_offer: bytes, listener_offer: bytes) -> bytes:
    """What the keys are bound to besides the exchange itself: the call id and both offers
    as sent, so that a man in the middle who changes an offer (turns AES-GCM or redundancy
    off, say) gives the two sides different keys, and so different words or a failed code."""
    return struct.pack("!Q", call_id) + caller_offer + listener_offer


def _derive(secret: bytes, transcript: bytes, caller: bool, info: bytes) -> tuple[CallKeys, tuple[bytes, bytes]]:
    """HKDF-SHA256 of the shared secret, salted with the exchange: SRTP and control keys for
    each direction, two bytes of SAS, and a confirmation for each side."""
    salt = hashlib.sha256(transcript).digest()
    half = SRTP_KEY_BYTES + CONTROL_KEY_BYTES
    length = 2 * half + 2 + 2 * CONFIRM_BYTES
    material = HKDF(hashes.SHA256(), length, salt, info).derive(secret)
    from_caller = DirectionKeys(material[:SRTP_KEY_BYTES], material[SRTP_KEY_BYTES:half])
    from_listener = DirectionKeys(material[half : half + SRTP_KEY_BYTES], material[half + SRTP_KEY_BYTES : 2 * half])
    sas = f"{WORDS[material[2 * half]]} {WORDS[material[2 * half + 1]]}"
    confirm = material[2 * half + 2 :]
    confirmations = (confirm[:CONFIRM_BYTES], confirm[CONFIRM_BYTES:])
    if caller:
        return CallKeys(send=from_caller, receive=from_listener, sas=sas), confirmations
    return CallKeys(send=from_listener, receive=from_caller, sas=sas), confirmations


def new_code() -> str:
    """A fresh code to read to a caller: a number and two words, about 22 bits."""
    return f"{secrets.randbelow(100)}-{secrets.choice(WORDS)}-{secrets.choice(WORDS)}"


def normalize_code(code: str) -> str:
    """ "7 Guitar  harbor" and "7-guitar-harbor" are the same code."""
    return "-".join(part for part in re.split(r"[\s-]+", code.lower()) if part)


def commitment_of(public: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_LABEL + public).digest()


def check_commitment(public: bytes, commitment: bytes) -> None:
    """The caller's revealed key must be the one it committed to in INVITE."""
    if not hmac.compare_digest(commitment_of(public), commitment):
        raise KeyAgreementError("the caller's key is not the one it committed to")


def control_tag(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def tag_matches(key: bytes, message: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(control_tag(key, message), tag)
