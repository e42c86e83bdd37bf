"""Speech quality of what came out against what went in: alignment and PESQ-WB (ITU-T P.862.2).

Used by the tests and the benchmarks; `pesq` (a test extra) is imported on use.
"""

from __future__ import annotations

import numpy as np
import soxr

from voip import SAMPLE_RATE
from voip.codec import Pcm


def align(reference: Pcm, degraded: Pcm) -> tuple[Pcm, Pcm, int]:
    """Shift `degraded` onto `reference` by the lag of peak cross-correlation; both cut to one length."""
    size = 1 << (len(reference) + len(degraded) - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(degraded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr))
    if lag > size // 2:
        lag -= size
    degraded = degraded[lag:] if lag >= 0 else np.concatenate((np.zeros(-lag, dtype=degraded.dtype), degraded))
    length = min(len(reference), len(degraded))
    return reference[:length], degraded[:length], lag


def pesq_wb(reference: Pcm, degraded: Pcm) -> float:
    """Wideband PESQ of two 48 kHz signals, after alignment."""
    from pesq import pesq

    ref, deg, _ = align(reference, degraded)
    ref16 = soxr.resample(ref, SAMPLE_RATE, 16000)
    deg16 = soxr.resample(deg, SAMPLE_RATE, 16000)
    return float(pesq(16000, ref16, deg16, "wb"))
