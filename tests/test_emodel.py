"""The E-model against the values ITU-T G.107 tabulates, and its inverse."""

import pytest

from voip.emodel import conversational_mos, estimate_mos, idd, ie_eff, mos_from_r, mouth_to_ear_ms, r_from_mos


def test_mos_from_r_at_known_points():
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(120) == 4.5
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)  # G.107's default connection
    assert mos_from_r(50) == pytest.approx(2.58, abs=0.01)


@pytest.mark.parametrize("mos", [1.2, 2.0, 3.1, 3.9, 4.4])
def test_r_from_mos_inverts(mos):
    assert mos_from_r(r_from_mos(mos)) == pytest.approx(mos, abs=1e-6)


def test_delay_costs_nothing_to_100_ms_then_grows():
    assert idd(50) == idd(100) == 0.0
    assert idd(150) < 0.5
    assert idd(200) == pytest.approx(3.0, abs=0.2)  # G.107 figure: about 3 at 200 ms
    assert idd(300) > 12 > idd(250) > idd(200)


def test_loss_impairment_rises_from_ie_toward_95():
    assert ie_eff(0.0, ie=10, bpl=10) == 10
    assert ie_eff(0.10, ie=10, bpl=10) == pytest.approx(10 + 85 * 10 / 20)
    assert ie_eff(0.01) < ie_eff(0.02) < 95


def test_conversational_mos_takes_only_the_delay_off():
    assert conversational_mos(3.5, 90) == pytest.approx(3.5, abs=1e-6)
    assert conversational_mos(3.5, 300) < conversational_mos(3.5, 200) < 3.5


def test_estimate_falls_with_loss_and_delay():
    ta = mouth_to_ear_ms(20, 6.5, 10, 30)
    assert ta == pytest.approx(106.5)
    assert estimate_mos(ta, 0.0) > estimate_mos(ta, 0.02) > estimate_mos(ta, 0.1)
    assert estimate_mos(400, 0.0) < estimate_mos(ta, 0.0)
