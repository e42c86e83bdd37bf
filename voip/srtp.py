"""SRTP and SRTCP (RFC 3711) through libsrtp 2 (`pylibsrtp`): AEAD_AES_128_GCM (RFC 7714) where
the library has it, AES_CM_128_HMAC_SHA1_80 otherwise.

One `SrtpContext` per call and side: an outbound session under our keys, an inbound one
under the peer's. libsrtp keeps the replay window (a replayed or tampered packet raises).
"""

from __future__ import annotations

import functools
import os

import pylibsrtp

from voip.crypto import CallKeys, DirectionKeys

GCM_SALT_BYTES = 12
CM_SALT_BYTES = 14
MASTER_KEY_BYTES = 16


class SrtpError(Exception):
    """A packet failed authentication or the replay check: it is dropped."""


@functools.cache
def gcm_available() -> bool:
    """Whether this libsrtp was built with AES-GCM (the PyPI wheels are), probed as aiortc does."""
    try:
        key = bytes(MASTER_KEY_BYTES + GCM_SALT_BYTES)
        policy = pylibsrtp.Policy(
            key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        )
        pylibsrtp.Session(policy)
    except pylibsrtp.Error:
        return False
    return True


def sdes_keys(key: bytes | None = None) -> CallKeys:
    """Keys for a stream described by SDES (RFC 4568: `a=crypto` in SDP): `key` (master key
    and salt) as read from an SDP, or a fresh one to write into it; the same both ways."""
    direction = DirectionKeys(key or os.urandom(MASTER_KEY_BYTES + CM_SALT_BYTES), b"")
    return CallKeys(send=direction, receive=direction, sas=None)


class SrtpContext:
    """Protects what we send and checks what we receive, for one call."""

    def __init__(self, keys: CallKeys, gcm: bool) -> None:
        self.profile = "AEAD_AES_128_GCM" if gcm else "AES_CM_128_HMAC_SHA1_80"
        self._outbound = pylibsrtp.Session(_policy(keys.send.srtp, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, gcm))
        self._inbound = pylibsrtp.Session(_policy(keys.receive.srtp, pylibsrtp.Policy.SSRC_ANY_INBOUND, gcm))

    def protect(self, rtp: bytes) -> bytes:
        return bytes(self._outbound.protect(rtp))

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return bytes(self._outbound.protect_rtcp(rtcp))

    def unprotect(self, srtp: bytes) -> bytes:
        try:
            return bytes(self._inbound.unprotect(srtp))
        except (pylibsrtp.Error, ValueError) as exc:  # ValueError: longer than any packet we send
            raise SrtpError(str(exc)) from None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        try:
            return bytes(self._inbound.unprotect_rtcp(srtcp))
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(str(exc)) from None


def _policy(key_and_salt: bytes, direction: int, gcm: bool) -> pylibsrtp.Policy:
    if gcm:
        key = key_and_salt[: MASTER_KEY_BYTES + GCM_SALT_BYTES]
        return pylibsrtp.Policy(key, direction, 0, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    key = key_and_salt[: MASTER_KEY_BYTES + CM_SALT_BYTES]
    return pylibsrtp.Policy(key, direction, 0, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
