"""Audio codecs behind one small interface: Opus (libopus via opuslib-next) and L16 PCM.

Encoder and decoder state live in libopus; control calls (bitrate, FEC, DTX) go
through opuslib-next, while the per-frame encode/decode calls go straight to the
libopus functions it binds, into preallocated numpy buffers: opuslib's own decode
converts every sample through a Python list, which costs twice the codec itself.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voip import SAMPLE_RATE
from voip.errors import CodecError

Pcm = npt.NDArray[np.float32]

FRAME_MS_CHOICES = (10, 20, 40, 60)
MAX_PACKET_BYTES = 1500
MAX_FRAME_SAMPLES = SAMPLE_RATE * 120 // 1000  # longest Opus packet: 120 ms
# Samples per Opus frame at 48 kHz by TOC configuration (RFC 6716 3.1): SILK-only 10/20/40/60 ms,
# hybrid 10/20 ms, CELT-only 2.5/5/10/20 ms.
SAMPLES_PER_FRAME = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4
# libopus 1.3 adds FEC (LBRR) to super-wideband frames below this bitrate only at high
# expected loss (none up to 5% at 24 kbit/s), to wideband frames from 1%: docs/benchmarks.md
FEC_SUPERWIDEBAND_BITRATE = 32000
# While it protects, libopus is told to expect this much loss, whatever was measured: enough
# for FEC (LBRR) in its active frames. More makes it code every frame more defensively, and
# the frames that arrive, almost all of them, pay more than the lost ones gain: docs/benchmarks.md
FEC_LOSS_PERCENT = 1
OPUS_BANDWIDTH_WIDEBAND = 1103  # opus_defines.h
OPUS_BANDWIDTH_FULLBAND = 1105


@dataclass(frozen=True)
class OpusSettings:
    bitrate: int = 24000
    frame_ms: int = 20
    complexity: int = 10
    fec: bool = True
    dtx: bool = False
    expected_loss_percent: int = 0
    # While loss is expected and FEC is on, the encoder runs at least at this rate (0: never
    # more than `bitrate`): the FEC copy of a frame takes its bits from the frame it rides in,
    # so the rate rises to give it bits of its own.
    fec_bitrate: int = 32000

    def __post_init__(self) -> None:
        if self.frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"frame size must be one of {FRAME_MS_CHOICES} ms, not {self.frame_ms}")
        if not 6000 <= self.bitrate <= 510000:
            raise ValueError(f"Opus bitrate must be 6000..510000 bit/s, not {self.bitrate}")
        if self.fec_bitrate and not 6000 <= self.fec_bitrate <= 510000:
            raise ValueError(f"Opus FEC bitrate must be 0 or 6000..510000 bit/s, not {self.fec_bitrate}")
        if not 0 <= self.complexity <= 10:
            raise ValueError(f"Opus complexity must be 0..10, not {self.complexity}")

    @property
    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000


class Encoder(Protocol):
    frame_samples: int

    def encode(self, pcm: Pcm) -> bytes: ...

    def set_expected_loss(self, percent: int) -> None: ...


class Decoder(Protocol):
    def packet_samples(self, payload: bytes) -> int:
        """Duration of a packet without decoding it; ValueError if it is not a valid packet."""
        ...

    def has_fec(self, payload: bytes) -> bool: ...

    def decode(self, payload: bytes) -> Pcm: ...

    def decode_fec(self, payload: bytes, samples: int) -> Pcm: ...

    def conceal(self, samples: int) -> Pcm: ...


def _opus() -> ctypes.CDLL:
    try:
        import opuslib_next.api
    except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
        raise CodecError(f"cannot load libopus ({exc}); install it with: apt-get install libopus0") from exc
    lib: ctypes.CDLL = opuslib_next.api.libopus
    return lib


def opus_version() -> str:
    """libopus's own version string (`voip doctor`); CodecError if it cannot be loaded."""
    lib = _opus()
    lib.opus_get_version_string.restype = ctypes.c_char_p
    return str(lib.opus_get_version_string().decode())


class OpusEncoder:
    """Mono 48 kHz Opus encoder in VoIP mode."""

    def __init__(self, settings: OpusSettings) -> None:
        _opus()
        import opuslib_next

        self.settings = settings
        self.frame_samples = settings.frame_samples
        self._encoder = opuslib_next.Encoder(SAMPLE_RATE, 1, "voip")
        self._encoder.bitrate = settings.bitrate
        self._encoder.complexity = settings.complexity
        self._encoder.inband_fec = int(settings.fec)
        self._encoder.dtx = int(settings.dtx)
        self.set_expected_loss(settings.expected_loss_percent)
        self.lookahead_samples: int = self._encoder.lookahead
        self._encode = _opus().opus_encode_float
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._frame = np.zeros(self.frame_samples, dtype=np.float32)
        self._frame_p = self._frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def encode(self, pcm: Pcm) -> bytes:
        if len(pcm) != self.frame_samples:
            raise ValueError(f"Opus frame must be {self.frame_samples} samples, got {len(pcm)}")
        self._frame[:] = pcm
        length = self._encode(
            self._encoder.encoder_state,
            self._frame_p,
            self.frame_samples,
            self._out,
            MAX_PACKET_BYTES,
        )
        if length < 0:
            raise CodecError(f"opus_encode_float failed with error {length}")
        return self._out.raw[:length]

    def set_expected_loss(self, percent: int) -> None:
        """Opus adds in-band FEC only when it expects loss; RTCP reports feed this.

        While loss is expected below `FEC_SUPERWIDEBAND_BITRATE`, the audio band is capped at
        wideband (8 kHz), where the FEC fits: a lost packet rebuilt from its successor is
        heard, the band above 8 kHz hardly. The rate rises to `fec_bitrate` meanwhile.
        """
        percent = max(0, min(100, percent))
        settings = self.settings
        protecting = settings.fec and percent > 0
        self._expected_loss = percent
        self._encoder.packet_loss_perc = FEC_LOSS_PERCENT if protecting else percent
        capped = protecting and settings.bitrate < FEC_SUPERWIDEBAND_BITRATE
        self._encoder.max_bandwidth = OPUS_BANDWIDTH_WIDEBAND if capped else OPUS_BANDWIDTH_FULLBAND
        self._encoder.bitrate = max(settings.bitrate, settings.fec_bitrate) if protecting else settings.bitrate

    @property
    def expected_loss(self) -> int:
        return self._expected_loss


