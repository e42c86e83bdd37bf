"""Time-stretching of decoded speech by whole pitch periods (WSOLA-style overlap-add).

Why pitch periods: voiced speech repeats itself every period, so two neighbouring
periods are near copies. Cross-fading the first into the second drops one period
(accelerate); cross-fading the second back into the first plays one period twice
(expand). Either way every output sample lies between two near-identical input
samples, so the waveform never jumps, and the pitch is untouched (unlike resampling).
In a pause the same cross-fade works on noise at any length.

Lags are searched coarsely at a quarter of the rate and refined at full rate, as
WebRTC's NetEq does, so a search costs about a hundred short dot products.
"""

from __future__ import annotations

import math

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm

MIN_LAG = SAMPLE_RATE // 400  # 2.5 ms: a 400 Hz voice
MAX_LAG = SAMPLE_RATE // 100  # 10 ms: a 100 Hz voice (half a 20 ms frame, so two periods fit)
DECIMATION = 4


def best_period(pcm: Pcm, min_lag: int, max_lag: int) -> tuple[int, float]:
    """The lag in [min_lag, max_lag] at which `pcm` best repeats itself, and how well.

    How well is the normalized correlation of the period starting at 0 with the next one
    (1.0: identical). Needs len(pcm) >= 2 * max_lag.
    """
    if not 1 <= min_lag <= max_lag or len(pcm) < 2 * max_lag:
        raise ValueError(f"no lag search over {min_lag}..{max_lag} in {len(pcm)} samples")
    coarse = pcm[: 2 * max_lag // DECIMATION * DECIMATION].reshape(-1, DECIMATION).mean(axis=1)
    best, best_score = min_lag, -2.0
    for lag in range(max(1, min_lag // DECIMATION), max_lag // DECIMATION + 1):
        score = _correlation(coarse[:lag], coarse[lag : 2 * lag])
        if score > best_score:
            best, best_score = lag * DECIMATION, score
    refined, refined_score = best, -2.0
    for lag in range(max(min_lag, best - DECIMATION + 1), min(max_lag, best + DECIMATION - 1) + 1):
        score = _correlation(pcm[:lag], pcm[lag : 2 * lag])
        if score > refined_score:
            refined, refined_score = lag, score
    return refined, refined_score


def accelerate(pcm: Pcm, lag: int) -> Pcm:
    """Drop `lag` samples: the first two periods become one that fades from the first into the second."""
    _check(pcm, lag)
    first, second = pcm[:lag], pcm[lag : 2 * lag]
    fade = _ramp(lag)
    return np.concatenate((first * fade + second * (1.0 - fade), pcm[2 * lag :])).astype(np.float32, copy=False)


def expand(pcm: Pcm, lag: int) -> Pcm:
    """Add `lag` samples: between the first two periods, one that fades from the second back into the first."""
    _check(pcm, lag)
    first, second = pcm[:lag], pcm[lag : 2 * lag]
    fade = _ramp(lag)
    return np.concatenate((first, second * fade + first * (1.0 - fade), pcm[lag:])).astype(np.float32, copy=False)


def _check(pcm: Pcm, lag: int) -> None:
    if not 0 < lag <= len(pcm) // 2:
        raise ValueError(f"cannot stretch {len(pcm)} samples by {lag}")


def _ramp(n: int) -> Pcm:
    """From 1 down toward 0 in n steps: weight of the signal faded out."""
    return np.linspace(1.0, 0.0, n, endpoint=False, dtype=np.float32)


def _correlation(a: Pcm, b: Pcm) -> float:
    energy = float(np.dot(a, a)) * float(np.dot(b, b))
    return float(np.dot(a, b)) / math.sqrt(energy) if energy > 0 else 0.0
