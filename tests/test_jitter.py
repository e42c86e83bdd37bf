"""The jitter buffer on a fake clock: every arrival time is chosen by the test."""

from __future__ import annotations

import random

import numpy as np
import pytest

from voip.codec import L16Decoder, L16Encoder, OpusDecoder, OpusEncoder, OpusSettings
from voip.playout import JitterBuffer, JitterConfig, PushResult
from voip.timeline import Timeline

FRAME = 960
STEP = FRAME / 48000


def marker_payload(i: int) -> bytes:
    """A packet whose samples all equal (i % 200 + 1) / 1024: its index can be read back."""
    return L16Encoder(FRAME).encode(np.full(FRAME, (i % 200 + 1) / 1024, dtype=np.float32))


def in_word(i: int, pause_frames: int = 10) -> bool:
    return i % (10 + pause_frames) < 10


def speechlike_payload(i: int, pause_frames: int = 10) -> bytes:
    """200 ms of tone, then silence (200 ms unless told): pauses where the buffer may adapt."""
    n = np.arange(i * FRAME, (i + 1) * FRAME)
    tone = 0.3 * np.sin(2 * np.pi * 300 * n / 48000) if in_word(i, pause_frames) else np.zeros(FRAME)
    return L16Encoder(FRAME).encode(tone.astype(np.float32))


def drive(jb, arrivals, payloads, ticks, trace=None, pull=FRAME):
    """Push packets at their arrival times and pull `pull` samples per tick (20 ms of frames)."""
    events = sorted((t, i) for i, t in arrivals.items())
    out, k = [], 0
    for tick in range(ticks * FRAME // pull):
        now = tick * pull / 48000
        while k < len(events) and events[k][0] <= now:
            t, i = events[k]
            jb.push((i * FRAME) & 0xFFFFFFFF, payloads[i], FRAME, t)
            k += 1
            if k == len(events):
                jb.end_of_stream(now)  # the sender's BYE: no concealment after the last packet
        out.append(jb.pull(pull, now))
        if trace is not None:
            trace.append((now, jb.playout_delay * 1000, jb.target_playout_delay(now) * 1000))
    return np.concatenate(out)


def played_indices(pcm):
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME)
    return [round(f[0] * 1024) - 1 if f[0] > 0 else None for f in frames]


def test_in_order_stream_plays_every_packet_once_in_order():
    jb = JitterBuffer(L16Decoder())
    payloads = [marker_payload(i) for i in range(100)]
    pcm = drive(jb, {i: i * STEP for i in range(100)}, payloads, 110)
    played = [i for i in played_indices(pcm) if i is not None]
    assert played == sorted(played) and len(played) >= 95
    assert jb.stats(0.0).concealed_ms == 0


def test_reordered_packets_are_put_back_in_place():
    jb = JitterBuffer(L16Decoder())
    arrivals = {i: i * STEP for i in range(60)}
    arrivals[30], arrivals[31] = 30 * STEP + 0.015, 30 * STEP + 0.010  # 31 arrives before 30
    pcm = drive(jb, arrivals, [marker_payload(i) for i in range(60)], 70)
    played = [i for i in played_indices(pcm) if i is not None]
    assert played[played.index(29) : played.index(32) + 1] == [29, 30, 31, 32]
    assert jb.stats(0.0).packets_late == 0 and jb.stats(0.0).concealed_ms == 0


def test_duplicates_are_dropped_before_and_after_playout():
    jb = JitterBuffer(L16Decoder())
    payload = marker_payload(0)
    assert jb.push(0, payload, FRAME, 0.0) is PushResult.ACCEPTED
    assert jb.push(0, payload, FRAME, 0.001) is PushResult.DUPLICATE
    for tick in range(1, 10):
        jb.push(tick * FRAME, marker_payload(tick), FRAME, tick * STEP)
        jb.pull(FRAME, tick * STEP)
    assert jb.push(0, payload, FRAME, 0.5) is PushResult.DUPLICATE  # played long ago: not "late"
    assert jb.stats(0.0).packets_duplicate == 2 and jb.stats(0.0).packets_late == 0


