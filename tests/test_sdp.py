"""Reading SDP: what ffmpeg writes, what we write, and what we cannot receive."""

from __future__ import annotations

import pytest

from voip.codec import OpusSettings
from voip.sdp import SdpError, opus_sdp, parse_opus_sdp

FFMPEG = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 5091 RTP/AVP 97
b=AS:32
a=rtpmap:97 opus/48000/2
"""


def test_ffmpegs_sdp_gives_its_port_and_payload_type():
    stream = parse_opus_sdp(FFMPEG)
    assert (stream.port, stream.payload_type, stream.channels, stream.srtp_key) == (5091, 97, 2, None)


def test_our_own_sdp_reads_back_with_its_key():
    key = bytes(range(30))
    text = opus_sdp("127.0.0.1", 6000, 111, OpusSettings(), 1, key)
    stream = parse_opus_sdp(text)
    assert (stream.port, stream.payload_type, stream.srtp_key) == (6000, 111, key)
    assert parse_opus_sdp(opus_sdp("::1", 6000, 111, OpusSettings(), 1, None)).srtp_key is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=0\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n", "no audio stream"),
        ("v=0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", "PCMU/8000; voip receives Opus only"),
        ("v=0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/16000\r\n", "RFC 7587 says opus/48000"),
        ("v=0\r\nm=audio 99999 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n", "out of range"),
        ("v=0\r\nm=audio 5000 RTP/SAVP 96\r\na=rtpmap:96 opus/48000/2\r\n", "no AES_CM_128_HMAC_SHA1_80 key"),
        (
            "v=0\r\nm=audio 5000 RTP/SAVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!\r\n",
            "not base64",
        ),
    ],
)
def test_what_we_cannot_receive_is_one_clear_reason(text, why):
    with pytest.raises(SdpError, match=why):
        parse_opus_sdp(text)
