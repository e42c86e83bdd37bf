"""SDP (RFC 8866) for one Opus audio stream, so ffmpeg or GStreamer can receive what we send."""

from __future__ import annotations

import base64
import ipaddress

from voip.codec import OpusSettings


def opus_sdp(
    destination: str, port: int, payload_type: int, settings: OpusSettings, session_id: int, srtp_key: bytes | None
) -> str:
    """Describe a stream sent to destination:port; RTCP shares the port (RFC 5761 rtcp-mux).
    With `srtp_key` (master key and salt, 30 bytes), the stream is SRTP with
    AES_CM_128_HMAC_SHA1_80 and the key is in the SDP (SDES, RFC 4568): the file is a secret."""
    family = "IP6" if ipaddress.ip_address(destination).version == 6 else "IP4"
    fmtp = [f"useinbandfec={int(settings.fec)}"]
    if settings.dtx:
        fmtp.append("usedtx=1")
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN {family} {destination}",
        "s=voip",
        f"c=IN {family} {destination}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if srtp_key else 'RTP/AVP'} {payload_type}",
        f"a=rtpmap:{payload_type} opus/48000/2",
        f"a=fmtp:{payload_type} " + ";".join(fmtp),
        f"a=ptime:{settings.frame_ms}",
        "a=rtcp-mux",
        "a=sendonly",
    ]
    if srtp_key:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(srtp_key).decode()}")
    return "\r\n".join(lines) + "\r\n"
