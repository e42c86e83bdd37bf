"""What a command reads and where its received audio goes: files and devices, opened together."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from typing import Any

from voip.errors import VoipError
from voip.io.audio import Microphone, Speaker, find_device
from voip.io.files import Sink, Source, open_sink, open_source
from voip.io.loop import Endpoint
from voip.processing import AudioProcessor, ProcessingSettings
from voip.room import Room, RoomSpec
from voip.session import Session
from voip.stats import StreamStats


@dataclass
class AudioIO:
    """What a command reads and where its received audio goes: files and devices."""

    source: Source | None = None
    mic: Microphone | None = None
    sinks: list[Sink] = field(default_factory=list)
    speaker: Speaker | None = None
    processor: AudioProcessor | None = None  # between the microphone (or a room) and the encoder
    room: Room | None = None

    @property
    def input_description(self) -> str:
        if self.mic is not None:
            return self.mic.description
        return self.source.description if self.source is not None else "-"

    @property
    def processing_description(self) -> str:
        """What stands between the capture and the encoder, for the start-up line."""
        parts = [self.room.spec.describe()] if self.room is not None else []
        if self.processor is not None:
            parts.append(self.processor.settings.describe())
        return f" -> {' -> '.join(parts)}" if parts else ""

    @property
    def output_description(self) -> str:
        names = [self.speaker.description] if self.speaker else []
        return ", ".join(names + [sink.description for sink in self.sinks]) or "-"

    def endpoint(self, session: Session, sock: socket.socket, **extra: Any) -> Endpoint:
        return Endpoint(
            session,
            sock,
            source=self.source,
            sinks=self.sinks,
            mic=self.mic,
            speaker=self.speaker,
            processor=self.processor,
            room=self.room,
            **extra,
        )

    def device_counters(self, stats: StreamStats) -> StreamStats:
        """The session's statistics with what the devices and the processing counted."""
        processed = self.processor.stats() if self.processor is not None else None
        return dataclasses.replace(
            stats,
            input_overflows=self.mic.input_overflows if self.mic else 0,
            output_underflows=self.speaker.output_underflows if self.speaker else 0,
            audio_scheduling=self.audio_scheduling,
            erle_db=processed.erle_db if processed else None,
            echo_delay_ms=processed.echo_delay_ms if processed else None,
            input_level_dbfs=processed.input_level_dbfs if processed else None,
            output_level_dbfs=processed.output_level_dbfs if processed else None,
        )

    @property
    def audio_scheduling(self) -> str | None:
        """Whether the device callbacks that ran got SCHED_FIFO (voip.io.realtime): real-time or normal."""
        granted = [d.callback_realtime for d in (self.mic, self.speaker) if d is not None]
        if not any(g is not None for g in granted):
            return None
        return "real-time" if all(g is not False for g in granted) else "normal"

    def close(self) -> None:
        for part in (self.mic, self.speaker, self.source, *self.sinks):
            if part is not None:
                part.close()


def open_audio(
    source_spec: str | None,
    sink_specs: list[str],
    frame_samples: int,
    processing: ProcessingSettings | None = None,
    room: RoomSpec | None = None,
) -> AudioIO:
    """Open everything or nothing: on an error, what was opened is closed again.

    `processing` applies where there is a room: a microphone, or a simulated `room`; a file
    or a tone has none, so it passes untouched."""
    io = AudioIO()
    try:
        if source_spec is not None:
            kind, _, name = source_spec.partition(":")
            if kind == "mic":
                io.mic = Microphone(find_device(name, "input"), frame_samples)
            else:
                io.source = open_source(source_spec)
        for spec in sink_specs:
            kind, _, name = spec.partition(":")
            if kind != "speaker":
                io.sinks.append(open_sink(spec))
            elif io.speaker is not None:
                raise VoipError("one speaker per stream; add file sinks with more --out options")
            else:
                io.speaker = Speaker(find_device(name, "output"), frame_samples)
        if room is not None:
            io.room = Room(room)
        if processing is not None and processing.any and (io.mic is not None or io.room is not None):
            io.processor = AudioProcessor(processing)
    except BaseException:
        io.close()
        raise
    return io
