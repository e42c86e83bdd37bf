"""Microphones and speakers through sounddevice (PortAudio).

PortAudio calls our callbacks on a real-time thread, so they only check the status
flags, copy, and do one non-blocking queue operation. The queue is a Unix datagram
socket pair: a datagram is one audio block, the kernel does the locking, and the
media loop waits on audio and network packets in the same `select`.

* Microphone: the callback sends [ADC time, samples] per block; the loop reads
  them as they come, so captured audio is encoded without waiting for a tick.
* Speaker: the loop keeps two blocks queued (more after an underflow); the callback
  takes one and sends back a request carrying the DAC time of the block it took, and
  the loop answers with the next one. Playout is therefore paced by the device
  clock, not by ours.

sounddevice is imported on first use: without PortAudio, file-only commands work.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections import deque
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import soxr

from voip import SAMPLE_RATE
from voip.errors import DeviceGone, VoipError
from voip.io.realtime import CALLBACK_PRIORITY, make_this_thread_realtime

if TYPE_CHECKING:
    from voip.codec import Pcm

Kind = Literal["input", "output"]
PORTAUDIO_HINT = "audio devices need the PortAudio library: install it with `apt-get install libportaudio2`"
STALL_S = 1.0  # a device that delivers nothing for this long has gone away (blocks come every <= 60 ms)
START_S = 5.0  # ... but its first block may take longer: a sound server links a new stream first
SOCKET_BUFFER = 1 << 20
STAMP = np.dtype(np.float64)


def sounddevice() -> ModuleType:
    """The sounddevice module, or one clear VoipError when PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError:  # sounddevice could not load libportaudio
        raise VoipError(PORTAUDIO_HINT) from None
    module: ModuleType = sd
    return module


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    host_api: str
    input_channels: int
    output_channels: int
    default_rate: float
    default_input: bool
    default_output: bool

    def channels(self, kind: Kind) -> int:
        return self.input_channels if kind == "input" else self.output_channels

    @property
    def label(self) -> str:
        return f"{self.index} {self.name!r}"


def list_devices() -> list[Device]:
    sd = sounddevice()
    apis = [api["name"] for api in sd.query_hostapis()]
    default_in, default_out = sd.default.device
    return [
        Device(
            index=info["index"],
            name=info["name"],
            host_api=apis[info["hostapi"]],
            input_channels=info["max_input_channels"],
            output_channels=info["max_output_channels"],
            default_rate=float(info["default_samplerate"]),
            default_input=info["index"] == default_in,
            default_output=info["index"] == default_out,
        )
        for info in sd.query_devices()
    ]


def find_device(name: str, kind: Kind, devices: list[Device] | None = None) -> Device:
    """`name` is an index, a (part of a) device name, or "" for the default device."""
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.channels(kind) > 0]
    what, whats = ("microphone", "microphones") if kind == "input" else ("speaker", "speakers")
    if not usable:
        raise VoipError(
            f"no {what} ({kind} device) found: is a sound server running? "
            "(on a machine without sound hardware, scripts/virtual-audio provides one)"
        )
    if not name:
        default = [d for d in usable if (d.default_input if kind == "input" else d.default_output)]
        return (default or usable)[0]
    if name.isdigit():
        for d in usable:
            if d.index == int(name):
                return d
        raise VoipError(f"no {what} ({kind} device) has index {name}; `voip devices` lists them")
    exact = [d for d in usable if d.name.lower() == name.lower()]
    matches = exact or [d for d in usable if name.lower() in d.name.lower()]
    if not matches:
        raise VoipError(f"no {what} ({kind} device) matches {name!r}; `voip devices` lists them")
    if len(matches) > 1:
        listed = ", ".join(d.label for d in matches)
        raise VoipError(f"{name!r} matches several {whats} ({listed}); give the index or a longer name")
    return matches[0]


