"""Options shared by the commands, and what they turn into: session settings, a simulated network."""

from __future__ import annotations

import argparse
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from voip import SAMPLE_RATE
from voip.errors import VoipError
from voip.netsim import NetworkSimulator, NetworkSpec

if TYPE_CHECKING:  # the settings' modules load numpy and libopus: only a command that runs needs them
    from voip.processing import ProcessingSettings
    from voip.room import RoomSpec
    from voip.session import Address, SessionConfig

Number = TypeVar("Number", int, float)

DEFAULT_PORT = 5004
MAX_WRONG_CODES = 3  # a listener (or receiver) with a code stops after this many: each call tests one guess
SOURCES = "mic, mic:NAME_OR_INDEX, an audio file (wav/flac/ogg), speech (a bundled sample), tone:HZ or silence"


def add_out_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--out",
        action="append",
        metavar="SINK",
        help="where received audio goes: speaker, speaker:NAME_OR_INDEX, a .wav/.flac/.ogg path to "
        f"record into, or null (repeatable; default {default})",
    )
    parser.set_defaults(default_out=default)


def add_codec_options(parser: argparse.ArgumentParser, sending: bool = True) -> None:
    group = parser.add_argument_group("audio")
    if sending:
        group.add_argument("--bitrate", type=_bitrate, default=24000, help="Opus bitrate, bit/s or 24k")
        group.add_argument("--frame-ms", type=int, choices=(10, 20, 40, 60), default=20, help="frame size")
        group.add_argument("--complexity", type=int, choices=range(11), default=10, metavar="0..10")
        group.add_argument(
            "--fec",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Opus in-band FEC, driven by the loss the receiver reports (default on)",
        )
        group.add_argument(
            "--fec-bitrate",
            type=_fec_bitrate,
            default=32000,
            help="Opus bitrate while the receiver reports loss and FEC is on, so the FEC copy has "
            "bits of its own rather than the frame's (default 32k; 0: keep --bitrate)",
        )
        group.add_argument(
            "--redundancy",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="until the receiver's first report and while it reports loss, each packet also carries "
            "the one before it (RFC 2198), "
            "so a lost packet plays as sent: twice the audio bits. Only to a voip peer that takes it "
            "(a call says so; ffmpeg and GStreamer get plain Opus). Default on",
        )
        group.add_argument(
            "--dtx", action=argparse.BooleanOptionalAction, default=False, help="discontinuous transmission"
        )
    else:
        parser.set_defaults(
            bitrate=24000, frame_ms=20, complexity=10, fec=True, fec_bitrate=32000, redundancy=True, dtx=False
        )
    group.add_argument("--jitter-min-ms", type=_delay_ms, default=0.0, help="lower bound of playout delay")
    group.add_argument("--jitter-max-ms", type=_delay_ms, default=500.0, help="upper bound of playout delay")
    group.add_argument("--payload-type", type=_payload_type, default=111, help="RTP payload type (default 111)")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What no single option can check: before anything opens, argparse's one line and exit 2."""
    low, high = getattr(args, "jitter_min_ms", None), getattr(args, "jitter_max_ms", None)
    if low is not None and high is not None and low > high:
        parser.error(f"--jitter-min-ms {low:g} is above --jitter-max-ms {high:g}")


def add_network_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulated network")
    group.add_argument(
        "--network",
        type=_network,
        default=NetworkSpec(),
        metavar="SPEC",
        help="impairment, e.g. delay=40ms,jitter=20ms,loss=5%%,burst=3,reorder=1%%,duplicate=1%%; "
        "drift=-500ppm runs a file source's clock that much slow (or fast) against the receiver's",
    )
    group.add_argument("--seed", type=int, default=None, help="make the simulated network repeatable")


def add_run_options(parser: argparse.ArgumentParser, plot: bool = True) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--duration", type=positive_seconds, default=None, help="stop after S seconds")
    group.add_argument("--stats-json", metavar="PATH", help="write the final statistics as JSON")
    group.add_argument(
        "--metrics",
        metavar="PATH",
        help="append every statistic once a second, one JSON object per line (JSON Lines), to PATH; - for stdout",
    )
    if plot:
        group.add_argument(
            "--plot",
            metavar="PATH.png",
            help="draw what the jitter buffer saw and did: arrival delay, target and playout delay, "
            "losses, late packets, stretches (needs matplotlib)",
        )
    else:
        parser.set_defaults(plot=None)
    group.add_argument("--quiet", action="store_true", help="no status line")


