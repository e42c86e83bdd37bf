"""The jitter buffer's settings, in one place; docs/benchmarks.md says where the values were measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JitterConfig:
    min_delay_ms: float = 0.0  # bounds of the target (--jitter-min-ms, --jitter-max-ms)
    max_delay_ms: float = 500.0
    # The delay model (voip.playout.delay)
    bucket_ms: float = 5.0  # resolution of the relative-delay histogram
    forget_factor: float = 0.9993  # per packet: a memory of ~1400 packets, ~28 s at 20 ms
    reference_window_s: float = 20.0  # relative delay is transit above the least of this long
    floor_rise_ms: float = 20.0  # every packet of floor_rise_s this far above the floor: the route changed
    floor_rise_s: float = 2.0
    outage_s: float = 2.0  # no packet for this long: the floor starts over from the packets after the outage
    initial_delay_ms: float = 20.0  # a prior: a few packets this late, so a call starts with a cushion
    target_hysteresis_r: float = 0.5  # the target falls only to a delay this much better by the E-model (R)
    calm_window_s: float = 10.0  # the target covers no more than the latest packets of this long needed...
    calm_margin_ms: float = 25.0  # ...plus this: a jittery spell this long past costs no more delay
    fixed_ms: float = 26.5  # mouth-to-ear delay besides path, buffer and devices: frame and lookahead
    # The engine and its policy (voip.playout.engine, voip.playout.policy)
    max_packets: int = 500
    resync_after_s: float = 3.0  # a timestamp this far ahead of playout: the sender restarted
    delay_window_s: float = 1.0  # the least punctual packet of this long measures the buffer's level
    margin_ms: float = 2.5  # how early the least punctual packet should arrive before it is needed
    fec_memory_s: float = 10.0  # a packet with FEC came this recently: the stream carries FEC (the sender saw loss)
    max_stretch_rate: float = 0.15  # time-stretching of speech, as a fraction of the audio played
    shorten_min_ms: float = 20.0  # shorten only when this much can go
    speech_deficit_ms: float = 2.5  # lengthen speech only when this far short of target; less waits for a pause
    far_too_late_ms: float = 300.0  # shorten speech only when this far above target
    relative_pauses: bool = True  # sound near the noise floor, well under the talker, is a pause too
    pause_wait_s: float = 4.0  # or when no pause came for this long (music, a tone, steady noise)
    # A pull this much later than the last one's audio ran out: the output stood still. Well
    # above the gaps of devices that ask for several blocks at once.
    output_stall_ms: float = 500.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError(
                f"jitter bounds must satisfy 0 <= min <= max, got {self.min_delay_ms} and {self.max_delay_ms} ms"
            )
        if self.calm_window_s <= 0 or self.calm_margin_ms < 0:
            raise ValueError(
                f"the calm window must be positive and its margin not negative, "
                f"not {self.calm_window_s} s and {self.calm_margin_ms} ms"
            )
        if not 0 < self.forget_factor < 1:
            raise ValueError(f"forget factor must be between 0 and 1, not {self.forget_factor}")
