"""Conversational quality by ITU-T G.107's E-model: what a delay and a loss rate cost a listener.

The jitter buffer trades one against the other: every packet it lets come late is
concealed and heard, every millisecond it holds adds to the one-way mouth-to-ear delay
Ta, which listeners hardly notice below about 150 ms. The E-model puts both on one
scale, the transmission rating R (0..100), and maps R to a MOS (1..4.5):

    R = R0 - Idd(Ta) - Ie_eff(loss)          (the other impairments at their defaults)

* `idd` is the delay impairment of G.107 section 7.4: 0 up to Ta = 100 ms, ~3 at
  200 ms, ~15 at 300 ms.
* `ie_eff` is the equipment impairment of a codec under random packet loss:
  Ie + (95 - Ie) * Ppl / (Ppl + Bpl). Ie and Bpl for Opus at 24 kbit/s with its PLC
  are fitted from our own PESQ-WB against loss (`scripts/fit_emodel.py`,
  docs/benchmarks.md), as G.113 does for other codecs.
* `conversational_mos` combines a measured listening quality (PESQ, say) with a delay:
  MOS(R(MOS_LQO) - Idd(Ta)).

Pure and small: used by the jitter buffer's delay model, the statistics (`mos`) and
the benchmarks.
"""

from __future__ import annotations

import math

R0 = 93.2  # G.107's default basic signal-to-noise ratio, less the default simultaneous impairment
DEVICE_ALLOWANCE_MS = 40.0  # sound card input and output buffers, for Ta when they are not measured
# Opus 24 kbit/s, 20 ms frames, in-band FEC off, PLC on: fitted by scripts/fit_emodel.py;
# the fit and what it measured are in docs/benchmarks.md.
OPUS_IE = 19.5
OPUS_BPL = 9.0


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the MOS a rating R predicts (1 below R = 0, 4.5 above R = 100)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def r_from_mos(mos: float) -> float:
    """The inverse of `mos_from_r` on 0..100, by bisection (the cubic is monotonic there)."""
    if mos <= 1.0:
        return 0.0
    if mos >= 4.5:
        return 100.0
    low, high = 0.0, 100.0
    for _ in range(50):
        middle = (low + high) / 2
        if mos_from_r(middle) < mos:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def idd(ta_ms: float) -> float:
    """G.107 section 7.4: the impairment of a one-way mouth-to-ear delay of `ta_ms`."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    impairment: float = 25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    return impairment


def ie_eff(loss: float, ie: float = OPUS_IE, bpl: float = OPUS_BPL) -> float:
    """The codec's impairment at a random packet loss `loss` (a fraction, 0..1), PLC included."""
    percent = 100.0 * max(0.0, loss)
    return ie + (95.0 - ie) * percent / (percent + bpl)


def rating(ta_ms: float, loss: float) -> float:
    """R for a call with one-way delay `ta_ms` and a fraction `loss` of frames concealed."""
    return R0 - idd(ta_ms) - ie_eff(loss)


def estimate_mos(ta_ms: float, loss: float) -> float:
    """The MOS a call would get, with no reference signal: what `--stats-json` reports as `mos`."""
    return mos_from_r(rating(ta_ms, loss))


def conversational_mos(listening_mos: float, ta_ms: float) -> float:
    """MOS_CQ: a measured listening quality (MOS-LQO) with the delay impairment taken off."""
    return mos_from_r(r_from_mos(listening_mos) - idd(ta_ms))


def mouth_to_ear_ms(frame_ms: float, lookahead_ms: float, path_ms: float, buffer_ms: float) -> float:
    """Ta: framing, codec lookahead, the network path, the jitter buffer, and the sound devices."""
    return frame_ms + lookahead_ms + path_ms + buffer_ms + DEVICE_ALLOWANCE_MS
