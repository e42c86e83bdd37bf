#!/usr/bin/env python3
"""Loss protection: speech quality at 1, 3 and 5% random loss, with none, in-band FEC, and
in-band FEC with each packet carrying a copy of the one before (RFC 2198 redundancy).

The whole call chain on a simulated clock (`voip.simulate`): the sender learns the loss from
the receiver's RTCP reports, as in a call, and only then tells libopus to expect it (and caps
the band at wideband, where libopus 1.3 adds FEC at these rates: voip.codec), and sends
copies if the row says so. Until the first loss is reported nothing is protected. Speech:
the 60 s conversation of scripts/speech_corpus.py;
Opus 24 kbit/s, 20 ms. Columns are means over seeds:
  PESQ      PESQ-WB of each utterance aligned on its own, averaged
  PLCMOS    PLCMOS v2 of the whole output
  FEC %     received packets that carried FEC for the one before
  rebuilt   lost packets rebuilt from FEC or a copy, % of those lost
  conc.     concealed audio, % of the stream
  buffer    mean buffer delay, ms

    scripts/setup --bench
    .venv/bin/python scripts/bench_fec.py [--seeds 1 2 3] [--losses 1 3 5] [--burst 1]
        [--fec-bitrates off 32000 red]
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
from voip.quality import plcmos, utterance_pesq
from voip.session import SessionConfig
from voip.simulate import simulate


def _variant(rate: str) -> tuple[str, SessionConfig]:
    """A row's name and settings: off, a FEC bitrate, or red (FEC and copies)."""
    if rate == "red":
        return "on, 32k, copies", SessionConfig(plain_peer_takes_redundancy=True)
    if rate == "off":
        return "off", SessionConfig(opus=OpusSettings(fec=False), redundancy=False)
    return f"on, {int(rate) // 1000 or 24}k", SessionConfig(opus=OpusSettings(fec_bitrate=int(rate)), redundancy=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--losses", type=float, nargs="+", default=[1.0, 3.0, 5.0], help="random loss, %%")
    parser.add_argument("--burst", type=float, default=1.0, help="mean length of a loss burst, packets")
    parser.add_argument(
        "--fec-bitrates",
        nargs="+",
        default=["off", str(OpusSettings().fec_bitrate), "red"],
        help="a row for each: off (no FEC), FEC on with this bitrate while loss is expected (0: the "
        "stream's 24000), or red (FEC at the default bitrate and copies)",
    )
    args = parser.parse_args()
    speech, utterances = conversation(60.0)
    print(f"60 s conversation, Opus 24 kbit/s, 20 ms, seeds {args.seeds}, loss bursts of {args.burst:g}\n")
    print("| loss | FEC | PESQ-WB | PLCMOS | FEC % | rebuilt % | conc. % | buffer ms | kbit/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    variants = [_variant(rate) for rate in args.fec_bitrates]
    for loss in args.losses:
        for name, config in variants:
            rows = []
            for seed in args.seeds:
                network = NetworkSpec(loss=loss / 100.0, burst=args.burst)
                result = simulate(speech, config, network, seed)
                r = result.receiver
                rows.append(
                    (
                        float(np.mean(utterance_pesq(speech, result.output, utterances))),
                        plcmos(result.output),
                        100.0 * r.fec_packets_received / max(1, r.packets_received),
                        100.0 * r.fec_recovered / max(1, r.packets_lost),
                        100.0 * r.concealed_ms / (1000.0 * len(speech) / 48000),
                        r.buffer_delay_ms,
                        result.sender.bitrate_kbps,
                    )
                )
            m = np.mean(rows, axis=0)
            print(
                f"| {loss:g}% | {name} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.0f} | {m[3]:.0f} "
                f"| {m[4]:.1f} | {m[5]:.0f} | {m[6]:.1f} |"
            )


if __name__ == "__main__":
    main()
