"""Key agreement: both sides derive the same keys and words; a man in the middle cannot."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from voip.crypto import (
    CodeAgreement,
    KeyAgreementError,
    KeyPair,
    call_context,
    check_commitment,
    control_tag,
    new_code,
    normalize_code,
    tag_matches,
)
from voip.sas_words import WORDS
from voip.srtp import SrtpContext, SrtpError, gcm_available


def fixed(seed: int) -> KeyPair:
    return KeyPair(X25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def agree(caller: KeyPair, listener: KeyPair, call_id: int = 7):
    commitment = caller.commitment
    check_commitment(caller.public, commitment)
    context = call_context(call_id, b"offer", b"answer")
    return caller.agree(listener.public, True, context, commitment), listener.agree(
        caller.public, False, context, commitment
    )


def test_both_sides_derive_mirrored_keys_and_the_same_words():
    a, b = agree(fixed(1), fixed(2))
    assert a.send == b.receive and a.receive == b.send and a.send != a.receive
    assert a.sas == b.sas and all(word in WORDS for word in a.sas.split())


def test_each_call_and_each_exchange_gets_its_own_keys():
    first, _ = agree(fixed(1), fixed(2), call_id=7)
    other_call, _ = agree(fixed(1), fixed(2), call_id=8)
    fresh, _ = agree(KeyPair(), KeyPair())
    assert first.send != other_call.send and first.send != fresh.send


def test_a_man_in_the_middle_gets_different_keys_on_each_side():
    caller, listener, mallory = fixed(1), fixed(2), fixed(3)
    caller_side, _ = agree(caller, mallory)
    _, listener_side = agree(mallory, listener)
    assert caller_side.send != listener_side.receive
    assert caller_side.sas != listener_side.sas  # for these keys; in general 1 in 65,536 match


def test_a_revealed_key_must_be_the_committed_one():
    caller, other = fixed(1), fixed(4)
    with pytest.raises(KeyAgreementError):
        check_commitment(other.public, caller.commitment)


def test_a_low_order_public_key_is_refused():
    with pytest.raises(KeyAgreementError):
        fixed(1).agree(bytes(32), True, bytes(8), fixed(1).commitment)  # the all-zero point
    with pytest.raises(KeyAgreementError):
        fixed(1).agree(b"short", True, bytes(8), fixed(1).commitment)


def test_the_words_are_256_distinct():
    assert len(WORDS) == 256 and len(set(WORDS)) == 256


def test_control_tags_check_the_key_and_every_byte():
    tag = control_tag(b"k" * 32, b"message")
    assert tag_matches(b"k" * 32, b"message", tag)
    assert not tag_matches(b"j" * 32, b"message", tag) and not tag_matches(b"k" * 32, b"messagE", tag)


@pytest.mark.parametrize("gcm", [True, False])
def test_srtp_round_trip_and_tampered_or_replayed_packets_fail(gcm):
    if gcm:
        assert gcm_available()  # the PyPI wheels of pylibsrtp have AES-GCM
    a_keys, b_keys = agree(fixed(1), fixed(2))
    a, b = SrtpContext(a_keys, gcm), SrtpContext(b_keys, gcm)
    rtp = bytes([0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5]) + b"opus" * 15
    protected = a.protect(rtp)
    assert rtp[12:] not in protected  # the payload is encrypted
    assert b.unprotect(protected) == rtp
    with pytest.raises(SrtpError):
        b.unprotect(protected)  # a replay
    tampered = bytearray(a.protect(rtp[:3] + b"\x02" + rtp[4:]))
    tampered[20] ^= 1
    with pytest.raises(SrtpError):
        b.unprotect(bytes(tampered))
    with pytest.raises(SrtpError):
        a.unprotect(a.protect(rtp[:3] + b"\x03" + rtp[4:]))  # our own keys are not the peer's


def test_a_code_reads_the_same_however_it_is_typed():
    assert normalize_code(" 7 Guitar  harbor ") == normalize_code("7-guitar-harbor") == "7-guitar-harbor"
    code = new_code()
    number, first, second = code.split("-")
    assert 0 <= int(number) < 100 and first in WORDS and second in WORDS


def test_the_same_code_gives_both_sides_the_same_keys_and_confirmations():
    caller, listener = CodeAgreement("7-guitar-harbor", True), CodeAgreement("7 GUITAR harbor", False)
    context = call_context(9, b"offer", b"answer")
    caller_keys, caller_proof, expected_from_listener = caller.agree(listener.message, context)
    listener_keys, listener_proof, expected_from_caller = listener.agree(caller.message, context)
    assert caller_keys.send == listener_keys.receive and caller_keys.sas is None
    assert caller_proof == expected_from_caller and listener_proof == expected_from_listener
    wrong = CodeAgreement("7-guitar-harbour", True)
    _, wrong_proof, _ = wrong.agree(CodeAgreement("7-guitar-harbor", False).message, context)
    assert wrong_proof != expected_from_caller