def test_late_packet_is_dropped_and_its_slot_concealed():
    jb = JitterBuffer(L16Decoder())
    arrivals = {i: i * STEP for i in range(60)}
    arrivals[30] += 0.5  # far beyond any playout delay
    pcm = drive(jb, arrivals, [marker_payload(i) for i in range(60)], 70)
    stats = jb.stats(0.0)
    assert stats.packets_late == 1
    assert stats.concealed_ms == 20 and stats.concealment_events == 1
    assert 30 not in played_indices(pcm)


def test_lost_packet_is_concealed_once():
    jb = JitterBuffer(L16Decoder())
    arrivals = {i: i * STEP for i in range(60) if i != 25}
    drive(jb, arrivals, [marker_payload(i) for i in range(60)], 70)
    stats = jb.stats(0.0)
    assert stats.concealed_ms == 20 and stats.concealment_events == 1 and stats.interruptions == 0


def opus_packets(speech, settings, count):
    encoder = OpusEncoder(settings)
    return [encoder.encode(speech[i * FRAME : (i + 1) * FRAME]) for i in range(count)]


def test_fec_of_the_next_packet_replaces_a_lost_one(speech):
    decoder = OpusDecoder()
    packets = opus_packets(speech, OpusSettings(fec=True, expected_loss_percent=20), 120)
    lost = next(i for i in range(40, 120) if decoder.has_fec(packets[i + 1]))
    arrivals = {i: i * STEP for i in range(120) if i != lost}
    jb = JitterBuffer(OpusDecoder())
    drive(jb, arrivals, packets, 130)
    assert jb.stats(0.0).fec_recovered == 1
    assert jb.stats(0.0).concealed_ms == 0


def test_without_fec_in_the_stream_a_loss_is_concealed(speech):
    packets = opus_packets(speech, OpusSettings(fec=False), 120)
    jb = JitterBuffer(OpusDecoder())
    drive(jb, {i: i * STEP for i in range(120) if i != 60}, packets, 130)
    assert jb.stats(0.0).fec_recovered == 0
    assert jb.stats(0.0).concealed_ms == 20


@pytest.mark.parametrize("fec", [True, False])
def test_single_held_back_packets_cost_no_delay_when_fec_rebuilds_them(speech, fec):
    """Wi-Fi retries: one packet in fifty comes 100 ms late, after its successors. With FEC
    in the stream the successor rebuilds it, so the buffer stays short and lets it come
    late; without FEC the buffer covers it (a concealed packet costs a listener more)."""
    count = 1500  # 30 s
    packets = opus_packets(np.tile(speech, 4), OpusSettings(fec=fec, expected_loss_percent=5 if fec else 0), count)
    arrivals = {i: i * STEP + (0.1 if i % 50 == 25 else 0.0) + 0.001 for i in range(count)}
    jb = JitterBuffer(OpusDecoder())
    drive(jb, arrivals, packets, count + 20, pull=480)
    stats = jb.stats(count * STEP)
    if fec:
        assert stats.buffer_target_ms < 50 and stats.fec_recovered >= 20  # a successor in a pause carries none
    else:
        assert stats.buffer_target_ms >= 100 and stats.packets_late <= 3


def test_delay_follows_jitter_up_and_back_down_and_never_ratchets_after_loss():
    """A non-stationary path: calm, a jittery spell, calm again with a loss burst. The delay
    model remembers about half a minute (a packet's weight falls to 1/e in 28 s), but the
    target comes back down once `calm_window_s` has passed with no packet that needs it."""
    rng = random.Random(3)
    n = 8000  # 160 s: 15 s calm, 15 s jitter, 130 s calm with a 400 ms loss burst at 144 s
    arrivals = {}
    for i in range(n):
        t = i * STEP
        extra = abs(rng.gauss(0, 0.030)) if 750 <= i < 1500 else 0.0
        if not 7200 <= i < 7220:
            arrivals[i] = t + extra
    payloads = [speechlike_payload(i) for i in range(n)]
    jb = JitterBuffer(L16Decoder())
    jb.observe_path_delay(0.08)  # on a short path the model would keep a jittery spell's delay: it is free
    trace: list[tuple[float, float, float]] = []
    drive(jb, arrivals, payloads, n, trace)

    def mean_level(t0, t1):
        return np.mean([level for t, level, _ in trace if t0 <= t < t1])

    def target_at(t):
        return next(target for time, _, target in trace if time >= t)

    calm_target, jitter_target = target_at(14.0), target_at(29.0)
    assert calm_target <= 30
    assert jitter_target >= calm_target + 40  # |N(0, 30 ms)| reaches ~100 ms at its 99.9th percentile
    assert mean_level(25, 30) >= jitter_target - 20  # the buffer actually grew
    # The spell ended at 30 s: the long memory holds its delay while the calm window still
    # saw it, and the target comes down once the window has been calm, and stays down.
    assert target_at(39.0) >= jitter_target - 10
    calm_cover = calm_target + JitterConfig().calm_margin_ms + 5  # the calm spread, a bucket, the margin
    assert target_at(45.0) <= calm_cover and target_at(155.0) <= calm_cover
    assert mean_level(45, 50) <= mean_level(35, 40) - 30  # the buffer followed
    before_burst, after_burst = mean_level(138, 144), mean_level(150, 160)
    assert after_burst <= before_burst + 20  # no ratchet: the burst did not raise the delay
    assert after_burst <= calm_target + 40
    stats = jb.stats(0.0)
    assert stats.interruptions == 1  # the 400 ms burst
    assert stats.accelerated_ms > 0 and stats.expanded_ms > 0