def _stream_rate(sd: ModuleType, device: Device, kind: Kind) -> int:
    """48 kHz when the device can; else its own default rate (we resample)."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    for rate in dict.fromkeys((SAMPLE_RATE, int(device.default_rate))):
        try:
            check(device=device.index, channels=1, dtype="float32", samplerate=rate)
            return rate
        except Exception:  # PortAudioError or ValueError: this rate will not do
            continue
    raise VoipError(
        f"audio device {device.label} supports neither {SAMPLE_RATE} Hz nor its default "
        f"{device.default_rate:g} Hz in mono float32"
    )


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    loop_end, device_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for end in (loop_end, device_end):
        end.setblocking(False)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    return loop_end, device_end


class _DeviceStream:
    """What microphone and speaker share: the stream, the socket pair, the watchdog, the clock."""

    portaudio_stuck = False  # a device vanished: PortAudio's threads for it (and its siblings) never return

    def __init__(self, device: Device, kind: Kind, frame_samples: int) -> None:
        self.device = device
        self.description = ("mic:" if kind == "input" else "speaker:") + device.name
        self._sd = sounddevice()
        self.rate = _stream_rate(self._sd, device, kind)
        self.block = round(frame_samples * self.rate / SAMPLE_RATE)
        self._loop_end, self._device_end = _socket_pair()
        self._stamp = np.zeros(1, dtype=STAMP)  # written by the callback, sent without allocating
        self._last_activity: float | None = None
        self._running = False  # a first block came
        self.pa_offset = 0.0  # PortAudio's clock minus time.monotonic
        # PortAudio's callback thread got SCHED_FIFO (None before it first ran). The loop that
        # feeds the device asks too (voip.io.loop); one process, one permission: the same answer.
        self.callback_realtime: bool | None = None
        stream_class = self._sd.InputStream if kind == "input" else self._sd.OutputStream
        try:
            self.stream = stream_class(
                device=device.index,
                samplerate=self.rate,
                blocksize=self.block,
                channels=1,
                dtype="float32",
                latency="low",
                callback=self._callback,
            )
        except Exception as exc:  # sounddevice.PortAudioError, or ValueError for bad settings
            self._close_sockets()
            raise VoipError(f"cannot open audio device {device.label}: {exc}") from None

    def _callback(self, data: Any, frames: int, time_info: Any, status: Any) -> None:
        raise NotImplementedError

    def start(self, now: float) -> None:
        try:
            self.stream.start()
        except Exception as exc:
            raise VoipError(f"cannot start audio device {self.device.label}: {exc}") from None
        self._last_activity = now
        self.pa_offset = _clock_offset(self.stream)

    def fileno(self) -> int:
        return self._loop_end.fileno()

    def loop_was_away(self, seconds: float, now: float) -> None:
        """The loop that reads the device did not run for `seconds` until `now` (the process
        was stopped, or starved): the device's silence is counted only while it was watched."""
        if self._last_activity is not None:
            self._last_activity = min(now, self._last_activity + seconds)

    def check(self, now: float) -> None:
        """Raise when the device stopped: the stream died, or nothing came for STALL_S."""
        if self._last_activity is None:
            return
        limit = STALL_S if self._running else START_S
        if not self.stream.active or now - self._last_activity > limit:
            _DeviceStream.portaudio_stuck = True
            raise DeviceGone(f"audio device {self.device.label} stopped (unplugged, or the sound server went away)")

    def stop(self) -> None:
        """Stop the callbacks, so the counters are final (a last callback would find no audio)."""
        if not self.portaudio_stuck:  # streams of a lost server hang in abort(): leave them to the exit
            with contextlib.suppress(Exception):
                self.stream.abort()

    def close(self) -> None:
        self.stop()
        if not self.portaudio_stuck:
            with contextlib.suppress(Exception):
                self.stream.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._loop_end.close()
        self._device_end.close()


