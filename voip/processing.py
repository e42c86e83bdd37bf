"""Speakerphone processing between the devices and the codec: echo cancellation, noise
suppression, gain control and a high-pass filter.

A call through speakers hears itself: what we play reaches our microphone one room later,
and the peer hears its own voice a round trip late. The canceller needs what we play (the
far-end reference, `render`) and what we capture (`capture`), and a hint of the delay
between them (device output + room + device input), which the devices measure.

The work is WebRTC's audio processing module (AEC3, NS, AGC2) through livekit's binding:
not something to write by hand. `AudioProcessor` keeps it behind frames in and frames out,
as `voip.codec` does for libopus, and measures what it does (`ProcessingStats`) from the
audio itself, because the binding reports nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.errors import VoipError

CHUNK = SAMPLE_RATE // 100  # the module works on 10 ms
FAR_ACTIVE_DBFS = -50.0  # the reference counts as playing above this level
ERLE_MEMORY = 0.995  # per 10 ms chunk: about 2 s of memory for the echo return loss enhancement
FAR_HOLD_CHUNKS = 50  # a chunk's echo may come this long (0.5 s) after the reference played
# Geigel's double-talk detector: a captured peak above half the reference's recent peak is
# the near end talking (an echo path loses at least 6 dB), and says nothing about the echo.
GEIGEL_THRESHOLD = 0.5
SILENT_POWER = 1e-10  # power floor for levels and ratios (-100 dBFS)


@dataclass(frozen=True)
class ProcessingSettings:
    echo_cancellation: bool = True
    noise_suppression: bool = True
    gain_control: bool = True
    high_pass: bool = True

    @property
    def any(self) -> bool:
        return self.echo_cancellation or self.noise_suppression or self.gain_control or self.high_pass

    def describe(self) -> str:
        parts = [
            name
            for name, on in (
                ("echo cancellation", self.echo_cancellation),
                ("noise suppression", self.noise_suppression),
                ("gain control", self.gain_control),
            )
            if on
        ]
        return ", ".join(parts) or "high-pass filter only"


@dataclass(frozen=True)
class ProcessingStats:
    erle_db: float | None  # echo return loss enhancement while the far end talked alone; None before it did
    echo_delay_ms: float  # the delay hint given to the canceller: device output + device input
    input_level_dbfs: float  # what the microphone captured, before processing (mean power)
    output_level_dbfs: float  # what goes to the encoder, after


class Backend(Protocol):
    """10 ms of 16-bit mono at 48 kHz at a time; `process` changes its chunk in place."""

    def process_reverse(self, chunk: bytearray) -> None: ...

    def process(self, chunk: bytearray, delay_ms: int) -> None: ...


class WebRtcBackend:
    """WebRTC's audio processing module, through livekit's wheels (which bundle libwebrtc)."""

    def __init__(self, settings: ProcessingSettings) -> None:
        try:
            from livekit import rtc
        except ImportError as exc:  # the package is a dependency: a broken install
            raise VoipError(
                f"echo cancellation needs the livekit package ({exc}); reinstall voip, or use --no-aec --no-ns --no-agc"
            ) from exc
        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=settings.echo_cancellation,
            noise_suppression=settings.noise_suppression,
            high_pass_filter=settings.high_pass,
            auto_gain_control=settings.gain_control,
        )
        self._echo = settings.echo_cancellation
        self._delay_ms: int | None = None

    def process_reverse(self, chunk: bytearray) -> None:
        self._apm.process_reverse_stream(self._rtc.AudioFrame(chunk, SAMPLE_RATE, 1, CHUNK))

    def process(self, chunk: bytearray, delay_ms: int) -> None:
        if self._echo and delay_ms != self._delay_ms:  # kept between calls: each call through the FFI costs
            self._apm.set_stream_delay_ms(delay_ms)
            self._delay_ms = delay_ms
        frame = self._rtc.AudioFrame(chunk, SAMPLE_RATE, 1, CHUNK)
        self._apm.process_stream(frame)
        chunk[:] = frame.data.cast("B")


class AudioProcessor:
    """What we capture goes through `capture` before the encoder; what we play, through
    `render` before the device. Blocks of any length: both are cut into 10 ms chunks, and a
    capture block that is not a whole number of chunks comes out one chunk late."""

    def __init__(self, settings: ProcessingSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self._backend = backend if backend is not None else WebRtcBackend(settings)
        self._render_rest = np.zeros(0, dtype=np.float32)
        self._capture_in = np.zeros(0, dtype=np.float32)
        self._capture_out = np.zeros(0, dtype=np.float32)
        self._delay_ms = 0.0
        self._far_peaks: deque[float] = deque(maxlen=FAR_HOLD_CHUNKS)  # of the reference's latest chunks
        self._echo_in = self._echo_out = 0.0  # powers while the far end played, forgetting
        self._echo_seen = False
        self._in_power = self._out_power = 0.0  # all captured chunks, forgetting

    def render(self, pcm: Pcm) -> None:
        """Audio about to be played: the reference the canceller subtracts."""
        pcm = np.concatenate((self._render_rest, pcm)) if len(self._render_rest) else pcm
        whole = len(pcm) // CHUNK * CHUNK
        for start in range(0, whole, CHUNK):
            chunk = pcm[start : start + CHUNK]
            loud = _power(chunk) > 10 ** (FAR_ACTIVE_DBFS / 10)
            self._far_peaks.append(float(np.max(np.abs(chunk))) if loud else 0.0)
            self._backend.process_reverse(_to_int16(chunk))
        self._render_rest = pcm[whole:]

    def capture(self, pcm: Pcm, echo_delay_s: float) -> Pcm:
        """Captured audio in, processed audio out (as long); `echo_delay_s` is how long the
        devices hold audio, output and input together: where in the reference to look."""
        self._delay_ms = max(0.0, echo_delay_s * 1000.0)
        pending = np.concatenate((self._capture_in, pcm)) if len(self._capture_in) else pcm
        whole = len(pending) // CHUNK * CHUNK
        processed = [self._process(pending[start : start + CHUNK]) for start in range(0, whole, CHUNK)]
        self._capture_in = pending[whole:]
        out = np.concatenate([self._capture_out, *processed]) if processed else self._capture_out
        if len(out) < len(pcm):  # the first block that is not whole chunks: a chunk of silence ahead
            out = np.concatenate((np.zeros(len(pcm) - len(out), dtype=np.float32), out))
        self._capture_out = out[len(pcm) :]
        return out[: len(pcm)]

    def _process(self, chunk: Pcm) -> Pcm:
        data = _to_int16(chunk)
        self._backend.process(data, round(self._delay_ms))
        out = np.frombuffer(data, dtype=np.int16).astype(np.float32) / 32768.0
        before, after = _power(chunk), _power(out)
        self._in_power = ERLE_MEMORY * self._in_power + (1 - ERLE_MEMORY) * before
        self._out_power = ERLE_MEMORY * self._out_power + (1 - ERLE_MEMORY) * after
        far_peak = max(self._far_peaks, default=0.0)
        if far_peak > 0 and float(np.max(np.abs(chunk))) < GEIGEL_THRESHOLD * far_peak:  # far end alone: echo
            self._echo_seen = True
            self._echo_in = ERLE_MEMORY * self._echo_in + (1 - ERLE_MEMORY) * before
            self._echo_out = ERLE_MEMORY * self._echo_out + (1 - ERLE_MEMORY) * after
        return out

    def stats(self) -> ProcessingStats:
        erle = None
        if self._echo_seen and self.settings.echo_cancellation:
            erle = _db(self._echo_in) - _db(self._echo_out)
        return ProcessingStats(
            erle_db=erle,
            echo_delay_ms=self._delay_ms,
            input_level_dbfs=_db(self._in_power),
            output_level_dbfs=_db(self._out_power),
        )


def _to_int16(pcm: Pcm) -> bytearray:
    return bytearray(np.clip(np.round(pcm * 32768.0), -32768, 32767).astype(np.int16).tobytes())


def _power(pcm: Pcm) -> float:
    return float(np.dot(pcm, pcm)) / len(pcm) if len(pcm) else 0.0


def _db(power: float) -> float:
    return 10.0 * math.log10(max(power, SILENT_POWER))
