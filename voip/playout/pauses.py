"""What counts as a pause: where the buffer may change its delay unheard.

Digital silence and anything under -45 dBFS is quiet. So is sound near the stream's own
noise floor and well under its speech: a recording with a hum, a line with a fan behind
the talker, whose pauses never fall under -45 dBFS and would otherwise never let the
buffer move except inside words. The floor follows the quietest packets at once and rises
slowly through speech; the speech level follows the loudest ones and falls slowly. Sound
with no speech above its floor (a tone, music, noise alone) has no pauses.
"""

from __future__ import annotations

import math

from voip import SAMPLE_RATE

SILENT_DBFS = -45.0  # quiet whatever the stream
NEAR_FLOOR_DB = 6.0  # within this of the noise floor...
UNDER_SPEECH_DB = 20.0  # ...and this far under the speech level: the noise between words
FLOOR_RISE_DB_PER_S = 3.0  # through an utterance the floor creeps up only a little
SPEECH_FALL_DB_PER_S = 2.0  # the talker is forgotten over ~10 s without speech: then noise alone has no pauses


class PauseDetector:
    """Classifies decoded audio, packet by packet, as quiet or not (`relative`: near the
    floor counts too; without it, only what is under `SILENT_DBFS`)."""

    def __init__(self, relative: bool = True) -> None:
        self.relative = relative
        self.floor_dbfs = math.inf
        self.speech_dbfs = -math.inf

    def quiet(self, rms: float, samples: int) -> bool:
        level = 20.0 * math.log10(rms) if rms > 0 else -200.0
        seconds = samples / SAMPLE_RATE
        self.floor_dbfs = min(level, self.floor_dbfs + FLOOR_RISE_DB_PER_S * seconds)
        self.speech_dbfs = max(level, self.speech_dbfs - SPEECH_FALL_DB_PER_S * seconds)
        if level < SILENT_DBFS:
            return True
        return self.relative and level < self.floor_dbfs + NEAR_FLOOR_DB and level < self.speech_dbfs - UNDER_SPEECH_DB
