"""Command line: the `voip` program's arguments and exit codes; the commands live beside it."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from voip import __version__
from voip.cli.options import (
    DEFAULT_PORT,
    MAX_WRONG_CODES,
    SOURCES,
    add_codec_options,
    add_network_options,
    add_out_option,
    add_processing_options,
    add_run_options,
    check_args,
    port_number,
    positive_seconds,
)
from voip.errors import CodecError, DeviceGone, VoipError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args.command_parser, args)
    handler = _handler(args.handler)
    args.started = time.monotonic()  # once the command's modules are loaded: what `call_setup_ms` counts from
    # SIGTERM (kill, a service manager) stops a run as Ctrl-C does: hung up, files closed, summary shown
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if getattr(args, "plot", None):
            from voip.io.plot import check_plot_path

            check_plot_path(args.plot)  # before the call, not after it
        return int(handler(args))
    except DeviceGone as exc:
        print(f"voip: {exc}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # PortAudio's threads for the lost device never return: skip its exit handler
    except (VoipError, CodecError) as exc:
        print(f"voip: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the media loop took over
        return 130


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    """A command's function, imported only when it runs: `voip --help` loads none of them."""
    module, function = name.split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f"voip.cli.{module}"), function)
    return handler


# ---- arguments ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voip",
        description="Real-time voice over UDP: Opus in RTP (RFC 3550, RFC 7587) with an adaptive "
        "jitter buffer, packet-loss concealment and in-band FEC.",
    )
    parser.add_argument("--version", action="version", version=f"voip {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    send = commands.add_parser(
        "send",
        help="stream an audio file to a host in real time",
        description="Stream an audio file (wav, flac, ogg; any rate, mixed to mono) in real time "
        "to HOST[:PORT]. To `voip receive` it is encrypted: keys are agreed first (as in a call) and "
        "both sides show the same two words. For ffmpeg or GStreamer, write an SDP with the key "
        "(--sdp) or send plain RTP (--insecure). Sends RTCP BYE at the end. "
        "FILE may also be mic or mic:NAME to stream a microphone.",
    )
    send.add_argument("file", help=f"what to send: {SOURCES}")
    send.add_argument("destination", metavar="HOST[:PORT]", help=f"receiver address (port {DEFAULT_PORT})")
    send.add_argument(
        "--sdp",
        metavar="PATH",
        help="write an SDP description of the stream (for ffmpeg or GStreamer); the stream is then SRTP "
        "and the file holds its key (SDES): keep it secret, or add --insecure for plain RTP",
    )
    send.add_argument(
        "--insecure",
        action="store_true",
        help="plain RTP that anyone on the path can hear (for ffmpeg or GStreamer without an SDP); "
        "with --sdp, no key in it",
    )
    send.add_argument(
        "--code",
        metavar="CODE",
        help="the code `voip receive --code` printed: the stream is then authenticated by it, no words to compare",
    )
    send.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        help="give up when nothing came from the receiver for this long (default 30 s; a receiver that "
        "never answers the key agreement, after 10 s or this, if shorter)",
    )
    add_codec_options(send)
    add_network_options(send)
    add_run_options(send, plot=False)
    send.set_defaults(handler="streams:run_send")

    receive = commands.add_parser(
        "receive",
        help="receive a stream and record it",
        description="Receive one RTP/Opus stream (from `voip send`, ffmpeg, GStreamer, ...) and "
        "play it out through the jitter buffer to the speaker or the --out sinks. `voip send` "
        "agrees keys with it and the stream is encrypted; a plain RTP sender is taken too, and "
        "shown as NOT ENCRYPTED. Ends when the sender says BYE.",
    )
    receive.add_argument(
        "--port", type=port_number, default=None, help=f"UDP port (default {DEFAULT_PORT}, or the one the SDP names)"
    )
    receive.add_argument("--bind", default="0.0.0.0", help="local address (default 0.0.0.0; :: for IPv6)")
    receive.add_argument(
        "--sdp",
        metavar="PATH",
        help="receive the stream an SDP describes (ffmpeg's -sdp_file, `voip send --sdp`, or by hand): "
        "its port, its Opus payload type and, for SRTP, its key (a=crypto, AES_CM_128_HMAC_SHA1_80)",
    )
    receive.add_argument(
        "--code",
        nargs="?",
        const="",
        metavar="CODE",
        help="take only a `voip send --code` stream that knows a short code (a fresh one is printed; or give "
        f"your own); plain RTP is then refused, and after {MAX_WRONG_CODES} wrong codes the receiver stops",
    )
    add_out_option(receive, default="speaker")
    add_codec_options(receive, sending=False)
    add_run_options(receive)
    receive.set_defaults(handler="streams:run_receive")

    loopback = commands.add_parser(
        "loopback",
        help="the whole chain on this machine: the echo test",
        description="Capture, encode, send over UDP on 127.0.0.1 (through a simulated network when "
        "--network is given), jitter-buffer, decode and play out, then report delay and quality "
        "statistics. With no options it is the classic echo test: what the microphone hears comes "
        "out of the speaker (use headphones).",
    )
    loopback.add_argument("--in", dest="source", default="mic", metavar="SOURCE", help=f"{SOURCES} (default mic)")
    add_out_option(loopback, default="speaker")
    loopback.add_argument(
        "--measure-latency",
        action="store_true",
        help="measure mouth-to-ear latency through the devices: the speaker clicks once a second, the "
        "microphone hears each click and its echo through the chain (hold the microphone to the "
        "speaker, or loop the device back); prints the parts it is made of",
    )
    add_codec_options(loopback)
    add_processing_options(loopback)
    add_network_options(loopback)
    add_run_options(loopback)
    loopback.set_defaults(handler="streams:run_loopback")

    call = commands.add_parser(
        "call",
        help="call a machine running `voip listen`",
        description="Call HOST[:PORT] (port 5004), where `voip listen` waits, and talk: full duplex, "
        "microphone and speaker by default, or files with --in/--out. Shows calling, ringing, "
        "connected, then a live status line; Ctrl-C hangs up. Exit code 0 when either side hung up, "
        "1 for no answer, busy, declined or a peer that went silent past --timeout.",
    )
    call.add_argument("destination", metavar="HOST[:PORT]", help="IPv4 or IPv6 address or name; [v6]:port")
    call.add_argument(
        "--code",
        metavar="CODE",
        help="the code `voip listen --code` printed: the call is then authenticated by it, no words to compare",
    )
    call.add_argument("--port", type=port_number, default=0, help="local UDP port to call from (default: any free one)")
    call.add_argument(
        "--punch",
        action="store_true",
        help="hole punching, for two sides behind NATs: both run `voip call THEIR_PUBLIC_ADDRESS --punch --port P` "
        "at about the same time (within --timeout), each with the port it gave the other; each side's calls open "
        "its own NAT for the other's, and one call goes on. Works unless a NAT is symmetric (docs/reach.md)",
    )
    _add_call_options(call)
    call.set_defaults(handler="call:run_call")

    listen = commands.add_parser(
        "listen",
        help="wait for calls and answer them",
        description="Wait for `voip call`, one call at a time; while in a call, other callers hear busy. "
        "Asks on the terminal whether to answer, unless --auto-answer.",
    )
    listen.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"UDP port (default {DEFAULT_PORT})")
    listen.add_argument("--bind", default="::", help="local address (default ::, which takes IPv6 and IPv4)")
    listen.add_argument("--once", action="store_true", help="exit after one call (with its exit code)")
    listen.add_argument("--auto-answer", action="store_true", help="answer every call without asking")
    listen.add_argument(
        "--no-map",
        action="store_true",
        help="do not ask the router to forward the port (NAT-PMP); by default a listener behind a NAT asks, "
        "says the address to give callers or why there is none, and removes the forwarding on exit",
    )
    listen.add_argument(
        "--code",
        nargs="?",
        const="",
        metavar="CODE",
        help="take only calls that know a short code (a fresh one is printed; or give your own); "
        f"after {MAX_WRONG_CODES} wrong codes the listener stops, and a new code is needed",
    )
    _add_call_options(listen)
    listen.set_defaults(handler="call:run_listen")

    devices = commands.add_parser(
        "devices",
        help="list audio devices",
        description="List the audio devices PortAudio sees, with the index and name that "
        "mic:NAME_OR_INDEX and speaker:NAME_OR_INDEX accept; * marks the defaults.",
    )
    devices.set_defaults(handler="devices:run_devices")

    doctor = commands.add_parser(
        "doctor",
        help="check what a call needs, and whether HOST answers",
        description="Check, in order: libopus and PortAudio, the audio devices, the local addresses, a NAT-PMP "
        "router, a STUN server (with --stun) and whether a voip answers at HOST (a ping that needs no call). "
        "One line per check with a verdict (ok, warn, FAIL, skip) and a hint; exit code 1 if any check failed.",
    )
    doctor.add_argument(
        "host", nargs="?", metavar="HOST[:PORT]", help=f"where `voip listen` runs (port {DEFAULT_PORT})"
    )
    doctor.add_argument("--stun", metavar="SERVER[:PORT]", help="also ask this STUN server about our NAT (port 3478)")
    doctor.set_defaults(handler="doctor:run_doctor")
    for command in commands.choices.values():  # so that a check after parsing speaks as the command's own
        command.set_defaults(command_parser=command)
    return parser


