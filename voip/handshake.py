"""The key exchange inside a call's set-up, as three byte strings: INVITE's, ACCEPT's, REVEAL's.

Two ways, one interface, so the call control (`voip.control`) need not know which:

* `WordsHandshake`: X25519 with a hash commitment; both sides then read two words
  (`voip.crypto.KeyPair`).
* `CodeHandshake`: SPAKE2 with a code both users know, with explicit key confirmation
  (`voip.crypto.CodeAgreement`).

The caller makes `hello`; the listener answers it (`answer`); the caller takes the answer
(`take_answer`: the keys, and what goes in REVEAL); the listener takes REVEAL
(`take_reveal`: the keys). A field that does not fit raises `KeyAgreementError` (it may be
forged: the call goes on waiting); `WrongCode` says the peer knows another code.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from voip.crypto import (
    CONFIRM_BYTES,
    SPAKE_MESSAGE_BYTES,
    CallKeys,
    CodeAgreement,
    KeyAgreementError,
    KeyPair,
    check_commitment,
)


class WrongCode(KeyAgreementError):
    """The peer proved it knows a code, and not ours."""


class Handshake(Protocol):
    def hello(self, call_id: int) -> bytes: ...

    def answer(self, hello: bytes, context: bytes) -> bytes: ...

    def take_answer(self, answer: bytes, context: bytes) -> tuple[CallKeys, bytes]: ...

    def take_reveal(self, reveal: bytes) -> CallKeys: ...


class WordsHandshake:
    """INVITE commits to the caller's key, ACCEPT carries the listener's, REVEAL the caller's."""

    def __init__(self, key_pair: KeyPair | None = None) -> None:
        self._key_pair = key_pair or KeyPair()
        self._commitment = b""
        self._context = b""

    def hello(self, call_id: int) -> bytes:
        self._commitment = self._key_pair.commitment
        return self._commitment

    def answer(self, hello: bytes, context: bytes) -> bytes:
        self._commitment, self._context = hello, context
        return self._key_pair.public

    def take_answer(self, answer: bytes, context: bytes) -> tuple[CallKeys, bytes]:
        return self._key_pair.agree(answer, True, context, self._commitment), self._key_pair.public

    def take_reveal(self, reveal: bytes) -> CallKeys:
        check_commitment(reveal, self._commitment)
        return self._key_pair.agree(reveal, False, self._context, self._commitment)


class CodeHandshake:
    """INVITE carries the caller's SPAKE2 message (padded to ACCEPT's length, so that no answer
    is larger than what caused it), ACCEPT the listener's and its confirmation, REVEAL the
    caller's confirmation."""

    def __init__(self, code: str) -> None:
        self._code = code
        self._agreement: CodeAgreement | None = None
        self._keys: CallKeys | None = None
        self._expected = b""

    def hello(self, call_id: int) -> bytes:
        self._agreement = CodeAgreement(self._code, caller=True)
        return self._agreement.message + bytes(CONFIRM_BYTES)

    def answer(self, hello: bytes, context: bytes) -> bytes:
        self._agreement = CodeAgreement(self._code, caller=False)
        self._keys, confirmation, self._expected = self._agreement.agree(hello[:SPAKE_MESSAGE_BYTES], context)
        return self._agreement.message + confirmation

    def take_answer(self, answer: bytes, context: bytes) -> tuple[CallKeys, bytes]:
        assert self._agreement is not None
        message, theirs = answer[:SPAKE_MESSAGE_BYTES], answer[SPAKE_MESSAGE_BYTES:]
        keys, confirmation, expected = self._agreement.agree(message, context)
        if not hmac.compare_digest(theirs, expected):
            raise WrongCode("the listener's code is not this one")
        return keys, confirmation

    def take_reveal(self, reveal: bytes) -> CallKeys:
        if self._keys is None or not hmac.compare_digest(reveal, self._expected):
            raise KeyAgreementError("the caller's confirmation does not match")  # a wrong code comes as REFUSED
        return self._keys
