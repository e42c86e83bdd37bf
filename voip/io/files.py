"""Audio sources and sinks: files (any rate and channel count, resampled to 48 kHz mono), tones, silence.

A source hands out audio in the size the caller asks for; the media loop paces it
in real time. Files are streamed block by block, never loaded whole.
"""

from __future__ import annotations

import contextlib
import math
import struct
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import soxr

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.errors import VoipError

SINK_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, fmt (PCM, mono, 16 bits), data: 44 bytes
WAV_STAMP_S = 1.0  # how often a WAV's header is brought up to date: what a cut recording can lose
READ_BLOCK = 4096


def read_48k(path: str | Path) -> Pcm:
    """A whole (short) audio file as 48 kHz mono: for tests and benchmarks, not for streaming."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono: Pcm = data.mean(axis=1).astype(np.float32)
    return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else mono


def bundled_speech() -> Path:
    """A few seconds of synthesized speech (espeak-ng) shipped with the package."""
    return Path(str(resources.files("voip") / "data" / "speech.wav"))


class Source(Protocol):
    description: str

    def read(self, samples: int) -> Pcm:
        """Up to `samples` of audio; fewer only at the end, then an empty array forever."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    description: str

    def write(self, pcm: Pcm) -> None: ...

    def close(self) -> None: ...


class FileSource:
    def __init__(self, path: str | Path) -> None:
        self.description = str(path)
        problem = _unreadable(Path(path))
        if problem:
            raise VoipError(f"cannot read audio file {str(path)!r}: {problem}")
        try:
            self._file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise VoipError(f"cannot read audio file {str(path)!r}: {_reason(exc)}") from exc
        self.duration_s = self._file.frames / self._file.samplerate if self._file.frames > 0 else None
        self._resampler = (
            soxr.ResampleStream(self._file.samplerate, SAMPLE_RATE, 1, dtype="float32")
            if self._file.samplerate != SAMPLE_RATE
            else None
        )
        self._pending = np.zeros(0, dtype=np.float32)
        self._eof = False

    def read(self, samples: int) -> Pcm:
        while len(self._pending) < samples and not self._eof:
            block = self._file.read(READ_BLOCK, dtype="float32", always_2d=True)
            self._eof = len(block) < READ_BLOCK
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if self._resampler is not None:
                mono = self._resampler.resample_chunk(mono, last=self._eof)
            self._pending = np.concatenate((self._pending, mono.astype(np.float32, copy=False)))
        out: Pcm = self._pending[:samples]
        self._pending = self._pending[samples:]
        return out

    def close(self) -> None:
        self._file.close()


class ToneSource:
    """A sine at -12 dBFS, endless: for checking a path without a microphone."""

    def __init__(self, hz: float) -> None:
        if not 0 < hz < SAMPLE_RATE / 2:
            raise VoipError(f"tone frequency must be between 0 and {SAMPLE_RATE // 2} Hz, not {hz:g}")
        self.description = f"tone:{hz:g}"
        self._step = 2 * math.pi * hz / SAMPLE_RATE
        self._n = 0

    def read(self, samples: int) -> Pcm:
        phase = (self._n + np.arange(samples)) * self._step
        self._n += samples
        tone: Pcm = (0.25 * np.sin(phase)).astype(np.float32)
        return tone

    def close(self) -> None:
        pass


class SilenceSource:
    description = "silence"

    def read(self, samples: int) -> Pcm:
        return np.zeros(samples, dtype=np.float32)

    def close(self) -> None:
        pass


class FileSink:
    """FLAC or Ogg Vorbis through libsndfile."""

    def __init__(self, path: str | Path) -> None:
        self.description = str(path)
        fmt, subtype = SINK_FORMATS[Path(path).suffix.lower()]
        try:
            self._file = sf.SoundFile(str(path), "w", samplerate=SAMPLE_RATE, channels=1, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise VoipError(f"cannot write audio file {str(path)!r}: {_reason(exc)}") from exc

    def write(self, pcm: Pcm) -> None:
        try:
            self._file.write(np.clip(pcm, -1.0, 1.0))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise VoipError(f"cannot write audio file {self.description!r}: {_reason(exc)}") from exc

    def close(self) -> None:
        self._file.close()


class WavSink:
    """16-bit PCM WAV whose header says how long the file is, brought up to date every
    WAV_STAMP_S: a recording cut short (SIGKILL, a crash, power loss) stays a valid WAV up to
    its last stamp for every reader, Python's `wave` too, not only those that guess from the size."""

    def __init__(self, path: str | Path) -> None:
        self.description = str(path)
        self._data_bytes = 0
        self._stamped_bytes = 0
        self._failed = False  # a write failed and said so: closing adds no second error
        try:
            self._file = open(path, "wb")  # noqa: SIM115 -- closed by close(), as the sink lives
            self._file.write(self._header())
        except OSError as exc:
            raise VoipError(f"cannot write audio file {self.description!r}: {exc.strerror or exc}") from exc

    def _header(self) -> bytes:
        size = self._data_bytes
        return WAV_HEADER.pack(
            b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16, b"data", size
        )

    def write(self, pcm: Pcm) -> None:
        samples = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
        try:
            self._file.write(samples.tobytes())
            self._data_bytes += 2 * len(samples)
            if self._data_bytes - self._stamped_bytes >= 2 * SAMPLE_RATE * WAV_STAMP_S:
                self._stamp()
        except OSError as exc:  # the disk is full, or went away
            self._failed = True
            raise VoipError(f"cannot write audio file {self.description!r}: {exc.strerror or exc}") from exc

    def _stamp(self) -> None:
        """The samples reach the file first, then the header that counts them."""
        self._file.flush()
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(self._header())
        self._file.seek(end)
        self._file.flush()
        self._stamped_bytes = self._data_bytes

    def close(self) -> None:
        try:
            self._stamp()
            self._file.close()
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.close()  # what is still buffered cannot be written: the file keeps its last stamp
            if not self._failed:
                raise VoipError(f"cannot write audio file {self.description!r}: {exc.strerror or exc}") from exc


class NullSink:
    description = "null"

    def write(self, pcm: Pcm) -> None:
        pass

    def close(self) -> None:
        pass


def open_source(spec: str) -> Source:
    """`--in` other than a microphone: a file path, speech (the bundled sample), tone:HZ or silence."""
    if spec == "speech":
        return FileSource(bundled_speech())
    if spec == "silence":
        return SilenceSource()
    if spec.startswith("tone:"):
        try:
            return ToneSource(float(spec[5:]))
        except ValueError:
            raise VoipError(f"bad tone {spec!r}: expected tone:HZ, e.g. tone:440") from None
    return FileSource(spec)


def open_sink(spec: str) -> Sink:
    """`--out` other than a speaker: a .wav/.flac/.ogg path or null."""
    if spec == "null":
        return NullSink()
    path = Path(spec)
    if path.suffix.lower() not in SINK_FORMATS:
        raise VoipError(f"cannot record to {spec!r}: use a file name ending in " + ", ".join(SINK_FORMATS))
    if not path.parent.is_dir():
        raise VoipError(f"cannot write audio file {spec!r}: folder {str(path.parent)!r} does not exist")
    return WavSink(path) if path.suffix.lower() == ".wav" else FileSink(path)


def _unreadable(path: Path) -> str | None:
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "it is a folder"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libsndfile prefixes its message with the path we already show
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text