def _add_call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="source", default="mic", metavar="SOURCE", help=f"{SOURCES} (default mic)")
    add_out_option(parser, default="speaker")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        help="end the call when nothing came from the peer for this long (default 30 s; 'peer silent' shows "
        "after 5 s; a callee that never answers, after 10 s or this, if shorter)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="talk in the clear: plain RTP that anyone on the path can hear and forge. By default a call is "
        "encrypted (SRTP, keys agreed per call) and both sides show two words: read them to each other, "
        "and if they differ someone is in the middle (docs/security.md)",
    )
    parser.add_argument(
        "--sas-confirm",
        action="store_true",
        help="take the two words as compared and matching (for scripts; on a terminal, Enter confirms them)",
    )
    parser.add_argument(
        "--stun",
        metavar="SERVER[:PORT]",
        help="before the call, ask this STUN server (port 3478) for our public address and the NAT's kind "
        "(RFC 5780), from the call's own port, and show them; none is asked unless given (docs/reach.md)",
    )
    parser.add_argument(
        "--relay",
        metavar="turn:USER:PASSWORD@SERVER[:PORT]",
        help="carry the call through a TURN relay (RFC 8656; port 3478), for a NAT nothing else gets through. "
        "`voip listen --relay` prints a relayed address; the caller calls it with --relay through the same server",
    )
    add_codec_options(parser)
    add_processing_options(parser)
    add_network_options(parser)
    add_run_options(parser)
