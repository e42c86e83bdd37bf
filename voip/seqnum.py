"""Wraparound arithmetic for RTP's 16-bit sequence numbers and 32-bit timestamps.

Both counters wrap; every comparison in the receiver must go through here, or a
long call breaks after 22 minutes (sequence numbers at 50 packets/s) or 24 hours
(timestamps at 48 kHz).
"""

from __future__ import annotations


def signed_diff(a: int, b: int, bits: int) -> int:
    """Return a - b as the shortest signed distance on a circle of 2**bits."""
    modulus = 1 << bits
    half = modulus >> 1
    return ((a - b + half) % modulus) - half


def seq_diff(a: int, b: int) -> int:
    return signed_diff(a, b, 16)


def ts_diff(a: int, b: int) -> int:
    return signed_diff(a, b, 32)


class Unwrapper:
    """Extends a wrapping counter to an unbounded integer, nearest to the last value seen.

    Old values (reordered packets) unwrap below the newest one, so the result can
    be used as a dictionary key and compared directly.
    """

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        value &= self._mask
        if self._last is None:
            self._last = value
            return value
        extended = self._last + signed_diff(value, self._last & self._mask, self._bits)
        if extended > self._last:
            self._last = extended
        return extended

    def reset(self) -> None:
        self._last = None
