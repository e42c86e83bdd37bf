"""SDP (RFC 8866) for one Opus audio stream: written so ffmpeg or GStreamer can receive what we
send, and read so `voip receive` can take what they (or `voip send --sdp`) describe."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass

from voip.codec import OpusSettings
from voip.errors import VoipError

SRTP_KEY_BYTES = 30  # AES_CM_128_HMAC_SHA1_80: master key (16) and salt (14)


class SdpError(VoipError):
    """An SDP that does not describe a stream we can receive; the message says why."""


@dataclass(frozen=True)
class SdpStream:
    """The one audio stream of an SDP, as a receiver needs it."""

    port: int
    payload_type: int
    channels: int
    srtp_key: bytes | None  # SDES (a=crypto), AES_CM_128_HMAC_SHA1_80


def opus_sdp(
    destination: str, port: int, payload_type: int, settings: OpusSettings, ssrc: int, srtp_key: bytes | None
) -> str:
    """Describe a stream sent to destination:port; RTCP shares the port (RFC 5761 rtcp-mux).
    With `srtp_key` (master key and salt, 30 bytes), the stream is SRTP with
    AES_CM_128_HMAC_SHA1_80 and the key is in the SDP (SDES, RFC 4568): the file is a secret.
    The SSRC is named (RFC 5576): GStreamer's srtpdec keys its streams by SSRC."""
    family = "IP6" if ipaddress.ip_address(destination).version == 6 else "IP4"
    fmtp = [f"useinbandfec={int(settings.fec)}"]
    if settings.dtx:
        fmtp.append("usedtx=1")
    lines = [
        "v=0",
        f"o=- {ssrc} 1 IN {family} {destination}",
        "s=voip",
        f"c=IN {family} {destination}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if srtp_key else 'RTP/AVP'} {payload_type}",
        f"a=rtpmap:{payload_type} opus/48000/2",
        f"a=fmtp:{payload_type} " + ";".join(fmtp),
        f"a=ptime:{settings.frame_ms}",
        "a=rtcp-mux",
        "a=sendonly",
        f"a=ssrc:{ssrc} cname:voip",
    ]
    if srtp_key:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(srtp_key).decode()}")
    return "\r\n".join(lines) + "\r\n"


def parse_opus_sdp(text: str) -> SdpStream:
    """The first audio stream of an SDP: its port, its Opus payload type, and an SDES key if any.
    Anything we cannot receive (no audio, another codec, another crypto suite) is an SdpError."""
    port = proto = None
    formats: list[str] = []
    rtpmaps: dict[str, str] = {}
    crypto: list[str] = []
    in_audio = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if port is not None:
                break  # only the first audio stream
            fields = line[2:].split()
            in_audio = len(fields) >= 4 and fields[0] == "audio"
            if in_audio:
                try:
                    port = int(fields[1].split("/")[0])
                except ValueError:
                    raise SdpError(f"SDP: bad port in {line!r}") from None
                proto, formats = fields[2], fields[3:]
        elif in_audio and line.startswith("a=rtpmap:"):
            number, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            rtpmaps[number] = encoding.strip()
        elif in_audio and line.startswith("a=crypto:"):
            crypto.append(line[len("a=crypto:") :])
    if port is None or proto is None:
        raise SdpError("SDP: no audio stream (m=audio)")
    if not 0 < port < 65536:
        raise SdpError(f"SDP: port {port} is out of range")
    opus = [(number, rtpmaps[number]) for number in formats if rtpmaps.get(number, "").lower().startswith("opus/")]
    if not opus:
        offered = ", ".join(rtpmaps.get(number, f"payload type {number}") for number in formats)
        raise SdpError(f"SDP: the stream is {offered or 'empty'}; voip receives Opus only")
    number, encoding = opus[0]
    parts = encoding.split("/")
    if len(parts) < 2 or parts[1] != "48000":
        raise SdpError(f"SDP: Opus at {encoding!r}: RFC 7587 says opus/48000")
    channels = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1
    key = _sdes_key(crypto) if proto.upper().endswith("SAVP") else None
    return SdpStream(port=port, payload_type=int(number), channels=channels, srtp_key=key)


def _sdes_key(lines: list[str]) -> bytes:
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "AES_CM_128_HMAC_SHA1_80" and fields[2].startswith("inline:"):
            material = fields[2][len("inline:") :].split("|")[0]
            try:
                key = base64.b64decode(material, validate=True)
            except (binascii.Error, ValueError):
                raise SdpError("SDP: the a=crypto key is not base64") from None
            if len(key) != SRTP_KEY_BYTES:
                raise SdpError(f"SDP: the a=crypto key is {len(key)} bytes, expected {SRTP_KEY_BYTES}")
            return key
    suites = ", ".join(line.split()[1] for line in lines if len(line.split()) > 1) or "none"
    raise SdpError(f"SDP: an SRTP stream, but no AES_CM_128_HMAC_SHA1_80 key (a=crypto suites: {suites})")
