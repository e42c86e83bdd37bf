"""Time-stretching by pitch periods: lengths, the period found, and no jumps."""

from __future__ import annotations

import numpy as np
import pytest

from voip.playout.stretch import MAX_LAG, MIN_LAG, accelerate, best_period, expand


def tone(freq: float, n: int = 960, phase: float = 0.3) -> np.ndarray:
    t = np.arange(-1, n) / 48000  # one sample before the block: what played just before it
    return (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.mark.parametrize("freq", [110.0, 220.0, 333.0])
def test_the_period_of_a_tone_is_found(freq):
    lag, correlation = best_period(tone(freq)[1:], MIN_LAG, MAX_LAG)
    periods = lag * freq / 48000
    assert abs(periods - round(periods)) < 0.02 and correlation > 0.999


@pytest.mark.parametrize("freq", [110.0, 220.0, 333.0, 440.0])
@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_stretching_a_tone_changes_its_length_by_the_lag_and_never_jumps(freq, stretch):
    signal = tone(freq)
    lag, _ = best_period(signal[1:], MIN_LAG, MAX_LAG)
    out = stretch(signal[1:], lag)
    assert len(out) == 960 + (lag if stretch is expand else -lag)
    steps = np.abs(np.diff(np.concatenate((signal[:1], out))))  # from the sample before, too
    assert steps.max() <= 1.02 * 2 * np.pi * freq * 0.5 / 48000


def test_noise_is_not_taken_for_a_period():
    rng = np.random.default_rng(1)
    _, correlation = best_period(rng.standard_normal(960).astype(np.float32), MIN_LAG, MAX_LAG)
    assert correlation < 0.5


def test_bad_lags_are_refused():
    with pytest.raises(ValueError):
        accelerate(np.zeros(100, dtype=np.float32), 60)
    with pytest.raises(ValueError):
        best_period(np.zeros(500, dtype=np.float32), MIN_LAG, MAX_LAG)