def test_timestamp_wraparound_is_seamless():
    jb = JitterBuffer(L16Decoder())
    start = 0xFFFFFFFF - 20 * FRAME
    for tick in range(60):
        jb.push((start + tick * FRAME) & 0xFFFFFFFF, marker_payload(tick), FRAME, tick * STEP)
        jb.pull(FRAME, tick * STEP)
    stats = jb.stats(0.0)
    assert stats.packets_late == 0 and stats.concealed_ms == 0


def test_the_target_is_the_e_model_optimum_of_a_brute_force_histogram():
    """The target is where the E-model's cost is least; or above it, within the hysteresis,
    if it was there before and falling would make more packets late; and never above what
    the calm window's packets needed, plus its margin."""
    from voip.emodel import DEVICE_ALLOWANCE_MS, idd, ie_eff
    from voip.playout.delay import (
        DELAY_SLOPE_R_PER_MS,
        FREE_MOVE_LATE_PERCENT,
        PRIOR_LATE,
        PRIOR_LATE_DECAY,
        PRIOR_PUNCTUAL,
        DelayModel,
    )

    config = JitterConfig()
    model = DelayModel(config)
    model.observe_path_delay(0.05)
    buckets = int(config.max_delay_ms / config.bucket_ms) + 1
    edges = (np.arange(buckets) + 1) * config.bucket_ms
    reference = np.zeros(buckets)
    reference[0] = PRIOR_PUNCTUAL * (1 - config.forget_factor)
    prior_late = PRIOR_LATE * (1 - config.forget_factor)
    rng = random.Random(11)
    window: list[tuple[float, float]] = []
    current = int(np.argmin(np.abs(edges - model.target * 1000)))  # where the prior put it
    calm: list[tuple[float, int]] = []  # (arrival, bucket) of the last calm_window_s
    held = moved = capped = 0
    first_arrival = 0.0
    for i in range(3000):
        spread = 0.04 if (i // 700) % 2 else 0.003  # alternate calm and jittery stretches
        now = i * STEP + abs(rng.gauss(0, spread))
        if i == 0:
            first_arrival = now
        model.observe(i * FRAME, now)
        transit = now - i * FRAME / 48000
        window = [(t, tr) for t, tr in window if t >= now - config.reference_window_s] + [(now, transit)]
        relative_ms = (transit - min(tr for _, tr in window)) * 1000
        bucket = min(buckets - 1, int(relative_ms / config.bucket_ms))
        reference *= config.forget_factor
        reference[bucket] += 1 - config.forget_factor
        calm = [(t, b) for t, b in calm if t >= now - config.calm_window_s] + [(now, bucket)]
        prior_late *= PRIOR_LATE_DECAY
        if i % 8 == 7:  # the model recomputes its target every 8 arrivals
            histogram = reference.copy()
            histogram[int(config.initial_delay_ms / config.bucket_ms)] += prior_late
            later = np.maximum(0.0, 1 - np.cumsum(histogram) / histogram.sum())
            base = config.fixed_ms + DEVICE_ALLOWANCE_MS + 50
            costs = [idd(base + e) + DELAY_SLOPE_R_PER_MS * e + ie_eff(p) for e, p in zip(edges, later, strict=True)]
            best = int(np.argmin(costs))
            if best != current:
                free = 100 * (later[best] - later[current]) < FREE_MOVE_LATE_PERCENT
                if free or costs[current] - costs[best] > config.target_hysteresis_r:
                    current, moved = best, moved + 1
                else:
                    held += 1
            if now - first_arrival >= config.calm_window_s:
                cap = max(b for _, b in calm) + round(config.calm_margin_ms / config.bucket_ms)
                if current > cap:
                    current, capped = cap, capped + 1
            assert model.target * 1000 == pytest.approx(edges[current], abs=1e-6), i
    assert held and moved and capped  # every rule was exercised


def test_reading_statistics_changes_nothing():
    """Two buffers driven alike, one read after every pull: they play the same audio."""
    rng = random.Random(4)
    arrivals = {i: i * STEP + abs(rng.gauss(0, 0.02)) for i in range(500) if rng.random() > 0.03}
    payloads = [speechlike_payload(i) for i in range(500)]
    quiet, watched = JitterBuffer(L16Decoder()), JitterBuffer(L16Decoder())
    events = sorted((t, i) for i, t in arrivals.items())
    k = 0
    for tick in range(520):
        now = tick * STEP
        while k < len(events) and events[k][0] <= now:
            t, i = events[k]
            for jb in (quiet, watched):
                jb.push(i * FRAME, payloads[i], FRAME, t)
            k += 1
        a = quiet.pull(FRAME, now)
        before = watched.stats(now)
        for _ in range(3):
            assert watched.stats(now) == before
            watched.target_delay(now)
        assert np.array_equal(a, watched.pull(FRAME, now))


def test_states_change_as_the_stream_starts_ends_and_restarts():
    from voip.playout import PlayoutState

    jb = JitterBuffer(L16Decoder())
    assert jb.state is PlayoutState.WAITING and jb.next_event() is None
    for i in range(10):
        jb.push(i * FRAME, marker_payload(i), FRAME, i * STEP)
        jb.pull(FRAME, i * STEP)
    assert jb.state is PlayoutState.PLAYING
    jb.push(10 * 48000 * 60, marker_payload(0), FRAME, 0.2)  # a minute ahead: the sender restarted
    assert jb.state is PlayoutState.WAITING
    jb.pull(FRAME, 0.25)
    jb.end_of_stream(0.3)
    for tick in range(5):
        jb.pull(FRAME, 0.3 + tick * STEP)
    assert jb.state is PlayoutState.DRAINED
    states = []
    while (event := jb.next_event()) is not None:
        states.append(event.state)
    assert states == [
        PlayoutState.PLAYING,
        PlayoutState.WAITING,
        PlayoutState.PLAYING,
        PlayoutState.DRAINING,
        PlayoutState.DRAINED,
    ]


def test_the_timeline_records_what_the_statistics_count():
    from voip.timeline import Timeline

    rng = random.Random(8)
    arrivals = {}
    for i in range(1500):
        if rng.random() < 0.05:
            continue  # lost
        arrivals[i] = i * STEP + abs(rng.gauss(0, 0.025))
    arrivals[700] = 700 * STEP + 0.4  # far too late
    jb = JitterBuffer(L16Decoder(), timeline=Timeline())
    drive(jb, arrivals, [speechlike_payload(i) for i in range(1500)], 1600)
    stats, timeline = jb.stats(1600 * STEP), jb.timeline
    assert timeline is not None
    assert len(timeline.arrivals) == len(arrivals) - stats.packets_late
    assert len(timeline.late) == stats.packets_late >= 1
    assert sum(ms for _, ms in timeline.concealments) == stats.concealed_ms > 0
    expanded = sum(ms for _, ms in timeline.stretches if ms > 0)
    accelerated = -sum(ms for _, ms in timeline.stretches if ms < 0)
    assert (expanded, accelerated) == pytest.approx((stats.expanded_ms, stats.accelerated_ms))
    assert len(timeline.playouts) > 1000
    assert max(target for _, _, target in timeline.playouts) > 40  # the target followed the jitter up


def test_under_gaussian_jitter_almost_nothing_comes_late():
    """Ten 8 s streams with N(0, 30 ms) extra delay (clipped at 0): the start, before the
    histogram has learned, is where packets come late. Before late packets fed the target
    and missing ones were waited for, 28 of these 4000 came late; then 9 while an underrun
    also added a packet of delay for 10 s; without that extra delay (10-15 ms less on average
    in bench_jitter), 21."""
    late, delays = 0, []
    for seed in range(10):
        rng = random.Random(seed)
        n = 400
        arrivals = {i: i * STEP + max(0.0, rng.gauss(0, 0.030)) for i in range(n)}
        jb = JitterBuffer(L16Decoder())
        drive(jb, arrivals, [speechlike_payload(i) for i in range(n)], n + 20)
        stats = jb.stats(n * STEP)
        late += stats.packets_late
        delays.append(stats.buffer_delay_ms)
    assert late <= 25  # 0.6%, against issue 5's bound of 1%
    # The 99th percentile of the extra delay is ~70 ms; the buffer keeps a pull (20 ms) more, since
    # a packet is needed up to a pull before its first sample plays.
    assert max(delays) < 120


@pytest.mark.parametrize("ppm", [1000, -1000])
def test_sender_clock_drift_is_absorbed_over_an_hour(ppm):
    """The sender's clock runs 0.1% fast (or slow): 3.6 s of audio more (or less) per hour than
    the receiver plays. The buffer stretches pauses to stay on target instead of filling up
    (or running dry and concealing). The output asks for 10 ms at a time, as WebRTC's audio
    device asks NetEq. Lengthening is prompt; shortening waits until `shorten_min_ms` (20 ms)
    can go (fewer time warps), so a fast sender's delay rides up to that much over the target."""
    tone, silence = speechlike_payload(0), speechlike_payload(10)
    shorten_min_ms = JitterConfig().shorten_min_ms
    jb = JitterBuffer(L16Decoder())
    send_step = STEP / (1 + ppm * 1e-6)
    rng = random.Random(ppm)
    i, samples, lowest, highest = 0, 0, 0.0, 0.0
    for tick in range(3600 * 100):
        now = tick * 0.01
        while i * send_step + 0.002 <= now:
            arrival = i * send_step + rng.uniform(0.0, 0.002)
            jb.push((i * FRAME) & 0xFFFFFFFF, tone if (i // 10) % 2 == 0 else silence, FRAME, arrival)
            i += 1
        jb.pull(480, now)
        if tick % 100 == 0 and now > 30:  # once a second, once settled
            deviation = jb.playout_delay - jb.target_playout_delay(now)
            lowest, highest = min(lowest, deviation), max(highest, deviation)
            samples += 1
    stats = jb.stats(now)
    assert samples > 3500 and lowest >= -0.010 and highest <= max(0.010, shorten_min_ms / 1000 - 0.002)
    assert stats.packets_late == 0 and stats.concealed_ms == 0
    drifted_ms = 3600 * abs(ppm) / 1000
    stretched_ms = stats.accelerated_ms - stats.expanded_ms
    # what was not stretched is the delay at the start and at the end
    assert stretched_ms == pytest.approx(drifted_ms if ppm > 0 else -drifted_ms, abs=60)


def sine_payloads(n, freq=220.0, amplitude=0.5):
    t = np.arange(n * FRAME) / 48000
    pcm = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    encoder = L16Encoder(FRAME)
    return [encoder.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(n)]


def test_stretching_a_sine_never_jumps():
    """A steady 220 Hz tone (no pauses), while the network delay creeps up by 150 ms over 30 s
    and then drops back at once: the buffer lengthens the tone as packets come later and
    shortens it when they are early again. No output sample may step further than the tone
    itself does (2 pi f A / fs per sample), and nothing is concealed (L16 conceals with silence)."""
    n = 2000  # 40 s
    arrivals = {i: i * STEP + (0.15 * min(i, 1500) / 1500 if i < 1600 else 0.0) for i in range(n)}
    config = JitterConfig(far_too_late_ms=100)  # (the default waits for 300: the 150 ms drop would stay)
    jb = JitterBuffer(L16Decoder(), config)
    out = drive(jb, arrivals, sine_payloads(n), n + 30)
    start = np.argmax(np.abs(out) > 0)
    end = len(out) - np.argmax(np.abs(out[::-1]) > 0)
    steps = np.abs(np.diff(out[start:end]))
    stats = jb.stats(n * STEP)
    # A tone has no pause: speech is shortened only down to `far_too_late_ms` above target. The
    # last packet's playout delay also counts what was queued before it: up to a packet more.
    excess = jb.playout_delay - jb.target_playout_delay(n * STEP)
    assert stats.expanded_ms >= 100 and stats.accelerated_ms >= 40
    assert excess <= config.far_too_late_ms / 1000 + FRAME / 48000
    assert stats.concealed_ms == 0
    assert steps.max() <= 1.02 * 2 * np.pi * 220 * 0.5 / 48000 + 1 / 32768  # L16 rounding


def test_after_a_two_second_outage_the_delay_is_back_on_target_within_five_seconds():
    """Two kinds of outage: the link drops 2 s of packets, or holds them and delivers them all
    at once when it comes back. Either way, 5 s after the link is back the buffer delay is
    within 10 ms of the target again (the stalled packets are not played 2 s late). 10 ms
    pulls, as in the drift test."""
    n = 1000
    for kind in ("dropped", "held"):
        arrivals = {}
        for i in range(n):
            t = i * STEP + abs(random.Random(i).gauss(0, 0.005))
            if 400 <= i < 500:  # 8 s to 10 s
                if kind == "dropped":
                    continue
                t = max(t, 10.0)
            arrivals[i] = t
        jb = JitterBuffer(L16Decoder())
        trace: list[tuple[float, float, float]] = []
        drive(jb, arrivals, [speechlike_payload(i) for i in range(n)], n + 30, trace, pull=480)
        settled = [abs(level - target) for t, level, target in trace if 15.0 <= t < 19.5]
        assert max(settled) <= JitterConfig().shorten_min_ms, kind  # within the shortening hysteresis
        assert jb.stats(n * STEP).concealed_ms >= 1800, kind  # the outage itself was concealed


def noise_payloads(n, level=0.03):
    """Steady noise at about -30 dBFS: a fan, a noisy line. No pauses, and no periods."""
    pcm = (level * np.random.default_rng(1).standard_normal(n * FRAME)).astype(np.float32)
    encoder = L16Encoder(FRAME)
    return [encoder.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(n)]


def stopped_sender_arrivals(n: int) -> dict[int, float]:
    """A sender stopped from 4 s to 7 s (SIGSTOP) that skips those timestamps, and whose first
    three packets after it come late, at once with the fourth, as its process catches up."""
    arrivals = {}
    for i in range(n):
        if 200 <= i < 350:
            continue
        arrivals[i] = i * STEP + abs(random.Random(i).gauss(0, 0.002))
        if 350 <= i < 353:
            arrivals[i] = max(arrivals[i], 353 * STEP)
    return arrivals


@pytest.mark.parametrize("sound", ["tone", "noise"])
def test_sound_that_never_pauses_is_back_on_target_within_five_seconds_of_an_outage(sound):
    """A sender stopped for 3 s (SIGSTOP) skips the time it missed, and its first packets after
    come late, at once, as its process catches up: the buffer, which plays the first at once,
    then holds ~60 ms more than its target. Speech gives that back in its next pause; a tone or
    steady noise has none, and kept it for the rest of the call (found in test_call's SIGSTOP
    test). Once no pause has come for `pause_wait_s` the buffer shortens the sound itself."""
    n = 700
    arrivals = stopped_sender_arrivals(n)
    payloads = sine_payloads(n) if sound == "tone" else noise_payloads(n)
    levels = {}
    for wait_s in (JitterConfig().pause_wait_s, 1e9):
        jb = JitterBuffer(L16Decoder(), JitterConfig(pause_wait_s=wait_s))
        trace: list[tuple[float, float, float]] = []
        drive(jb, arrivals, payloads, n + 30, trace, pull=480)
        levels[wait_s] = float(np.mean([level - target for t, level, target in trace if 12.0 <= t < 14.0]))
    config = JitterConfig()
    assert levels[config.pause_wait_s] <= config.shorten_min_ms + config.margin_ms  # the shortening hysteresis
    assert levels[1e9] >= 50.0  # never shortening: the excess stays, as it did


NOISY_PAUSE_FRAMES = 20  # 400 ms between "words": pauses between talkspurts, longer than a pause must be


def noisy_speechlike_payloads(n, noise_level=0.01):
    """`speechlike_payload` over steady noise at -40 dBFS: its pauses are never silent."""
    noise = (noise_level * np.random.default_rng(3).standard_normal(n * FRAME)).astype(np.float32)
    decoder, encoder = L16Decoder(), L16Encoder(FRAME)
    return [
        encoder.encode(decoder.decode(speechlike_payload(i, NOISY_PAUSE_FRAMES)) + noise[i * FRAME : (i + 1) * FRAME])
        for i in range(n)
    ]


class _Remembering(L16Decoder):
    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__()
        self.index = {payload: i for i, payload in enumerate(payloads)}
        self.last = -1

    def decode(self, payload: bytes):
        self.last = self.index[payload]
        return super().decode(payload)


class _WhereStretched(Timeline):
    """Notes, for every stretch, whether the packet just decoded was a word or a pause."""

    def __init__(self, decoder: _Remembering) -> None:
        super().__init__()
        self.decoder = decoder
        self.in_words: list[float] = []  # ms, of stretches inside the tone bursts

    def stretched(self, now: float, ms: float) -> None:
        super().stretched(now, ms)
        if in_word(self.decoder.last, NOISY_PAUSE_FRAMES):
            self.in_words.append(ms)


def test_a_noisy_line_gives_back_an_excess_in_its_pauses_not_in_its_words():
    """The outage of the test above, on speech over -40 dBFS noise. Its pauses are the noise
    floor, 30 dB under the talker: the buffer shortens there. Counting only what is under
    -45 dBFS as a pause, it finds none, and gives the excess back only once `pause_wait_s`
    has passed, wherever the cut then falls."""
    n = 700
    arrivals = stopped_sender_arrivals(n)
    payloads = noisy_speechlike_payloads(n)
    results = {}
    for relative in (True, False):
        decoder = _Remembering(payloads)
        timeline = _WhereStretched(decoder)
        jb = JitterBuffer(decoder, JitterConfig(relative_pauses=relative), timeline)
        trace: list[tuple[float, float, float]] = []
        drive(jb, arrivals, payloads, n + 30, trace, pull=480)
        excess = float(np.mean([level - target for t, level, target in trace if 9.0 <= t < 10.0]))
        results[relative] = (excess, sum(abs(ms) for ms in timeline.in_words))
    config = JitterConfig()
    assert results[True][0] <= config.shorten_min_ms + config.margin_ms  # given back within 2 s...
    assert results[True][1] == 0  # ...all of it in pauses
    assert results[False][0] >= results[True][0] + 5  # without them, it waits for `pause_wait_s`


@pytest.mark.parametrize("outage_s", [2.9, 3.0, 3.1, 3.5])
def test_packets_held_through_an_outage_are_counted_late_not_lost_from_the_books(outage_s):
    """A link that holds the packets of an outage and then delivers them at once, just ahead of
    the fresh ones (as a veth or a modem queue does), is no sender restarting its clock: the
    buffer, which concealed meanwhile, skips to the fresh packets. What it held and never played
    is counted late, every one: played + late = what came. 10 ms pulls, as in a call."""
    n, start = 200, 10  # marker payloads tell 200 packets apart
    held = round(outage_s / STEP)
    arrivals = {}
    for i in range(n):
        t = i * STEP + 0.002
        if start <= i < start + held:
            t = start * STEP + outage_s + 0.0001 * (i - start)  # in order, at once, first
        arrivals[i] = t
    jb = JitterBuffer(L16Decoder())
    pcm = drive(jb, arrivals, [marker_payload(i) for i in range(n)], n + 30, pull=480)
    played = {i for i in played_indices(pcm) if i is not None}
    stats = jb.stats(n * STEP)
    assert stats.packets_late >= held - 5, stats  # a few may still play as the skip lands
    assert len(played) + stats.packets_late == n, (len(played), stats)


def test_recurring_delay_spikes_are_ridden_over_once_they_repeat():
    """Every 3 s the path stalls for 300 ms, then delivers what it held: a tenth of the packets
    come up to 300 ms late, which costs a listener more than 300 ms of delay does (E-model),
    so once the model has seen them, the buffer holds enough for them."""
    n = 3000  # 60 s
    arrivals = {}
    for i in range(n):
        sent = i * STEP
        phase = sent % 3.0
        arrivals[i] = sent + (1.3 - phase if 1.0 <= phase < 1.3 else 0.0) + 0.001
    jb = JitterBuffer(L16Decoder(), timeline=Timeline())
    drive(jb, arrivals, [speechlike_payload(i) for i in range(n)], n + 30)
    timeline = jb.timeline
    assert timeline is not None
    assert sum(ms for t, ms in timeline.concealments if t < 10) >= 200  # the first could not be foreseen
    assert not [t for t, _ in timeline.concealments if t > 10] and not [t for t in timeline.late if t > 10]
    assert jb.stats(n * STEP).buffer_delay_ms < 400  # held over, not piled up


def test_a_longer_route_is_not_learnt_as_jitter():
    """The path's delay steps from 20 to 100 ms. Against the old floor the packets of the next
    2 s look 80 ms late; once every packet of half a second was, the floor moves up and they
    are counted again, so the target stays where a calm path puts it."""
    from voip.playout.delay import DelayModel

    model = DelayModel(JitterConfig())
    rng = random.Random(5)
    targets = {}
    for i in range(1000):  # 20 s, the step at 10 s
        path = 0.02 if i < 500 else 0.10
        model.observe(i * FRAME, i * STEP + path + abs(rng.gauss(0, 0.002)))
        targets[i] = model.target
    assert targets[499] <= 0.015
    assert max(targets[i] for i in range(600, 1000)) <= 0.015


def _pull_with_a_stall(jb, arrivals, payloads, ticks, stall):
    """Like `drive`, but the output stands still for the ticks in `stall` (no pulls), and the
    packets that came meanwhile are pushed before the next pull, as a stopped process reads
    them when it runs again."""
    events = sorted((t, i) for i, t in arrivals.items())
    out, k = [], 0
    for tick in range(ticks):
        if tick in stall:
            continue
        now = tick * STEP
        while k < len(events) and events[k][0] <= now:
            jb.push(events[k][1] * FRAME, payloads[events[k][1]], FRAME, events[k][0])
            k += 1
        out.append(jb.pull(FRAME, now))
    return np.concatenate(out)


def test_an_output_that_stood_still_skips_what_it_missed_and_keeps_its_delay():
    """No pulls for 2 s (the process, and its device, stopped): the 2 s of packets that came
    meanwhile are skipped, counted late, and playout goes on at the delay it had. Played, they
    would add the 2 s to every later packet's delay."""
    n = 190  # markers wrap at 200
    payloads = [marker_payload(i) for i in range(n)]
    jb = JitterBuffer(L16Decoder())
    pcm = _pull_with_a_stall(jb, {i: i * STEP for i in range(n)}, payloads, n, stall=range(50, 150))
    stats = jb.stats(n * STEP)
    played = [i for i in played_indices(pcm) if i is not None]
    assert 95 <= stats.packets_late <= 100 and stats.concealed_ms == 0
    assert played == sorted(played) and played[-1] >= n - 5  # live again, to the end
    steady = JitterBuffer(L16Decoder())
    drive(steady, {i: i * STEP for i in range(n)}, payloads, n)
    assert abs(jb.playout_delay - steady.playout_delay) < 0.010  # the delay of a run that never stood still


def test_an_output_and_a_sender_that_stood_still_together_skip_nothing_after():
    """No packets came while the output stood still (the sender stopped too, or the path was
    down): what comes after is live and plays, all of it. At most the packets that were
    already due when the output stopped are skipped."""
    n = 190
    payloads = [marker_payload(i) for i in range(n)]
    arrivals = {i: i * STEP + (2.0 if i >= 50 else 0.0) for i in range(n)}  # the sender's clock stood still too
    jb = JitterBuffer(L16Decoder())
    pcm = _pull_with_a_stall(jb, arrivals, payloads, n + 110, stall=range(51, 150))
    played = [i for i in played_indices(pcm) if i is not None]
    assert jb.stats((n + 110) * STEP).packets_late <= 2
    assert set(range(50, n)) <= set(played) and played == sorted(played)
