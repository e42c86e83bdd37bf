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


def utterance_pesq(
    reference: Pcm, degraded: Pcm, utterances: list[tuple[int, int]], search_s: float = 0.5, pad_s: float = 0.15
) -> list[float]:
    """PESQ-WB of each utterance (start and end samples in `reference`), each aligned on its own.

    A jitter buffer moves its delay between utterances, so one alignment for a whole
    conversation would score later utterances against the wrong samples. Each utterance is
    looked for within `search_s` of where the one before was found.
    """
    from pesq import pesq

    _, _, offset = align(reference, degraded, max_lag_s=2.0)
    pad = int(pad_s * SAMPLE_RATE)
    search = int(search_s * SAMPLE_RATE)
    scores = []
    for start, end in utterances:
        start, end = max(0, start - pad), min(len(reference), end + pad)
        segment = reference[start:end]
        low = max(0, start + offset - search)
        window = degraded[low : end + offset + search]
        if len(window) < len(segment):
            window = np.concatenate((window, np.zeros(len(segment) - len(window), dtype=degraded.dtype)))
        ref, deg, lag = align(segment, window, max_lag_s=(start + offset - low + search) / SAMPLE_RATE)
        offset = low + lag - start
        ref16 = soxr.resample(ref, SAMPLE_RATE, 16000)
        deg16 = soxr.resample(deg, SAMPLE_RATE, 16000)
        scores.append(float(pesq(16000, ref16, deg16, "wb", on_error=1)))  # 1: a silent utterance scores -1
    return scores


def utterances(reference: Pcm, min_pause_s: float = 0.25, floor_db: float = -40.0) -> list[tuple[int, int]]:
    """Start and end samples of the speech in `reference`: runs of 10 ms frames within `floor_db`
    of the loudest one, split where a pause lasts `min_pause_s` (a breath inside a sentence is shorter)."""
    frame = SAMPLE_RATE // 100
    count = len(reference) // frame
    power = np.mean(np.square(reference[: count * frame].reshape(count, frame), dtype=np.float64), axis=1)
    if not power.any():
        return []
    loud = 10 * np.log10(power + 1e-20) > 10 * np.log10(power.max() + 1e-20) + floor_db
    spans: list[tuple[int, int]] = []
    min_pause = round(min_pause_s * 100)
    for index in np.flatnonzero(loud).tolist():
        if spans and index - spans[-1][1] < min_pause:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return [(start * frame, end * frame) for start, end in spans]


PLCMOS_LEAD_S = 0.1  # the judged signal starts this long before its first sound...
PLCMOS_SHIFTS_MS = tuple(range(0, 40, 5))  # ...and is judged at these further shifts; the score is their mean
ONSET_LEVEL = 0.01  # a sample this loud is sound


def plcmos(degraded: Pcm) -> float:
    """PLCMOS v2 (the ICASSP PLC challenge's non-intrusive judge of concealment; `speechmos`,
    a bench extra), made to judge the audio and not where it starts.

    One judgement depends on where the model's frames fall: shifting a clean 60 s
    conversation by 0-30 ms moved it between 2.54 and 2.95 (standard deviation 0.10), so a
    receiver that merely started 100 ms later scored 0.1 lower on every trace
    (docs/benchmarks.md). So the signal is cut to start `PLCMOS_LEAD_S` before its first
    sound, the same for every receiver, and scored as the mean over eight shifts (standard
    error about 0.02). The model draws random rater embeddings: seeded, so a score repeats."""
    from speechmos import plcmos as model

    audio16 = np.clip(soxr.resample(degraded, SAMPLE_RATE, 16000), -1.0, 1.0)
    loud = np.flatnonzero(np.abs(audio16) > ONSET_LEVEL)
    lead = round(PLCMOS_LEAD_S * 16000)
    onset = int(loud[0]) if len(loud) else 0
    audio16 = audio16[onset - lead :] if onset >= lead else np.concatenate((np.zeros(lead - onset), audio16))
    scores = []
    for shift_ms in PLCMOS_SHIFTS_MS:
        np.random.seed(0)
        shifted = np.concatenate((np.zeros(16 * shift_ms, dtype=audio16.dtype), audio16))
        scores.append(float(model.run(shifted, 16000)["plcmos"]))
    return float(np.mean(scores))
