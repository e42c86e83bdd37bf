"""Finding the utterances a per-utterance judge scores."""

from __future__ import annotations

import numpy as np

from voip.quality import utterances

RATE = 48000


def _burst(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.1).astype(np.float32)


def _pause(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def test_pauses_split_utterances_and_breaths_do_not():
    audio = np.concatenate((_pause(0.5), _burst(1.0, 1), _pause(0.1), _burst(0.5, 2), _pause(0.6), _burst(0.8, 3)))
    spans = [(start / RATE, end / RATE) for start, end in utterances(audio)]
    assert spans == [(0.5, 2.1), (2.7, 3.5)]  # the 0.1 s breath stays inside the first


def test_quiet_noise_is_not_speech_and_silence_has_none():
    noise = (np.random.default_rng(0).standard_normal(RATE) * 1e-4).astype(np.float32)  # 60 dB under the bursts
    audio = np.concatenate((noise, _burst(1.0, 1), noise))
    assert utterances(audio) == [(RATE, 2 * RATE)]
    assert utterances(_pause(1.0)) == []
