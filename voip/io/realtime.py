"""Real-time scheduling for the threads that feed the sound card.

A sound card asks for a block every 20 ms whatever else the machine does. At normal
priority, the thread that answers waits its turn behind every other runnable process, so
a busy machine (a build, a browser) makes the device run dry (measured by `scripts/soak
busy`, in docs/robustness.md). Audio programs ask for SCHED_FIFO for this reason.
PipeWire's own data thread runs at priority 88; ours stay well below it, so that the
server always runs first.

Granted to root, and wherever RLIMIT_RTPRIO allows it: Debian's pipewire package gives the
`pipewire` group rtprio 95. Elsewhere the request fails and nothing changes (`voip doctor`
says so). A thread in SCHED_FIFO that never blocked would keep a core to itself; the kernel
keeps 5% of each second for everyone else, and our threads block on every block.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

LOOP_PRIORITY = 10  # the media loop: decodes, encodes and answers the device
CALLBACK_PRIORITY = 11  # PortAudio's callback threads: they only copy, and must never wait on the loop


def make_this_thread_realtime(priority: int) -> bool:
    """Put the calling thread in SCHED_FIFO at `priority`; False where that is not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread, on Linux
    except (OSError, AttributeError):  # not permitted (EPERM), or not Linux
        return False
    return True


@contextlib.contextmanager
def realtime_thread(priority: int) -> Iterator[bool]:
    """The calling thread in SCHED_FIFO at `priority` for the block, where permitted; then as it was."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    except (OSError, AttributeError):  # not Linux
        yield False
        return
    granted = make_this_thread_realtime(priority)
    try:
        yield granted
    finally:
        if granted:
            os.sched_setscheduler(0, policy, param)


def realtime_permitted() -> bool:
    """Whether a thread of this process may use SCHED_FIFO: tried on a thread that then ends."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(make_this_thread_realtime(LOOP_PRIORITY)))
    thread.start()
    thread.join()
    return result == [True]
