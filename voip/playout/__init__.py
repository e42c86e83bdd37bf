"""The jitter buffer, one job per module.

store.py    packets by unwrapped timestamp; duplicate and late detection
delay.py    the delay model: arrivals in, a read-only target out (E-model trade-off)
policy.py   a pure decision per packet: keep, lengthen or shorten, and by how much
pauses.py   what counts as a pause, where the delay may change unheard
stretch.py  time-stretching by pitch periods
engine.py   named states, pulls, concealment and FEC, events
"""

from voip.playout.config import JitterConfig
from voip.playout.engine import JitterBuffer, JitterStats, PlayoutState, StateChanged
from voip.playout.store import PushResult

__all__ = ["JitterBuffer", "JitterConfig", "JitterStats", "PlayoutState", "PushResult", "StateChanged"]
