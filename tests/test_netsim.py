import itertools
import random

import pytest

from voip.netsim import NetworkSimulator, NetworkSpec


def run(spec: str, seed: int, packets: int = 20000) -> tuple[NetworkSimulator, list[bytes]]:
    sim = NetworkSimulator(NetworkSpec.parse(spec), random.Random(seed))
    out = []
    for i in range(packets):
        sim.send(i.to_bytes(4, "big"), i * 0.02)
        out += sim.deliver(i * 0.02)
    out += sim.deliver(float("inf"))
    return sim, out


def test_same_seed_same_network():
    spec = "delay=40ms,jitter=20ms,loss=5%,burst=3,reorder=1%,duplicate=1%"
    assert run(spec, 7)[1] == run(spec, 7)[1]
    assert run(spec, 7)[1] != run(spec, 8)[1]


def test_random_and_bursty_loss_rates_and_burst_length():
    for spec, burst in (("loss=10%", 1.0), ("loss=10%,burst=4", 4.0)):
        _sim, out = run(spec, 1)
        received = {int.from_bytes(d, "big") for d in out}
        lost = [i for i in range(20000) if i not in received]
        assert 0.08 < len(lost) / 20000 < 0.12
        runs = sum(1 for k, i in enumerate(lost) if k == 0 or lost[k - 1] != i - 1)
        assert burst * 0.8 < len(lost) / runs < burst * 1.25


def test_jitter_reorders_and_duplicates_arrive():
    _, out = run("delay=50ms,jitter=30ms,duplicate=5%", 2, 5000)
    order = [int.from_bytes(d, "big") for d in out]
    assert any(b < a for a, b in itertools.pairwise(order))  # reordered
    assert 0.03 < (len(order) - len(set(order))) / 5000 < 0.07


def test_spec_errors_are_clear():
    for bad, message in (("loss=5ms", "loss"), ("speed=3", "bad network item"), ("loss=120%", "loss")):
        with pytest.raises(ValueError, match=message):
            NetworkSpec.parse(bad)
    assert NetworkSpec.parse("delay=40ms, loss=5%").describe() == "delay=40ms,loss=5%"


def test_drift_is_parsed_signed_and_bounded():
    assert NetworkSpec.parse("drift=-1000ppm").drift_ppm == -1000
    assert NetworkSpec.parse("jitter=5ms,drift=+250").drift_ppm == 250
    assert NetworkSpec.parse("drift=-1000ppm").describe() == "drift=-1000ppm"
    for bad in ("drift=20000ppm", "drift=5ms", "loss=-5%"):
        with pytest.raises(ValueError):
            NetworkSpec.parse(bad)
