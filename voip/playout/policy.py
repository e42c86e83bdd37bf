"""The playout decision, as a pure function: the situation in, what to do with the next packet out.

After NetEq's split of "what is the situation" from "what do we do". The engine fills a
`Situation` for every packet it decodes; `decide` says whether to play it as it is,
lengthen it (play more audio than it holds, so every later packet is needed later) or
shorten it, and by how much. How is the engine's (`voip.playout.stretch`).

Why these rules (measured in docs/benchmarks.md):
* any change of delay inside an utterance is a time warp that listeners and PESQ hear,
  so the buffer moves in pauses: it lengthens a quiet packet at once, and shortens once
  `shorten_min` can go;
* in speech it lengthens only when the buffer is short of its target by more than
  `speech_deficit` (the target rose a lot), or when packets are about to come late (the
  least punctual one had less than `margin` to spare); it shortens only when far too
  much is buffered (`far_too_late`), as with clock drift piling up;
* sound that never pauses (music, a tone, a line with steady noise) would keep whatever it
  buffered for ever: once no pause has come for `pause_wait_s`, it is shortened in place,
  where its periods match or not (noise has none);
* needs come at pulls: what is queued beyond the next pull (`spare`) can be cut without
  moving any need; beyond that, each pull crossed moves every later need a pull sooner.
  Lengthening gains punctuality only when it crosses a pull.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from voip import SAMPLE_RATE

TOLERANCE_S = 0.0005  # a shortfall this small is rounding, not a reason to stretch


class Action(Enum):
    KEEP = "keep"
    LENGTHEN = "lengthen"
    SHORTEN = "shorten"


@dataclass(frozen=True)
class Situation:
    excess: float  # seconds the buffer holds above its target (negative: short of it)
    headroom: float  # seconds the least punctual packet of the window arrived before it was needed
    margin: float  # seconds of headroom below which packets are about to come late
    in_pause: bool  # deep enough in quiet audio that a change of delay is inaudible
    pause_overdue: bool  # no pause for so long that none is coming soon
    spare: int  # samples queued beyond the next pull's need: cut without moving any need
    pull: int  # samples per pull
    settled: bool  # the punctuality window has seen a whole window since the last change
    ended: bool  # the sender said BYE: nothing will come to fill a lengthening
    shorten_min: int  # samples: shorten only when at least this much can go
    speech_deficit: float  # seconds short of target before speech is lengthened
    far_too_late: float  # seconds above target before speech is shortened


@dataclass(frozen=True)
class Decision:
    action: Action
    samples: int = 0  # how much to add or cut
    any_period: bool = False  # stretch sound even where its periods match poorly (an emergency, no pauses)


KEEP = Decision(Action.KEEP)


def decide(s: Situation) -> Decision:
    if s.excess < -TOLERANCE_S:
        emergency = s.headroom < s.margin
        if s.ended or not (s.in_pause or emergency or s.excess < -s.speech_deficit):
            return KEEP
        crossings = math.ceil(-s.excess * SAMPLE_RATE / s.pull)
        any_period = s.headroom < 0 or s.excess < -2 * s.speech_deficit
        return Decision(Action.LENGTHEN, crossings * s.pull - s.spare, any_period)
    whole_pulls = s.pull * math.floor(s.excess * SAMPLE_RATE / s.pull) if s.settled else 0
    cuttable = s.spare + max(0, whole_pulls)
    if cuttable < s.shorten_min or not (s.in_pause or s.pause_overdue or s.excess >= s.far_too_late):
        return KEEP
    return Decision(Action.SHORTEN, cuttable, any_period=s.pause_overdue and not s.in_pause)
