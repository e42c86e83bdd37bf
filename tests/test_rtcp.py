import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voip.errors import ParseError
from voip.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_compound,
    serialize_compound,
)

BLOCK = ReportBlock(0x11223344, 25, -2, 0x0001FFFF, 120, 0xAABBCCDD, 0x00010000)
COMPOUND = [
    SenderReport(0xDEADBEEF, 0xE1234567_89ABCDEF, 48000, 50, 4000, (BLOCK,)),
    SourceDescription((SdesChunk(0xDEADBEEF, ((1, b"voip@host"),)),)),
    Bye((0xDEADBEEF,), b"hang up"),
]
# The same compound packet written out by hand from RFC 3550 section 6.
COMPOUND_BYTES = bytes.fromhex(
    "81c8000c deadbeef e1234567 89abcdef 0000bb80 00000032 00000fa0"
    " 11223344 19fffffe 0001ffff 00000078 aabbccdd 00010000"
    " 81ca0004 deadbeef 0109766f 69704068 6f737400"
    " 81cb0003 deadbeef 0768616e 67207570".replace(" ", "")
)


def test_compound_serializes_to_rfc_layout_and_back():
    assert serialize_compound(COMPOUND) == COMPOUND_BYTES
    assert parse_compound(COMPOUND_BYTES) == COMPOUND


def test_every_truncation_raises_parse_error():
    for n in range(len(COMPOUND_BYTES)):
        if n in (52, 72):  # whole packets: a valid shorter compound
            assert parse_compound(COMPOUND_BYTES[:n]) == COMPOUND[: 1 if n == 52 else 2]
            continue
        with pytest.raises(ParseError):
            parse_compound(COMPOUND_BYTES[:n])


def test_unknown_types_are_kept_and_padding_is_removed():
    feedback = UnknownRtcp(205, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02")
    assert parse_compound(feedback.serialize()) == [feedback]
    padded = bytes.fromhex("a1cb0002deadbeef00000004")  # BYE with P bit and 4 bytes of padding
    assert parse_compound(padded) == [Bye((0xDEADBEEF,))]


blocks = st.builds(
    ReportBlock,
    ssrc=st.integers(0, 0xFFFFFFFF),
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=st.integers(0, 0xFFFFFFFF),
    jitter=st.integers(0, 0xFFFFFFFF),
    last_sr=st.integers(0, 0xFFFFFFFF),
    delay_since_last_sr=st.integers(0, 0xFFFFFFFF),
)
u32 = st.integers(0, 0xFFFFFFFF)
rtcp_packets = st.one_of(
    st.builds(
        SenderReport,
        u32,
        st.integers(0, (1 << 64) - 1),
        u32,
        u32,
        u32,
        st.lists(blocks, max_size=3).map(tuple),
    ),
    st.builds(ReceiverReport, u32, st.lists(blocks, max_size=3).map(tuple)),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                u32,
                st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=40)), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.binary(max_size=60)),
    st.builds(App, st.integers(0, 31), u32, st.binary(min_size=4, max_size=4), st.just(b"\x00" * 8)),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_round_trip_random_compounds(packets):
    data = serialize_compound(packets)
    assert parse_compound(data) == packets
    assert serialize_compound(parse_compound(data)) == data


@given(st.binary(max_size=80))
def test_random_bytes_parse_or_raise_parse_error(data):
    with contextlib.suppress(ParseError):
        parse_compound(data)
