#!/usr/bin/env python3
"""Speech quality and delay through the simulated network: one row per network and FEC setting.

The loopback chain on a simulated clock (`voip.simulate`), the 60 s conversation of
scripts/speech_corpus.py, Opus 24 kbit/s, 20 ms frames; PESQ-WB (P.862.2) of each
utterance aligned on its own, averaged (one alignment for a whole clip scores a buffer that
moved its delay against the wrong samples). Deterministic for a seed.

    .venv/bin/python scripts/bench_quality.py [--seed 5]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speech_corpus import conversation

from voip.codec import OpusSettings
from voip.netsim import NetworkSpec
from voip.quality import utterance_pesq
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
    speech, utterances = conversation(60.0)
    print(f"seed {args.seed}, 60 s conversation, Opus 24 kbit/s, 20 ms frames\n")
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
            pesq = float(np.mean(utterance_pesq(speech, result.output, utterances)))
            print(
                f"| {spec} | {'on' if fec else 'off'} | {pesq:.2f} | {r.fec_recovered} "
                f"| {r.concealed_ms:.0f} | {r.accelerated_ms:.0f} / {r.expanded_ms:.0f} "
                f"| {r.buffer_delay_ms:.0f} / {r.buffer_delay_p95_ms:.0f} |"
            )


if __name__ == "__main__":
    main()
