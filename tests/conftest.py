"""Shared helpers: real speech, PESQ after alignment, the CLI as a subprocess, free local ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from voip import SAMPLE_RATE
from voip.io.files import bundled_speech

CLI_TIMEOUT_S = 60


def load_48k(path: str | Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1).astype(np.float32)
    return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else mono


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    return load_48k(bundled_speech())


def align(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Shift `degraded` onto `reference` by the lag of peak cross-correlation."""
    n = len(reference) + len(degraded)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(degraded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr))
    if lag > size // 2:
        lag -= size
    degraded = degraded[lag:] if lag >= 0 else np.concatenate((np.zeros(-lag, dtype=degraded.dtype), degraded))
    length = min(len(reference), len(degraded))
    return reference[:length], degraded[:length], lag


def pesq_wb(reference: np.ndarray, degraded: np.ndarray) -> float:
    """ITU-T P.862.2 wideband PESQ of 48 kHz signals, after alignment."""
    from pesq import pesq

    ref, deg, _ = align(reference, degraded)
    ref16 = soxr.resample(ref, SAMPLE_RATE, 16000)
    deg16 = soxr.resample(deg, SAMPLE_RATE, 16000)
    return float(pesq(16000, ref16, deg16, "wb"))


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def voip_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "voip", *args]


def run_voip(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(voip_command(*args), capture_output=True, text=True, timeout=timeout)


class Processes:
    """Background processes that are killed (by PID, with their group) when the test ends."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        return self.adopt(proc)

    def adopt(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """Kill this one too at the end (it must have been started with start_new_session=True)."""
        self._procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.cleanup()


ROOT = Path(__file__).resolve().parent.parent


VIRTUAL_AUDIO = str(ROOT / "scripts" / "virtual-audio")


def start_virtual_audio(state: Path) -> dict[str, str]:
    """A private PipeWire null device in `state`; returns the environment that reaches it."""
    env = {**os.environ, "VOIP_AUDIO_DIR": str(state)}
    started = subprocess.run([VIRTUAL_AUDIO, "start"], env=env, capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        pytest.fail(f"scripts/virtual-audio could not start a device: {started.stderr.strip()}")
    for line in started.stdout.splitlines():  # export NAME='value'
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return env


def stop_virtual_audio(state: Path) -> None:
    """Stops, by PID, what start_virtual_audio started."""
    subprocess.run([VIRTUAL_AUDIO, "stop"], env={**os.environ, "VOIP_AUDIO_DIR": str(state)}, timeout=30)


@pytest.fixture(scope="session")
def audio_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A sound device for PortAudio: the one scripts/test started, else a private virtual one.

    Never skips: a test that needs a device fails when none can be had (DESIGN.md 6).
    """
    if _portaudio_sees_devices(dict(os.environ)):
        yield
        return
    state = tmp_path_factory.mktemp("virtual-audio")
    env = start_virtual_audio(state)
    saved = dict(os.environ)
    os.environ.update(env)  # for PortAudio in this process, imported after this point
    try:
        if not _portaudio_sees_devices(env):
            pytest.fail("scripts/virtual-audio started, but PortAudio sees no device")
        yield
    finally:
        stop_virtual_audio(state)
        os.environ.clear()
        os.environ.update(saved)


def _portaudio_sees_devices(env: dict[str, str]) -> bool:
    """Asked in a subprocess: PortAudio reads the device list once per process."""
    probe = "import sounddevice as sd; d = sd.query_devices(); print(any(x['max_input_channels'] for x in d))"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    return result.stdout.strip() == "True"
