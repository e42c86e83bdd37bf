"""Mouth-to-ear latency through real devices, measured two ways and compared.

The whole, acoustically: the speaker plays a click; the microphone hears it; the
click goes through the chain (encode, network, jitter buffer, decode) and the
speaker plays it again, a little quieter (ECHO_GAIN), and the microphone hears
that echo. Both are found in the captured signal by a matched filter, and their
distance on the capture clock (PortAudio's ADC times) is the mouth-to-ear delay:
the device input latency is the same for both and cancels.

The parts, from timestamps: device input (ADC time to the loop, past the block),
frame and codec lookahead (fixed), network (send to arrival), jitter buffer
(arrival to playout) and device output (loop to DAC time). They should add up to
the whole; if not, a part is hidden somewhere.

Pure numpy; the CLI feeds it the captured blocks and the measured delays.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from voip import SAMPLE_RATE
from voip.codec import Pcm
from voip.red import RED_PAYLOAD_TYPE

CLICK_PERIOD_S = 1.0
CLICK_MS = 10.0
ECHO_GAIN = 0.25  # the chain's output level while measuring: echoes of echoes die out fast
MIN_ECHO_S = 0.002


def click() -> Pcm:
    """A 10 ms Hann-windowed chirp, 500 -> 3500 Hz: sharp under correlation and kept by Opus."""
    n = int(CLICK_MS * SAMPLE_RATE / 1000)
    t = np.arange(n) / SAMPLE_RATE
    sweep = 500.0 * t + (3000.0 / (2 * CLICK_MS / 1000)) * t * t
    pulse: Pcm = (0.5 * np.hanning(n) * np.sin(2 * np.pi * sweep)).astype(np.float32)
    return pulse


class ClickTrain:
    """Mixes a click into the speaker's audio every CLICK_PERIOD_S (first one after one period)."""

    def __init__(self) -> None:
        self._click = click()
        self._period = int(CLICK_PERIOD_S * SAMPLE_RATE)
        self._position = 0  # samples written so far
        self.clicks = 0

    def mix(self, pcm: Pcm) -> Pcm:
        out: Pcm = (pcm * ECHO_GAIN).astype(np.float32)
        start, end = self._position, self._position + len(pcm)
        first = (start // self._period) * self._period
        for onset in range(max(first, self._period), end, self._period):  # clicks overlapping this frame
            lo, hi = max(onset, start), min(onset + len(self._click), end)
            if hi > lo:
                out[lo - start : hi - start] += self._click[lo - onset : hi - onset]
                if lo == onset:
                    self.clicks += 1
        self._position = end
        return out


def find_echoes(blocks: list[tuple[float, Pcm]]) -> list[float]:
    """Seconds from each click the microphone heard to its echo, in captured (ADC time, block) pairs."""
    if not blocks:
        return []
    audio = np.concatenate([pcm for _, pcm in blocks])
    times = np.concatenate([adc + np.arange(len(pcm)) / SAMPLE_RATE for adc, pcm in blocks])
    template = click()
    if len(audio) < 2 * len(template):
        return []
    size = 1 << int(np.ceil(np.log2(len(audio) + len(template))))
    spectrum = np.fft.rfft(audio, size) * np.conj(np.fft.rfft(template, size))
    score = np.fft.irfft(spectrum, size)[: len(audio) - len(template) + 1]
    strongest = float(score.max())
    if strongest <= 0:
        return []
    gap = int(CLICK_PERIOD_S * SAMPLE_RATE / 2)
    echoes: list[float] = []
    position = 0
    while position < len(score):
        # the next direct click: a peak near full strength
        above = np.nonzero(score[position:] > 0.6 * strongest)[0]
        if not len(above):
            break
        start = position + int(above[0])
        onset = start + int(np.argmax(score[start : start + int(CLICK_MS * SAMPLE_RATE / 1000)]))
        window = score[onset + int(MIN_ECHO_S * SAMPLE_RATE) : onset + gap]
        if len(window) and window.max() > 0.4 * ECHO_GAIN * score[onset]:
            echo = onset + int(MIN_ECHO_S * SAMPLE_RATE) + int(np.argmax(window))
            echoes.append(float(times[echo] - times[onset]))
        position = onset + gap
    return echoes


class LatencyProbe:
    """Rides along a loopback: clicks into the speaker, the capture kept, packets timed in flight."""

    def __init__(self, payload_type: int) -> None:
        self.train = ClickTrain()
        self.captured_blocks: list[tuple[float, Pcm]] = []
        self.network_delays: list[float] = []
        self._payload_type = payload_type
        self._sent: dict[int, float] = {}

    def captured(self, adc: float, pcm: Pcm) -> None:
        self.captured_blocks.append((adc, pcm))

    def playing(self, pcm: Pcm) -> Pcm:
        return self.train.mix(pcm)

    def sent(self, data: bytes, now: float) -> None:
        if self._is_media(data):
            self._sent[_sequence(data)] = now

    def received(self, data: bytes, now: float) -> None:
        if self._is_media(data) and (sent := self._sent.pop(_sequence(data), None)) is not None:
            self.network_delays.append(now - sent)

    def _is_media(self, data: bytes) -> bool:
        return len(data) >= 12 and data[0] >> 6 == 2 and data[1] & 0x7F in (self._payload_type, RED_PAYLOAD_TYPE)


def _sequence(data: bytes) -> int:
    return int.from_bytes(data[2:4], "big")


@dataclass(frozen=True)
class LatencyReport:
    """Milliseconds. `whole_ms` is heard; the parts are timed; `floor_ms` is what no buffer can remove."""

    whole_ms: float
    device_input_ms: float
    frame_ms: float
    lookahead_ms: float
    network_ms: float
    jitter_buffer_ms: float
    device_output_ms: float
    clicks: int

    @property
    def parts_ms(self) -> float:
        return (
            self.device_input_ms
            + self.frame_ms
            + self.lookahead_ms
            + self.network_ms
            + self.jitter_buffer_ms
            + self.device_output_ms
        )

    @property
    def floor_ms(self) -> float:
        return self.device_input_ms + self.frame_ms + self.lookahead_ms + self.device_output_ms

    def describe(self) -> str:
        return (
            f"mouth-to-ear latency {self.whole_ms:.1f} ms (median of {self.clicks} clicks heard back)\n"
            f"  device input        {self.device_input_ms:6.1f} ms\n"
            f"  frame + lookahead   {self.frame_ms + self.lookahead_ms:6.1f} ms "
            f"({self.frame_ms:.0f} + {self.lookahead_ms:.1f})\n"
            f"  network             {self.network_ms:6.1f} ms\n"
            f"  jitter buffer       {self.jitter_buffer_ms:6.1f} ms\n"
            f"  device output       {self.device_output_ms:6.1f} ms\n"
            f"  parts add up to     {self.parts_ms:6.1f} ms\n"
            f"  whole / floor       {self.whole_ms / self.floor_ms:6.2f} "
            f"(floor = frame + lookahead + device buffers = {self.floor_ms:.1f} ms)"
        )


def mean_ms(values: list[float]) -> float:
    return 1000.0 * statistics.fmean(values) if values else 0.0


def median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values) if values else 0.0
