"""A conversation for the benchmarks: several voices, women and men, with pauses between turns.

Synthesized offline by espeak-ng (`scripts/setup --test` installs it) from Harvard
sentences, plus the bundled sample, and cached under ~/.cache/voip. Returns the 48 kHz
signal and where each utterance lies in it, so quality can be judged utterance by
utterance (a jitter buffer moves its delay in the pauses between them).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import soxr

from voip import SAMPLE_RATE
from voip.io.files import bundled_speech, read_48k

# espeak-ng voice variants: female (f*) and male (m*) voices on two accents
VOICES = ("en-us+f3", "en+m3", "en-gb+f4", "en-us+m1", "en+f2", "en-gb-x-rp+m7")
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
)
LEVEL_RMS = 0.05  # about -26 dBFS, a usual speech level for codec tests
CACHE = Path.home() / ".cache" / "voip"

Utterance = tuple[int, int]  # start and end sample


def conversation(seconds: float = 60.0, seed: int = 0) -> tuple[np.ndarray, list[Utterance]]:
    """At least `seconds` of turns: one or two sentences each, voices taking turns, 0.4-1.2 s apart."""
    key = hashlib.sha256(f"{VOICES}{SENTENCES}{seconds}{seed}".encode()).hexdigest()[:12]
    cached = CACHE / f"conversation-{key}.npz"
    if cached.exists():
        data = np.load(cached)
        return data["audio"], [(int(a), int(b)) for a, b in data["utterances"]]
    rng = random.Random(seed)
    sentences = list(SENTENCES)
    rng.shuffle(sentences)
    parts: list[np.ndarray] = []
    utterances: list[Utterance] = []
    length = 0
    turn = 0
    while length < seconds * SAMPLE_RATE:
        if turn == 3:
            speech = read_48k(bundled_speech())
        else:
            text = " ".join(sentences.pop() for _ in range(rng.choice((1, 2))) if sentences)
            speech = _speak(text or SENTENCES[turn % len(SENTENCES)], VOICES[turn % len(VOICES)])
        speech = _trim(speech)
        speech *= LEVEL_RMS / max(1e-9, float(np.sqrt(np.mean(speech**2))))
        pause = np.zeros(int(rng.uniform(0.4, 1.2) * SAMPLE_RATE), dtype=np.float32)
        parts += [pause, speech.astype(np.float32)]
        utterances.append((length + len(pause), length + len(pause) + len(speech)))
        length += len(pause) + len(speech)
        turn += 1
    parts.append(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))
    audio = np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, audio=audio, utterances=np.array(utterances))
    return audio, utterances


def _speak(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), text], check=True)
        audio, rate = soundfile.read(path, dtype="float32")
    return np.asarray(soxr.resample(audio, rate, SAMPLE_RATE), dtype=np.float32)


def _trim(speech: np.ndarray) -> np.ndarray:
    """Without the silence espeak-ng puts around an utterance."""
    loud = np.flatnonzero(np.abs(speech) > 0.01 * float(np.max(np.abs(speech))))
    return speech[loud[0] : loud[-1] + 1] if len(loud) else speech
