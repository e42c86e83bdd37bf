"""Speech quality of what came out against what went in: alignment and PESQ-WB (ITU-T P.862.2).

Used by the tests and the benchmarks; `pesq` (a test extra) is imported on use.
"""

from __future__ import annotations

import numpy as np
import soxr

from voip import SAMPLE_RATE
from voip.codec import Pcm


def align(reference: Pcm, degraded: Pcm, max_lag_s: float | None = None) -> tuple[Pcm, Pcm, int]:
    """Shift `degraded` onto `reference` by the lag of peak cross-correlation; both cut to one length.

    `max_lag_s` bounds the search: a signal that repeats itself (the sample sentence said
    three times) correlates almost as well one repetition off.
    """
    size = 1 << (len(reference) + len(degraded) - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(degraded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.fft.fftfreq(size, 1.0 / size).astype(np.int64)  # 0, 1, ..., -1: the lag of each bin
    if max_lag_s is not None:
        corr = np.where(np.abs(lags) <= max_lag_s * SAMPLE_RATE, corr, -np.inf)
    lag = int(lags[int(np.argmax(corr))])
    degraded = degraded[lag:] if lag >= 0 else np.concatenate((np.zeros(-lag, dtype=degraded.dtype), degraded))
    length = min(len(reference), len(degraded))
    return reference[:length], degraded[:length], lag


def pesq_wb(reference: Pcm, degraded: Pcm, max_lag_s: float | None = None) -> float:
    """Wideband PESQ of two 48 kHz signals, after alignment."""
    from pesq import pesq

    ref, deg, _ = align(reference, degraded, max_lag_s)
    ref16 = soxr.resample(ref, SAMPLE_RATE, 16000)
    deg16 = soxr.resample(deg, SAMPLE_RATE, 16000)
    return float(pesq(16000, ref16, deg16, "wb"))
