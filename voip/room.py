"""A simulated room: what our speaker plays reaches our microphone, late, quieter and
reverberant, with a noise floor. `--room SPEC` puts one between any source and the
encoder, so echo cancellation can be tried and measured without a laptop's speakers.

SPEC is comma-separated `key=value`, all optional:

    delay=60ms     speaker to microphone, device latencies excluded (the direct path)
    echo=-6dB      level of the echo (the whole impulse response) against what was played
    rt60=300ms     reverberation: time for the tail to decay by 60 dB (0: direct path only)
    noise=-45dB    a noise floor at the microphone, dBFS (off when absent)
    seed=1         the tail's and the noise's random numbers

Pure and seeded: the same spec and the same audio give the same microphone signal.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.errors import VoipError

MAX_BLOCK = SAMPLE_RATE  # the longest capture block a room serves in full (1 s)
DIRECT_TO_REVERB = 1.0  # energy of the reverberant tail against the direct path


@dataclass(frozen=True)
class RoomSpec:
    delay_ms: float = 60.0
    echo_db: float = -6.0
    rt60_ms: float = 300.0
    noise_dbfs: float | None = None
    seed: int = 1

    @classmethod
    def parse(cls, text: str) -> RoomSpec:
        units = {"delay": "ms", "echo": "db", "rt60": "ms", "noise": "db", "seed": ""}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            if not sep or key not in units:
                raise VoipError(f"bad --room {text!r}: expected key=value with keys {', '.join(units)}, not {item!r}")
            unit = units[key]
            if unit and value.endswith(unit):
                value = value[: -len(unit)]
            try:
                values[key] = float(value)
            except ValueError:
                raise VoipError(f"bad --room {text!r}: {key} needs a number{' in ' + unit if unit else ''}") from None
        spec = cls(
            delay_ms=values.get("delay", cls.delay_ms),
            echo_db=values.get("echo", cls.echo_db),
            rt60_ms=values.get("rt60", cls.rt60_ms),
            noise_dbfs=values.get("noise"),
            seed=int(values.get("seed", cls.seed)),
        )
        if not 0 <= spec.delay_ms <= 1000 or not 0 <= spec.rt60_ms <= 2000:
            raise VoipError(f"bad --room {text!r}: delay must be 0-1000 ms and rt60 0-2000 ms")
        return spec

    def describe(self) -> str:
        noise = f", noise {self.noise_dbfs:g} dBFS" if self.noise_dbfs is not None else ""
        return f"room: echo {self.echo_db:g} dB after {self.delay_ms:g} ms, rt60 {self.rt60_ms:g} ms{noise}"


def impulse_response(spec: RoomSpec, rng: np.random.Generator) -> np.ndarray:
    """A direct path at `delay_ms` and an exponentially decaying noise tail (as much energy as
    the direct path: a speaker an arm's length from the microphone), scaled so the whole
    response has the energy `echo_db`."""
    direct = round(spec.delay_ms * SAMPLE_RATE / 1000)
    tail_len = round(spec.rt60_ms * SAMPLE_RATE / 1000)
    h = np.zeros(direct + 1 + tail_len)
    h[direct] = 1.0
    if tail_len:
        t = np.arange(1, tail_len + 1) / SAMPLE_RATE
        decay = np.exp(-3.0 * math.log(10) * t / (spec.rt60_ms / 1000))  # -60 dB at rt60
        tail = rng.standard_normal(tail_len) * decay
        h[direct + 1 :] = tail * math.sqrt(DIRECT_TO_REVERB / float(np.sum(tail * tail)))
    h *= 10 ** (spec.echo_db / 20) / math.sqrt(float(np.sum(h * h)))
    return h


class Room:
    """`play` what the speaker plays; `capture` adds the room's echo of it (and its noise) to
    what the microphone hears. The two streams meet in time, not by sample count: a captured
    block is heard while the latest played audio of its length played, whenever each began."""

    def __init__(self, spec: RoomSpec) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(spec.seed)
        self._played = np.zeros(0, dtype=np.float32)  # the latest played audio, as much as the echo reaches
        self._fft: tuple[int, np.ndarray] = (0, np.zeros(0))
        self._h = impulse_response(spec, self._rng)

    def change_delay(self, delay_ms: float) -> None:
        """The echo path moves (someone moves the laptop): the same room, another direct path."""
        self.spec = dataclasses.replace(self.spec, delay_ms=delay_ms)
        self._h = impulse_response(self.spec, np.random.default_rng(self.spec.seed))
        self._fft = (0, np.zeros(0))

    def play(self, pcm: Pcm) -> None:
        played = np.concatenate((self._played, pcm.astype(np.float32)))
        self._played = played[-(len(self._h) + MAX_BLOCK) :]  # what the next capture can hear, and no more

    def capture(self, pcm: Pcm) -> Pcm:
        n, taps = len(pcm), len(self._h)
        # The played audio the block hears: its own span and, before it, as far as the echo reaches.
        span = taps - 1 + n
        segment = np.zeros(span)
        heard = self._played[-span:]
        segment[span - len(heard) :] = heard
        size = 1 << (span - 1).bit_length()  # circular convolution: the wrap spoils only outputs not kept
        if self._fft[0] != size:
            self._fft = (size, np.fft.rfft(self._h, size))
        echo = np.fft.irfft(np.fft.rfft(segment, size) * self._fft[1], size)[taps - 1 : taps - 1 + n]
        self._played = self._played[-(taps - 1) :] if taps > 1 else self._played[:0]
        out = pcm + echo.astype(np.float32)
        if self.spec.noise_dbfs is not None:
            out += (10 ** (self.spec.noise_dbfs / 20) * self._rng.standard_normal(n)).astype(np.float32)
        return out