class OpusDecoder:
    """Mono 48 kHz Opus decoder with packet-loss concealment and in-band FEC."""

    def __init__(self) -> None:
        _opus()
        import opuslib_next

        self._decoder = opuslib_next.Decoder(SAMPLE_RATE, 1)
        lib = _opus()
        self._decode = lib.opus_decode_float
        self._parse = lib.opus_packet_parse
        self._parse.argtypes = (
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int16),
            ctypes.c_void_p,
        )
        self._parse.restype = ctypes.c_int
        self._frame_sizes = (ctypes.c_int16 * 48)()
        self._buffer = np.zeros(MAX_FRAME_SAMPLES, dtype=np.float32)
        self._buffer_p = self._buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def _run(self, payload: bytes | None, samples: int, fec: int) -> Pcm:
        if payload is None or fec:
            # PLC and FEC work in whole 2.5 ms steps; senders with odd timestamps get rounded.
            step = SAMPLE_RATE // 400
            samples = min(MAX_FRAME_SAMPLES, max(step, round(samples / step) * step))
        n = self._decode(
            self._decoder.decoder_state,
            payload,
            len(payload) if payload else 0,
            self._buffer_p,
            samples,
            fec,
        )
        if n < 0:
            raise CodecError(f"opus_decode_float failed with error {n}")
        out: Pcm = self._buffer[:n].copy()
        return out

    def packet_samples(self, payload: bytes) -> int:
        if not payload:
            raise CodecError("empty Opus packet")
        # The frame lengths must add up, or the decoder refuses the packet when its turn comes:
        # libopus parses them, the TOC byte gives each frame's length.
        frames = self._parse(payload, len(payload), None, None, self._frame_sizes, None)
        if frames <= 0:
            raise CodecError(f"invalid Opus packet (error {frames})")
        n = int(frames) * SAMPLES_PER_FRAME[payload[0] >> 3]
        if n > MAX_FRAME_SAMPLES:
            raise CodecError(f"invalid Opus packet ({n} samples)")
        return n

    def has_fec(self, payload: bytes) -> bool:
        """Whether a packet carries LBRR (in-band FEC) data for the frame before it.

        libopus 1.5 has opus_packet_has_lbrr; Debian 12 ships 1.3.1, so read the flag
        directly (RFC 6716 4.2.3-4.2.4): in a single-frame SILK or hybrid packet the
        first range-coded symbols are equiprobable bits, i.e. the leading bits of the
        byte after the TOC: one VAD flag per 20 ms SILK frame, then the LBRR flag.
        Packets with several Opus frames are assumed to carry FEC (decode_fec then
        falls back to PLC by itself).
        """
        if len(payload) < 2:
            return False
        toc = payload[0]
        config, code = toc >> 3, toc & 3
        if config >= 16:  # CELT-only: no LBRR
            return False
        if code != 0:
            return True
        # hybrid (12..15): 10 or 20 ms, one SILK frame; SILK-only: 10, 20, 40, 60 ms in 20 ms SILK frames
        silk_frames = 1 if config >= 12 else (1, 1, 2, 3)[config & 3]
        return bool((payload[1] >> (7 - silk_frames)) & 1)

    def decode(self, payload: bytes) -> Pcm:
        return self._run(payload, MAX_FRAME_SAMPLES, 0)

    def decode_fec(self, payload: bytes, samples: int) -> Pcm:
        """Recover the frame before `payload` from its in-band FEC (LBRR) data.

        libopus wants exactly the missing duration; without LBRR data it falls back to PLC.
        """
        return self._run(payload, samples, 1)

    def conceal(self, samples: int) -> Pcm:
        return self._run(None, samples, 0)


class L16Encoder:
    """Uncompressed 16-bit big-endian PCM (RFC 3551 L16): a lossless reference for tests."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples

    def encode(self, pcm: Pcm) -> bytes:
        clipped = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 32767 / 32768)
        return (clipped * 32768).astype(">i2").tobytes()

    def set_expected_loss(self, percent: int) -> None:
        pass


class L16Decoder:
    def packet_samples(self, payload: bytes) -> int:
        if not payload or len(payload) % 2:
            raise CodecError("L16 payload must be a non-empty, even number of bytes")
        return len(payload) // 2

    def has_fec(self, payload: bytes) -> bool:
        return False

    def decode(self, payload: bytes) -> Pcm:
        pcm: Pcm = np.frombuffer(payload, dtype=">i2").astype(np.float32) / np.float32(32768)
        return pcm

    def decode_fec(self, payload: bytes, samples: int) -> Pcm:
        return self.conceal(samples)

    def conceal(self, samples: int) -> Pcm:
        return np.zeros(samples, dtype=np.float32)
