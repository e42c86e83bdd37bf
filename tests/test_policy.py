"""The playout policy, case by case: a situation in, a decision out."""

from dataclasses import replace

import pytest

from voip.playout.policy import KEEP, Action, Decision, Situation, decide

PULL = 480  # 10 ms
BASE = Situation(
    excess=0.0,
    headroom=0.03,
    margin=0.0025,
    in_pause=False,
    pause_overdue=False,
    spare=0,
    pull=PULL,
    settled=True,
    ended=False,
    shorten_min=960,
    speech_deficit=0.02,
    far_too_late=0.1,
)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, KEEP),  # on target
        ({"excess": -0.01}, KEEP),  # a little short, in speech: wait for a pause
        ({"excess": -0.01, "in_pause": True}, Decision(Action.LENGTHEN, 480)),  # a pull's worth, in the pause
        ({"excess": -0.012, "in_pause": True, "spare": 100}, Decision(Action.LENGTHEN, 860)),  # two pulls less spare
        ({"excess": -0.03}, Decision(Action.LENGTHEN, 1440)),  # far short: speech too
        ({"excess": -0.05}, Decision(Action.LENGTHEN, 2400, any_period=True)),  # an emergency
        ({"excess": -0.01, "headroom": 0.001}, Decision(Action.LENGTHEN, 480)),  # about to come late
        ({"excess": -0.01, "headroom": -0.001}, Decision(Action.LENGTHEN, 480, any_period=True)),
        ({"excess": -0.05, "ended": True}, KEEP),  # after BYE nothing will fill it
        ({"excess": 0.03}, KEEP),  # too much, in speech: wait for a pause
        ({"excess": 0.03, "in_pause": True}, Decision(Action.SHORTEN, 1440)),
        ({"excess": 0.015, "in_pause": True}, KEEP),  # less than shorten_min can go
        ({"excess": 0.015, "in_pause": True, "spare": 480}, Decision(Action.SHORTEN, 960)),
        ({"excess": 0.03, "in_pause": True, "settled": False}, KEEP),  # only the spare, until settled
        ({"excess": 0.12}, Decision(Action.SHORTEN, 5760)),  # far too late: speech too
        (
            {"excess": 0.03, "pause_overdue": True},
            Decision(Action.SHORTEN, 1440, any_period=True),
        ),  # no pause is coming
        ({"excess": 0.015, "pause_overdue": True}, KEEP),  # ...but less than shorten_min can go
        ({"excess": -0.01, "pause_overdue": True}, KEEP),  # short of target: lengthening has its own rules
        ({"excess": -0.0002, "in_pause": True}, KEEP),  # rounding, not a shortfall
    ],
)
def test_policy_table(change, expected):
    assert decide(replace(BASE, **change)) == expected
