from hypothesis import given
from hypothesis import strategies as st

from voip.seqnum import Unwrapper, seq_diff, ts_diff


def test_seq_diff_wraps():
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 90) == 10
    assert ts_diff(5, 0xFFFFFFFB) == 10


def test_unwrapper_crosses_wrap_and_keeps_reordered_packets_below():
    u = Unwrapper(16)
    values = [65533, 65534, 65535, 0, 65535, 1, 2]
    assert [u.unwrap(v) for v in values] == [65533, 65534, 65535, 65536, 65535, 65537, 65538]


@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(1, 2000), min_size=1, max_size=200))
def test_unwrapper_is_monotonic_for_forward_steps(start, steps):
    u = Unwrapper(32)
    value = start
    previous = u.unwrap(value)
    for step in steps:
        value = (value + step) & 0xFFFFFFFF
        current = u.unwrap(value)
        assert current - previous == step
        previous = current
