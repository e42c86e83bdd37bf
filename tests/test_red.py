"""Redundant audio (RFC 2198): the payload format, and what a copy does in the buffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voip.codec import L16Decoder, L16Encoder
from voip.errors import ParseError
from voip.playout import JitterBuffer, JitterConfig
from voip.red import RedPayload, RedundantBlock


def test_a_payload_round_trips_and_matches_rfc_2198_figure_3():
    red = RedPayload(111, b"primary", (RedundantBlock(960, b"old"),))
    data = red.serialize()
    # F=1, PT 111; offset 960 (14 bits) and length 3 (10 bits); F=0, PT 111; the blocks
    assert data[:5] == bytes((0x80 | 111, 960 >> 6, (960 & 0x3F) << 2, 3, 111))
    assert data[5:] == b"oldprimary"
    assert RedPayload.parse(data) == red


@given(
    st.lists(st.tuples(st.integers(1, 16383), st.binary(min_size=1, max_size=1023)), max_size=3),
    st.binary(max_size=200),
)
def test_any_payload_round_trips(blocks, primary):
    red = RedPayload(111, primary, tuple(RedundantBlock(offset, payload) for offset, payload in blocks))
    assert RedPayload.parse(red.serialize()) == red


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_parse_error(data):
    try:
        red = RedPayload.parse(data)
    except ParseError:
        return
    assert len(red.primary) + sum(len(block.payload) for block in red.redundant) <= len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no header at all
        bytes((0x80 | 111, 15, 0)),  # ends inside a block header
        bytes((0x80 | 111, 15, 0, 9, 111)) + b"short",  # a block longer than what follows
    ],
)
def test_malformed_payloads_raise_parse_error(data):
    with pytest.raises(ParseError):
        RedPayload.parse(data)


def test_blocks_of_another_payload_type_are_left_out():
    data = bytes((0x80 | 13, 0, 80, 2, 0x80 | 111, 15, 0, 3, 111)) + b"cnold" + b"primary"
    red = RedPayload.parse(data)
    assert red.primary == b"primary" and red.redundant == (RedundantBlock(960, b"old"),)


def test_blocks_that_do_not_fit_the_header_are_refused():
    with pytest.raises(ValueError):
        RedPayload(111, b"p", (RedundantBlock(1 << 14, b"x"),)).serialize()
    with pytest.raises(ValueError):
        RedPayload(111, b"p", (RedundantBlock(960, bytes(1024)),)).serialize()


def _buffer() -> tuple[JitterBuffer, L16Encoder]:
    return JitterBuffer(L16Decoder(), JitterConfig(initial_delay_ms=40, margin_ms=0)), L16Encoder(960)


def _frame(i: int) -> np.ndarray:
    return np.full(960, (i + 1) / 64, dtype=np.float32)


def test_a_lost_packet_plays_from_its_successors_copy_as_sent():
    buffer, encoder = _buffer()
    payloads = [encoder.encode(_frame(i)) for i in range(12)]
    played = []
    for i in range(12):
        now = i * 0.02
        if i != 5:  # packet 5 is lost; packet 6 carries a copy of it
            buffer.push(i * 960, payloads[i], 960, now)
        if i >= 1:
            assert buffer.push_copy((i - 1) * 960, payloads[i - 1], 960, i * 960, now) == (i == 6)
        played.append(buffer.pull(960, now))
    audio = np.concatenate(played)
    levels = sorted({round(float(x) * 64) for x in audio if x})
    assert levels == list(range(1, 12))[: len(levels)] and 6 in levels  # frame 5 (level 6) played
    assert buffer.stats(0.24).fec_recovered == 1 and buffer.stats(0.24).concealed_ms == 0


def test_a_packet_that_comes_after_its_copy_is_an_arrival_not_a_duplicate():
    buffer, encoder = _buffer()
    payloads = [encoder.encode(_frame(i)) for i in range(4)]
    buffer.push(0, payloads[0], 960, 0.0)
    buffer.push(1920, payloads[2], 960, 0.02)  # packet 2 before packet 1: it carries 1's copy
    assert buffer.push_copy(960, payloads[1], 960, 1920, 0.02)
    buffer.push(960, payloads[1], 960, 0.025)  # packet 1 itself, reordered
    stats = buffer.stats(0.03)
    assert stats.packets_duplicate == 0
    assert not buffer.push_copy(960, payloads[1], 960, 1920, 0.03)  # it is here: a copy is not kept
    played = np.concatenate([buffer.pull(960, 0.04 + i * 0.02) for i in range(3)])
    assert buffer.stats(0.1).fec_recovered == 0 and len(played) == 3 * 960


def test_a_packet_that_comes_after_its_copy_played_is_late_not_a_duplicate():
    buffer, encoder = _buffer()
    payloads = [encoder.encode(_frame(i)) for i in range(8)]
    for i in range(8):
        now = i * 0.02
        if i != 3:
            buffer.push(i * 960, payloads[i], 960, now)
        if i == 4:
            assert buffer.push_copy(3 * 960, payloads[3], 960, 4 * 960, now)
        buffer.pull(960, now)
    buffer.push(3 * 960, payloads[3], 960, 0.2)  # long after its copy played
    stats = buffer.stats(0.2)
    assert stats.fec_recovered == 1 and stats.packets_late == 1 and stats.packets_duplicate == 0
