"""`voip devices`: the audio devices PortAudio sees (a module of its own, so that listing them loads nothing else)."""

from __future__ import annotations

import argparse

from voip.errors import VoipError
from voip.io.audio import list_devices


def run_devices(args: argparse.Namespace) -> int:
    devices = list_devices()
    if not devices:
        raise VoipError("no audio devices found: is a sound server running? (scripts/virtual-audio provides one)")
    print(f"{'':2}{'index':>5}  {'name':32} {'host API':10} {'in':>3} {'out':>3} {'rate':>7}")
    for d in devices:
        mark = "*" if d.default_input or d.default_output else " "
        defaults = [w for w, yes in (("default input", d.default_input), ("default output", d.default_output)) if yes]
        note = f"  ({', '.join(defaults)})" if defaults else ""
        print(
            f"{mark:2}{d.index:>5}  {d.name[:32]:32} {d.host_api[:10]:10} {d.input_channels:>3} "
            f"{d.output_channels:>3} {d.default_rate:>7.0f}{note}"
        )
    return 0
