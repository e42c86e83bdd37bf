import itertools

from voip.rtcp import ReportBlock
from voip.stats import ReceiverStats, StreamStats, round_trip_time


def test_loss_reorder_and_report_fraction():
    s = ReceiverStats(48000)
    for i, seq in enumerate([65530, 65531, 65533, 65532, 65534, 65535, 0, 3]):  # 1, 2 missing
        assert s.on_packet(seq, i * 960, i * 0.02)
    assert s.expected == 10 and s.received == 8 and s.lost == 2
    assert s.reordered == 1
    block = s.report_block(ssrc=5, now=1.0)
    assert block.fraction_lost == (2 << 8) // 10
    assert block.highest_sequence == 65536 + 3
    assert s.report_block(ssrc=5, now=2.0).fraction_lost == 0  # a new interval with no loss


def test_jitter_follows_rfc_3550_a8():
    s = ReceiverStats(48000)
    arrivals = [0.0, 0.030, 0.040, 0.070, 0.080]  # RTP spacing 20 ms, arrivals +-10 ms
    for i, t in enumerate(arrivals):
        s.on_packet(i, i * 960, t)
    expected = 0.0
    transits = [t * 48000 - i * 960 for i, t in enumerate(arrivals)]
    for a, b in itertools.pairwise(transits):
        expected += (abs(b - a) - expected) / 16
    assert abs(s.jitter - expected) < 1e-9
    assert s.jitter > 0


def test_sequence_jump_needs_confirmation_then_resyncs():
    s = ReceiverStats(48000)
    s.on_packet(100, 0, 0.0)
    assert not s.on_packet(20000, 0, 0.02)  # a wild jump is not trusted at once
    assert s.on_packet(20001, 0, 0.04)  # the next in sequence confirms a restarted sender
    assert s.expected == 1 and s.lost == 0


def test_round_trip_time_from_lsr_and_dlsr():
    lsr = 0x00010000  # 1.0 s in NTP middle-32 units
    block = ReportBlock(1, 0, 0, 0, 0, lsr, delay_since_last_sr=0x00008000)  # held 0.5 s
    assert round_trip_time(block, now_ntp_middle=0x00018CCD) == (0x00018CCD - lsr - 0x8000) / 65536
    assert round_trip_time(ReportBlock(1, 0, 0, 0, 0, 0, 0), 12345) is None
    assert round_trip_time(block, now_ntp_middle=lsr) is None  # negative: not a real RTT


def test_mos_falls_with_what_could_not_be_played_and_with_delay():
    clean = StreamStats(packets_received=1000, buffer_delay_ms=40.0, rtt_ms=40.0, lookahead_ms=6.5)
    assert StreamStats().mos is None  # nothing heard yet
    assert clean.mos is not None and 3.6 < clean.mos < 3.9  # Opus 24 kbit/s: Ie 19.5, PESQ-WB ~3.8
    lossy = StreamStats(packets_received=950, packets_lost=50, buffer_delay_ms=40.0, rtt_ms=40.0)
    rebuilt = StreamStats(packets_received=950, packets_lost=50, fec_recovered=40, buffer_delay_ms=40.0, rtt_ms=40.0)
    late = StreamStats(packets_received=1000, packets_late=50, buffer_delay_ms=40.0, rtt_ms=40.0)
    far = StreamStats(packets_received=1000, buffer_delay_ms=40.0, rtt_ms=600.0)
    assert lossy.mos is not None and rebuilt.mos is not None and far.mos is not None
    assert lossy.mos < rebuilt.mos < clean.mos
    assert late.mos == lossy.mos  # late is as lost to a listener
    assert far.mos < clean.mos - 0.3  # 300 ms one way: the delay is heard in a conversation
