import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voip.errors import ParseError
from voip.rtp import Packetizer, RtpPacket, is_rtcp, is_rtp_or_rtcp

# V=2, M=1, PT=111, seq=0x1234, ts=0x01020304, ssrc=0xdeadbeef, payload 3 bytes
SIMPLE = bytes.fromhex("80ef1234 01020304 deadbeef 78 0a 0b".replace(" ", ""))
# with P, X and one CSRC: padding 4 bytes, a one-word extension
FULL = bytes.fromhex("b16f0001 00000010 00000001 00000002 bede0001 10aa0000 fc01 00000004".replace(" ", ""))


def test_parse_known_bytes():
    p = RtpPacket.parse(SIMPLE)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (
        111,
        True,
        0x1234,
        0x01020304,
        0xDEADBEEF,
    )
    assert p.payload == b"\x78\x0a\x0b"
    assert p.serialize() == SIMPLE


def test_parse_csrc_extension_padding_round_trip():
    p = RtpPacket.parse(FULL)
    assert p.csrcs == (2,)
    assert p.extension_profile == 0xBEDE and p.extension == bytes.fromhex("10aa0000")
    assert p.payload == b"\xfc\x01" and p.padding == 4
    assert p.serialize() == FULL


@pytest.mark.parametrize("packet", [SIMPLE, FULL])
def test_every_truncation_raises_parse_error(packet):
    for n in range(len(packet)):
        try:
            RtpPacket.parse(packet[:n])
        except ParseError:
            continue
        # A cut that happens to leave a valid shorter packet is fine, as long as it is consistent.
        assert RtpPacket.parse(packet[:n]).serialize() == packet[:n]


def test_wrong_version_and_bad_padding_rejected():
    with pytest.raises(ParseError):
        RtpPacket.parse(b"\x40" + SIMPLE[1:])
    with pytest.raises(ParseError):
        RtpPacket.parse(b"\xa0" + SIMPLE[1:-1] + b"\x00")  # padding count 0


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    extension=st.just(b""),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip_random_packets(packet):
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise_parse_error(data):
    with contextlib.suppress(ParseError):
        RtpPacket.parse(data)


def test_demultiplexing_by_first_bytes():
    assert is_rtp_or_rtcp(SIMPLE) and not is_rtcp(SIMPLE)
    assert is_rtcp(b"\x80\xc8\x00\x06")
    assert not is_rtp_or_rtcp(b"\x16\xfe") and not is_rtp_or_rtcp(b"")


def test_packetizer_wraps_and_marks_talkspurts():
    p = Packetizer(ssrc=7, payload_type=111, initial_sequence=0xFFFF, initial_timestamp=0xFFFFFC40)
    first, second = p.packetize(b"a", 960), p.packetize(b"b", 960)
    assert (first.sequence, second.sequence) == (0xFFFF, 0)
    assert (first.timestamp, second.timestamp) == (0xFFFFFC40, 0)
    assert first.marker and not second.marker
    p.skip(960)
    third = p.packetize(b"c", 960)
    assert third.marker and third.timestamp == 1920
