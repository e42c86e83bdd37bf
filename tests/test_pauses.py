"""What counts as a pause (voip.playout.pauses), packet by packet."""

from __future__ import annotations

import numpy as np

from voip.playout.pauses import PauseDetector

PACKET = 960  # 20 ms


def _rms_db(dbfs: float) -> float:
    return float(10 ** (dbfs / 20))


def _classify(levels_dbfs: list[float]) -> list[bool]:
    detector = PauseDetector()
    return [detector.quiet(_rms_db(level), PACKET) for level in levels_dbfs]


def test_digital_silence_and_anything_under_minus_45_dbfs_is_quiet_from_the_first_packet():
    assert _classify([-200.0, -60.0, -46.0]) == [True, True, True]


def test_the_noise_between_words_of_a_noisy_line_is_quiet_once_speech_has_been_heard():
    rng = np.random.default_rng(1)
    words = [-15.0 + rng.normal(0, 3) for _ in range(100)]  # 2 s of speech
    noise = [-40.0 + rng.normal(0, 1) for _ in range(25)]  # then half a second of the line's noise
    quiet = _classify(noise + words + noise)
    assert not any(quiet[:25])  # before any speech, -40 dBFS noise is not known to be a pause
    assert not any(quiet[25:125])  # speech never is
    assert all(quiet[125:])  # the noise floor is known, and 25 dB under the talker


def test_sound_with_nothing_above_its_floor_has_no_pauses():
    tone = [-20.0] * 500  # 10 s of a tone: its floor is its level
    noise = [-40.0 + d for d in np.random.default_rng(2).normal(0, 1, 500)]  # a fan, alone
    assert not any(_classify(tone)) and not any(_classify(noise))
