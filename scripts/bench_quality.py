#!/usr/bin/env python3
"""Speech quality and delay through the simulated network: one row per network and FEC setting.

The loopback chain on a simulated clock (`voip.simulate`), the bundled speech, Opus 24 kbit/s,
20 ms frames; PESQ-WB (P.862.2) against the source after alignment. Deterministic for a seed.

    .venv/bin/python scripts/bench_quality.py [--seed 5]
"""

from __future__ import annotations

import argparse

from voip import SAMPLE_RATE
from voip.codec import OpusSettings
from voip.io.files import bundled_speech, read_48k
from voip.netsim import NetworkSpec
from voip.quality import pesq_wb
from voip.session import SessionConfig
from voip.simulate import simulate

NETWORKS = [
    ("clean", (True,)),
    ("loss=10%", (True, False)),
    ("loss=10%,burst=3", (True, False)),
    ("jitter=20ms", (True,)),
    ("delay=40ms,jitter=20ms,loss=5%,burst=3,reorder=1%,duplicate=1%", (True, False)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    speech = read_48k(bundled_speech())
    print(f"seed {args.seed}, bundled speech {len(speech) / SAMPLE_RATE:.1f} s, Opus 24 kbit/s, 20 ms frames\n")
    columns = ["network", "FEC", "PESQ-WB", "fec_recovered", "concealed_ms", "accel. / expanded ms", "buffer_delay_ms"]
    print("| " + " | ".join(columns) + " (mean / p95) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec, fec_settings in NETWORKS:
        for fec in fec_settings:
            result = simulate(
                speech,
                SessionConfig(opus=OpusSettings(fec=fec)),
                NetworkSpec.parse(spec) if spec != "clean" else NetworkSpec(),
                args.seed,
            )
            r = result.receiver
            print(
                f"| {spec} | {'on' if fec else 'off'} | {pesq_wb(speech, result.output):.2f} | {r.fec_recovered} "
                f"| {r.concealed_ms:.0f} | {r.accelerated_ms:.0f} / {r.expanded_ms:.0f} "
                f"| {r.buffer_delay_ms:.0f} / {r.buffer_delay_p95_ms:.0f} |"
            )


if __name__ == "__main__":
    main()