class Microphone(_DeviceStream):
    """A capture device as a clocked source: `fileno()` is readable when blocks arrived."""

    def __init__(self, device: Device, frame_samples: int) -> None:
        super().__init__(device, "input", frame_samples)
        self.input_overflows = 0
        self.level_dbfs = -math.inf  # of the last block: for the level meter
        self.input_delay = RunningMean()  # from the ADC to the loop, per block (includes the block)
        self._datagram = bytearray(STAMP.itemsize + 4 * self.block)
        self._resampler = (
            soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32") if self.rate != SAMPLE_RATE else None
        )

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if self.callback_realtime is None:  # the first call, on PortAudio's thread
            self.callback_realtime = make_this_thread_realtime(CALLBACK_PRIORITY)
        if status.input_overflow:
            self.input_overflows += 1
        self._stamp[0] = time_info.inputBufferAdcTime
        try:
            self._device_end.sendmsg((self._stamp.data, indata))
        except OSError:  # the loop fell a socket buffer behind: this block is lost
            self.input_overflows += 1

    def read_blocks(self, now: float) -> list[tuple[float, Pcm]]:
        """Audio captured since the last call, a block at a time: (ADC time of its first sample, 48 kHz PCM)."""
        blocks: list[tuple[float, Pcm]] = []
        while True:
            try:
                size = self._loop_end.recv_into(self._datagram)
            except (BlockingIOError, InterruptedError):
                break
            adc = float(np.frombuffer(self._datagram, STAMP, 1)[0]) - self.pa_offset
            pcm = np.frombuffer(self._datagram, np.float32, (size - STAMP.itemsize) // 4, STAMP.itemsize).copy()
            self.input_delay.add(now - adc)
            blocks.append((adc, pcm if self._resampler is None else self._resampler.resample_chunk(pcm)))
        if blocks:
            self._last_activity = now
            self._running = True
            last = blocks[-1][1]
            power = float(np.dot(last, last)) / max(1, len(last))
            self.level_dbfs = 10 * math.log10(power) if power > 0 else -math.inf
        return blocks


class Speaker(_DeviceStream):
    """A playback device as a clocked sink: `fileno()` is readable when it wants audio."""

    # Blocks kept ahead of the device. One would do for a device that asks every 20 ms, but
    # devices ask in bursts: on a 1024-sample PipeWire cycle, every 16th 960-sample block is
    # asked for right after the one before, before the loop can answer. Two leave the loop a
    # whole block to answer in; each underflow adds one more, up to MAX_QUEUE_BLOCKS.
    QUEUE_BLOCKS = 2
    MAX_QUEUE_BLOCKS = 4
    # PortAudio may call twice in a row as the stream starts, before the loop has answered the
    # first request: start with one block more (silence), which the first requests use up.
    START_BLOCKS = QUEUE_BLOCKS + 1

    def __init__(self, device: Device, frame_samples: int) -> None:
        super().__init__(device, "output", frame_samples)
        self.output_underflows = 0
        self.queue_blocks = self.QUEUE_BLOCKS
        self.output_delay = RunningMean()  # from leaving the loop to the DAC, per played block
        self._sent_at: deque[float] = deque()  # when each queued block left the loop
        self._pending = np.zeros(0, dtype=np.float32)
        self._request = np.zeros(1, dtype=STAMP)
        self._resampler = (
            soxr.ResampleStream(SAMPLE_RATE, self.rate, 1, dtype="float32") if self.rate != SAMPLE_RATE else None
        )

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        if self.callback_realtime is None:  # the first call, on PortAudio's thread
            self.callback_realtime = make_this_thread_realtime(CALLBACK_PRIORITY)
        if status.output_underflow:
            self.output_underflows += 1
        try:
            self._device_end.recv_into(outdata)
            self._stamp[0] = time_info.outputBufferDacTime
        except OSError:  # nothing queued: the loop is late; play silence
            outdata.fill(0)
            self.output_underflows += 1
            self._stamp[0] = math.nan
        with contextlib.suppress(OSError):  # only when the loop stopped reading; the watchdog reports that
            self._device_end.send(self._stamp.data)

    def start(self, now: float) -> None:
        for _ in range(self.START_BLOCKS):
            self._send_block(np.zeros(self.block, dtype=np.float32), now)
        super().start(now)

    @property
    def wants_audio(self) -> bool:
        return len(self._sent_at) < self.queue_blocks

    def take_requests(self, now: float) -> None:
        """Read the device's requests: each one means a queued block went to the DAC."""
        while True:
            try:
                self._loop_end.recv_into(self._request.data)
            except (BlockingIOError, InterruptedError):
                break
            self._last_activity = now
            self._running = True
            dac = float(self._request[0])
            if math.isnan(dac):  # an underflow took nothing: the loop answers too late for this device
                self.queue_blocks = min(self.queue_blocks + 1, self.MAX_QUEUE_BLOCKS)
            elif self._sent_at:
                self.output_delay.add(dac - self.pa_offset - self._sent_at.popleft())

    def write(self, pcm: Pcm, now: float) -> None:
        if self._resampler is None and not len(self._pending) and len(pcm) == self.block:
            self._send_block(pcm, now)  # the usual case: one frame is one device block
            return
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        self._pending = np.concatenate((self._pending, pcm)) if len(self._pending) else pcm
        while len(self._pending) >= self.block:
            block, self._pending = self._pending[: self.block], self._pending[self.block :]
            self._send_block(block, now)

    def _send_block(self, block: Pcm, now: float) -> None:
        try:
            self._loop_end.send(np.ascontiguousarray(block, dtype=np.float32).data)
        except OSError:  # the device stopped taking blocks; the watchdog reports it
            return
        self._sent_at.append(now)


class RunningMean:
    """A mean kept as it goes: a long call adds a block every 20 ms."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def _clock_offset(stream: Any) -> float:
    """PortAudio's stream time minus time.monotonic(), read side by side."""
    best, offset = math.inf, 0.0
    for _ in range(5):
        before = time.monotonic()
        pa_time = float(stream.time)
        after = time.monotonic()
        if after - before < best:
            best, offset = after - before, pa_time - (before + after) / 2
    return offset