def add_processing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "speakerphone processing (on when the microphone is used, or with --room; off for files and tones)"
    )
    group.add_argument("--no-aec", action="store_true", help="no echo cancellation (use it with headphones)")
    group.add_argument("--no-ns", action="store_true", help="no noise suppression")
    group.add_argument("--no-agc", action="store_true", help="no automatic gain control")
    group.add_argument(
        "--room",
        type=_room,
        metavar="SPEC",
        help="a simulated room between what we play and what we capture, e.g. "
        "delay=60ms,echo=-6dB,rt60=300ms,noise=-45dB,seed=1: to try echo cancellation without speakers",
    )


def _room(text: str) -> RoomSpec:
    from voip.room import RoomSpec

    try:
        return RoomSpec.parse(text)
    except VoipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def processing_settings(args: argparse.Namespace) -> ProcessingSettings:
    from voip.processing import ProcessingSettings

    return ProcessingSettings(
        echo_cancellation=not args.no_aec, noise_suppression=not args.no_ns, gain_control=not args.no_agc
    )


def _bitrate(text: str) -> int:
    value = text.strip().lower()
    scale = 1000 if value.endswith("k") else 1
    try:
        bps = int(float(value.rstrip("k")) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad bitrate {text!r}: use bit/s, e.g. 24000 or 24k") from None
    if not 6000 <= bps <= 510000:
        raise argparse.ArgumentTypeError(f"bitrate {bps} out of Opus's range 6000..510000 bit/s")
    return bps


def _fec_bitrate(text: str) -> int:
    return 0 if text.strip() == "0" else _bitrate(text)


def _network(text: str) -> NetworkSpec:
    try:
        return NetworkSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded(
    name: str, convert: Callable[[str], Number], low: Number, high: Number, allowed: str
) -> Callable[[str], Number]:
    """An argparse type: a number of `convert`'s kind within low..high, or one line that says which."""

    def parse(text: str) -> Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad {name} {text!r}: expected a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value:g} is out of range: {allowed}")
        return value

    return parse


port_number = _bounded("port", int, 0, 65535, "1..65535 (0 for any free port)")
_delay_ms = _bounded("delay", float, 0.0, 10000.0, "0..10000 ms")
_payload_type = _bounded("payload type", int, 0, 127, "0..127 (Opus uses 96..127)")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return value


def session_config(args: argparse.Namespace, remote: Address | None = None) -> SessionConfig:
    from voip.codec import OpusSettings
    from voip.playout import JitterConfig
    from voip.rtcp import NTP_EPOCH_OFFSET
    from voip.session import SessionConfig

    try:
        opus = OpusSettings(
            bitrate=args.bitrate,
            frame_ms=args.frame_ms,
            complexity=args.complexity,
            fec=args.fec,
            fec_bitrate=args.fec_bitrate,
            dtx=args.dtx,
        )
        jitter = JitterConfig(min_delay_ms=args.jitter_min_ms, max_delay_ms=args.jitter_max_ms)
        return SessionConfig(
            opus=opus,
            jitter=jitter,
            payload_type=args.payload_type,
            cname=f"voip@{socket.gethostname()}",
            ntp_offset=time.time() - time.monotonic() + NTP_EPOCH_OFFSET,
            remote=remote,
            redundancy=args.redundancy,
        )
    except ValueError as exc:
        raise VoipError(str(exc)) from None


def check_drift(args: argparse.Namespace, source: str) -> None:
    """drift= runs a file source's clock off; a microphone keeps its own, so say so instead of ignoring it."""
    if args.network.drift_ppm and source.startswith("mic"):
        raise VoipError("--network drift= runs a file source's clock fast or slow; a microphone keeps its own clock")


def frame_samples(args: argparse.Namespace) -> int:
    return int(args.frame_ms * SAMPLE_RATE // 1000)


def simulator(
    args: argparse.Namespace, rng: random.Random | None = None
) -> NetworkSimulator[tuple[bytes, Address]] | None:
    if args.network == NetworkSpec():
        return None
    seed_source = rng or random.Random(args.seed)
    return NetworkSimulator(args.network, random.Random(seed_source.getrandbits(64)))
