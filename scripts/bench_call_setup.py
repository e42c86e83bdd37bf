#!/usr/bin/env python3
"""Call setup time on 127.0.0.1: from `voip call` starting (after interpreter start-up and
imports) to its first audio packet sent, against a `voip listen --auto-answer` already running.

Each call reports `call_setup_ms` in its --stats-json; the interpreter start-up and the
import of voip are measured beside it, so the whole wait a user sees is accounted for.

    .venv/bin/python scripts/bench_call_setup.py [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOIP = [sys.executable, "-m", "voip"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wall_ms(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    files = ["--in", "silence", "--out", "null", "--quiet"]
    listener = subprocess.Popen(
        [*VOIP, "listen", "--auto-answer", "--bind", "127.0.0.1", "--port", str(port), *files],
        start_new_session=True,
    )
    setups: list[float] = []
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            stats = Path(tmp) / "stats.json"
            for _ in range(args.calls):
                subprocess.run(
                    [*VOIP, "call", f"127.0.0.1:{port}", *files, "--duration", "0.2", "--stats-json", str(stats)],
                    check=True,
                    timeout=30,
                )
                setups.append(json.loads(stats.read_text())["call_setup_ms"])
    finally:
        os.killpg(listener.pid, signal.SIGKILL)
        listener.wait(timeout=10)
    interpreter = wall_ms([sys.executable, "-c", "pass"], 5)
    imports = wall_ms([sys.executable, "-c", "import voip.cli"], 5)
    print(f"{args.calls} calls to `voip listen --auto-answer` on 127.0.0.1\n")
    print("| part | median ms | min ms | max ms |")
    print("|---|---:|---:|---:|")
    print(f"| python start-up | {interpreter:.1f} | | |")
    print(f"| python start-up + import voip.cli | {imports:.1f} | | |")
    print(
        f"| call setup: start of `voip call` to first audio packet sent | {statistics.median(setups):.1f} "
        f"| {min(setups):.1f} | {max(setups):.1f} |"
    )
    print("\ngoal: call setup < 50 ms")


if __name__ == "__main__":
    main()
