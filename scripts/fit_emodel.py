#!/usr/bin/env python3
"""Fit the E-model's Ie and Bpl for our Opus stream from PESQ-WB against random packet loss.

As ITU-T G.113 does for other codecs: the conversation of scripts/speech_corpus.py is
encoded (Opus 24 kbit/s, 20 ms, FEC off), packets are dropped at random (Bernoulli, several
seeds) and concealed in place by Opus PLC, and each output is scored by PESQ-WB per
utterance. Each score is turned into a rating R (G.107 Annex B, inverted), and
Ie_eff = R0 - R. Ie is Ie_eff without loss; Bpl is the least-squares fit of
Ie_eff(Ppl) = Ie + (95 - Ie) * Ppl / (Ppl + Bpl) over the loss rates. voip.emodel keeps
the fitted values (OPUS_IE, OPUS_BPL); docs/benchmarks.md the table this prints.

    .venv/bin/python scripts/fit_emodel.py [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speech_corpus import conversation

from voip.codec import OpusDecoder, OpusEncoder, OpusSettings
from voip.emodel import R0, r_from_mos
from voip.quality import utterance_pesq

FRAME = 960
LOSSES = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20)


def degraded(packets: list[bytes], loss: float, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    decoder = OpusDecoder()
    return np.concatenate([decoder.conceal(FRAME) if rng.random() < loss else decoder.decode(p) for p in packets])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    reference, utterances = conversation(60.0)
    reference = reference[: len(reference) // FRAME * FRAME]
    encoder = OpusEncoder(OpusSettings(fec=False))
    packets = [encoder.encode(reference[i : i + FRAME]) for i in range(0, len(reference), FRAME)]
    print("| loss % | PESQ-WB | R | Ie_eff |")
    print("|---:|---:|---:|---:|")
    measured = []
    for loss in LOSSES:
        pesq = float(
            np.mean([np.mean(utterance_pesq(reference, degraded(packets, loss, s), utterances)) for s in args.seeds])
        )
        rating = r_from_mos(pesq)
        measured.append((100 * loss, R0 - rating))
        print(f"| {100 * loss:g} | {pesq:.2f} | {rating:.1f} | {R0 - rating:.1f} |")
    ie = measured[0][1]
    lossy = [(p, value) for p, value in measured if p > 0]
    bpls = np.arange(1.0, 60.0, 0.25)
    errors = [sum((ie + (95 - ie) * p / (p + bpl) - value) ** 2 for p, value in lossy) for bpl in bpls]
    bpl = float(bpls[int(np.argmin(errors))])
    rms = (min(errors) / len(lossy)) ** 0.5
    print(f"\nIe = {ie:.1f}, Bpl = {bpl:.2f} (rms error {rms:.1f} R)")


if __name__ == "__main__":
    main()
