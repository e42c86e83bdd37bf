"""Command line: argument parsing, wiring of sessions to sockets and files, status line, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voip import SAMPLE_RATE, __version__
from voip.codec import CodecError, OpusSettings
from voip.errors import DeviceGone, VoipError
from voip.io.audio import Microphone, Speaker, find_device, list_devices
from voip.io.files import SilenceSource, Sink, Source, open_sink, open_source
from voip.io.loop import Endpoint, MediaLoop
from voip.io.udp import open_socket, parse_host_port, resolve
from voip.jitter import JitterConfig
from voip.latency import CLICK_PERIOD_S, LatencyProbe, LatencyReport, find_echoes, mean_ms, median_ms
from voip.netsim import NetworkSimulator, NetworkSpec
from voip.rtcp import NTP_EPOCH_OFFSET
from voip.sdp import opus_sdp
from voip.session import Address, ByeReceived, Session, SessionConfig, StreamStarted
from voip.stats import StreamStats

DEFAULT_PORT = 5004
STATUS_INTERVAL_S = 0.5


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
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
        "to HOST[:PORT], where `voip receive`, ffmpeg or GStreamer listens. Sends RTCP BYE at the end. "
        "FILE may also be mic or mic:NAME to stream a microphone.",
    )
    send.add_argument("file", help=f"what to send: {SOURCES}")
    send.add_argument("destination", metavar="HOST[:PORT]", help=f"receiver address (port {DEFAULT_PORT})")
    send.add_argument("--sdp", metavar="PATH", help="write an SDP description of the stream (for ffmpeg)")
    _add_codec_options(send)
    _add_network_options(send)
    _add_run_options(send)
    send.set_defaults(handler=run_send)

    receive = commands.add_parser(
        "receive",
        help="receive a stream and record it",
        description="Receive one RTP/Opus stream (from `voip send`, ffmpeg, GStreamer, ...) and "
        "play it out through the jitter buffer to the speaker or the --out sinks. Ends when the "
        "sender says BYE.",
    )
    receive.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"UDP port (default {DEFAULT_PORT})")
    receive.add_argument("--bind", default="0.0.0.0", help="local address (default 0.0.0.0; :: for IPv6)")
    _add_out_option(receive, default="speaker")
    _add_codec_options(receive, sending=False)
    _add_run_options(receive)
    receive.set_defaults(handler=run_receive)

    loopback = commands.add_parser(
        "loopback",
        help="the whole chain on this machine: the echo test",
        description="Capture, encode, send over UDP on 127.0.0.1 (through a simulated network when "
        "--network is given), jitter-buffer, decode and play out, then report delay and quality "
        "statistics. With no options it is the classic echo test: what the microphone hears comes "
        "out of the speaker (use headphones).",
    )
    loopback.add_argument("--in", dest="source", default="mic", metavar="SOURCE", help=f"{SOURCES} (default mic)")
    _add_out_option(loopback, default="speaker")
    loopback.add_argument(
        "--measure-latency",
        action="store_true",
        help="measure mouth-to-ear latency through the devices: the speaker clicks once a second, the "
        "microphone hears each click and its echo through the chain (hold the microphone to the "
        "speaker, or loop the device back); prints the parts it is made of",
    )
    _add_codec_options(loopback)
    _add_network_options(loopback)
    _add_run_options(loopback)
    loopback.set_defaults(handler=run_loopback)

    devices = commands.add_parser(
        "devices",
        help="list audio devices",
        description="List the audio devices PortAudio sees, with the index and name that "
        "mic:NAME_OR_INDEX and speaker:NAME_OR_INDEX accept; * marks the defaults.",
    )
    devices.set_defaults(handler=run_devices)
    return parser


SOURCES = "mic, mic:NAME_OR_INDEX, an audio file (wav/flac/ogg), speech (a bundled sample), tone:HZ or silence"


def _add_out_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--out",
        action="append",
        metavar="SINK",
        help="where received audio goes: speaker, speaker:NAME_OR_INDEX, a .wav/.flac/.ogg path to "
        f"record into, or null (repeatable; default {default})",
    )
    parser.set_defaults(default_out=default)


def _add_codec_options(parser: argparse.ArgumentParser, sending: bool = True) -> None:
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
            "--dtx", action=argparse.BooleanOptionalAction, default=False, help="discontinuous transmission"
        )
    else:
        parser.set_defaults(bitrate=24000, frame_ms=20, complexity=10, fec=True, dtx=False)
    group.add_argument("--jitter-min-ms", type=float, default=0.0, help="lower bound of playout delay")
    group.add_argument("--jitter-max-ms", type=float, default=500.0, help="upper bound of playout delay")
    group.add_argument("--payload-type", type=int, default=111, help="RTP payload type (default 111)")


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulated network")
    group.add_argument(
        "--network",
        type=_network,
        default=NetworkSpec(),
        metavar="SPEC",
        help="impairment, e.g. delay=40ms,jitter=20ms,loss=5%%,burst=3,reorder=1%%,duplicate=1%%",
    )
    group.add_argument("--seed", type=int, default=None, help="make the simulated network repeatable")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--duration", type=_positive_seconds, default=None, help="stop after S seconds")
    group.add_argument("--stats-json", metavar="PATH", help="write the final statistics as JSON")
    group.add_argument("--quiet", action="store_true", help="no status line")


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


def _network(text: str) -> NetworkSpec:
    try:
        return NetworkSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return value


def _session_config(args: argparse.Namespace, remote: Address | None = None) -> SessionConfig:
    try:
        opus = OpusSettings(
            bitrate=args.bitrate,
            frame_ms=args.frame_ms,
            complexity=args.complexity,
            fec=args.fec,
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
        )
    except ValueError as exc:
        raise VoipError(str(exc)) from None


# ---- commands ----------------------------------------------------------------------------


@dataclass
class AudioIO:
    """What a command reads and where its received audio goes: files and devices."""

    source: Source | None = None
    mic: Microphone | None = None
    sinks: list[Sink] = field(default_factory=list)
    speaker: Speaker | None = None

    @property
    def input_description(self) -> str:
        if self.mic is not None:
            return self.mic.description
        return self.source.description if self.source is not None else "-"

    @property
    def output_description(self) -> str:
        names = [self.speaker.description] if self.speaker else []
        return ", ".join(names + [sink.description for sink in self.sinks]) or "-"

    def endpoint(self, session: Session, sock: socket.socket, **extra: Any) -> Endpoint:
        return Endpoint(
            session, sock, source=self.source, sinks=self.sinks, mic=self.mic, speaker=self.speaker, **extra
        )

    def device_counters(self, stats: StreamStats) -> StreamStats:
        return dataclasses.replace(
            stats,
            input_overflows=self.mic.input_overflows if self.mic else 0,
            output_underflows=self.speaker.output_underflows if self.speaker else 0,
        )

    def close(self) -> None:
        for part in (self.mic, self.speaker, self.source, *self.sinks):
            if part is not None:
                part.close()


def _open_audio(source_spec: str | None, sink_specs: list[str], frame_samples: int) -> AudioIO:
    """Open everything or nothing: on an error, what was opened is closed again."""
    io = AudioIO()
    try:
        if source_spec is not None:
            kind, _, name = source_spec.partition(":")
            if kind == "mic":
                io.mic = Microphone(find_device(name, "input"), frame_samples)
            else:
                io.source = open_source(source_spec)
        for spec in sink_specs:
            kind, _, name = spec.partition(":")
            if kind != "speaker":
                io.sinks.append(open_sink(spec))
            elif io.speaker is not None:
                raise VoipError("one speaker per stream; add file sinks with more --out options")
            else:
                io.speaker = Speaker(find_device(name, "output"), frame_samples)
    except BaseException:
        io.close()
        raise
    return io


def _frame_samples(args: argparse.Namespace) -> int:
    return int(args.frame_ms * SAMPLE_RATE // 1000)


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


def run_send(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.destination, DEFAULT_PORT)
    family, remote = resolve(host, port)
    io = _open_audio(args.file, [], _frame_samples(args))
    try:
        return _send(args, io, family, remote)
    finally:
        io.close()


def _send(args: argparse.Namespace, io: AudioIO, family: socket.AddressFamily, remote: Address) -> int:
    sock = open_socket("::" if family == socket.AF_INET6 else "0.0.0.0", 0, family)
    session = Session(_session_config(args, remote), random.Random(), time.monotonic())
    if args.sdp:
        _write_text(args.sdp, opus_sdp(remote[0], remote[1], args.payload_type, session.config.opus, session.ssrc))
    endpoint = io.endpoint(session, sock, network=_simulator(args))
    total = getattr(io.source, "duration_s", None)
    status = StatusLine(args.quiet)
    _info(f"sending {io.input_description} to {_show(remote)}", args.quiet)

    def progress(now: float) -> None:
        elapsed = now - loop.start
        done = f"{elapsed:5.1f}/{total:.1f} s" if total else f"{elapsed:5.1f} s"
        status.show(now, f"sending {done}  {_level(io)}" + _status_fields(session.stats(now)))

    loop = MediaLoop([endpoint], session.frame_samples, on_tick=progress)

    def should_stop(now: float) -> bool:
        if endpoint.source_done or _past(loop, args, now):
            session.hang_up(now)
            return True
        return False

    try:
        loop.run(should_stop)
    except KeyboardInterrupt:
        session.hang_up(time.monotonic())
        endpoint.transmit(time.monotonic())
    finally:
        sock.close()
    status.clear()
    _summary("sent", io.device_counters(session.stats(time.monotonic())), args)
    return 0


def run_receive(args: argparse.Namespace) -> int:
    io = _open_audio(None, args.out or [args.default_out], _frame_samples(args))
    try:
        return _receive(args, io)
    finally:
        io.close()


def _receive(args: argparse.Namespace, io: AudioIO) -> int:
    sock = open_socket(args.bind, args.port)
    session = Session(_session_config(args), random.Random(), time.monotonic())
    endpoint = io.endpoint(session, sock)
    status = StatusLine(args.quiet)
    _info(f"listening on {_show(sock.getsockname())}, playing to {io.output_description}", args.quiet)

    def on_tick(now: float) -> None:
        for event in iter(session.next_event, None):
            if isinstance(event, StreamStarted):
                status.clear()
                _info(f"receiving from {_show(event.address)} (SSRC {event.ssrc:#010x})", args.quiet)
            elif isinstance(event, ByeReceived):
                status.clear()
                reason = f": {event.reason}" if event.reason else ""
                _info(f"sender said goodbye{reason}; playing out the buffer", args.quiet)
        if session.remote_ssrc is not None:
            status.show(now, "receiving  " + _status_fields(session.stats(now)))

    loop = MediaLoop([endpoint], session.frame_samples, on_tick=on_tick)
    try:
        loop.run(lambda now: session.receive_finished or _past(loop, args, now))
    except KeyboardInterrupt:
        pass
    finally:
        session.hang_up(time.monotonic())
        endpoint.transmit(time.monotonic())
        sock.close()
    status.clear()
    _summary("received", io.device_counters(session.stats(time.monotonic())), args)
    return 0


def run_loopback(args: argparse.Namespace) -> int:
    sinks = args.out or [args.default_out]
    if args.measure_latency:
        if not args.source.startswith("mic") or not all(s.startswith("speaker") for s in sinks):
            raise VoipError("--measure-latency measures through the devices: use --in mic[:NAME] --out speaker[:NAME]")
        if args.duration is None:
            args.duration = 7 * CLICK_PERIOD_S + 0.5
    io = _open_audio(args.source, sinks, _frame_samples(args))
    try:
        return _loopback(args, io)
    finally:
        io.close()


def _loopback(args: argparse.Namespace, io: AudioIO) -> int:
    sender_sock = open_socket("127.0.0.1", 0)
    receiver_sock = open_socket("127.0.0.1", 0)
    rng = random.Random(args.seed)
    config = _session_config(args)
    now = time.monotonic()
    sender = Session(
        dataclasses.replace(config, remote=receiver_sock.getsockname()), random.Random(rng.getrandbits(64)), now
    )
    receiver = Session(
        dataclasses.replace(config, remote=sender_sock.getsockname()), random.Random(rng.getrandbits(64)), now
    )
    probe = LatencyProbe(args.payload_type) if args.measure_latency else None
    forward = Endpoint(sender, sender_sock, source=io.source, mic=io.mic, network=_simulator(args, rng), probe=probe)
    backward = Endpoint(
        receiver, receiver_sock, sinks=io.sinks, speaker=io.speaker, network=_simulator(args, rng), probe=probe
    )
    status = StatusLine(args.quiet)
    _info(
        f"loopback: {io.input_description} -> opus {args.bitrate // 1000} kbit/s -> "
        f"network {args.network.describe()} -> jitter buffer -> {io.output_description}",
        args.quiet,
    )

    def on_tick(now: float) -> None:
        status.show(now, f"loopback  {_level(io)}" + _status_fields(_merged(sender, receiver, now)))

    loop = MediaLoop([forward, backward], sender.frame_samples, on_tick=on_tick)

    def should_stop(now: float) -> bool:
        if args.duration is not None:
            if forward.source_done:  # a file that ends early is followed by silence (DESIGN.md 1)
                forward.source, forward.source_done = SilenceSource(), False
            return _past(loop, args, now)
        if forward.source_done:
            sender.hang_up(now)
        return receiver.receive_finished

    try:
        loop.run(should_stop)
    except KeyboardInterrupt:
        pass
    finally:
        sender_sock.close()
        receiver_sock.close()
    status.clear()
    stats = io.device_counters(_merged(sender, receiver, time.monotonic()))
    _summary("loopback", stats, args)
    if probe is not None:
        assert io.mic is not None and io.speaker is not None
        print(_latency_report(probe, io.mic, io.speaker, sender, stats).describe())
    elif not args.quiet and io.mic is None and io.speaker is None:
        _print_latency(stats, sender, args.network)
    return 0


def _latency_report(
    probe: LatencyProbe, mic: Microphone, speaker: Speaker, sender: Session, stats: StreamStats
) -> LatencyReport:
    echoes = find_echoes(probe.captured_blocks)
    if not echoes:
        raise VoipError(
            f"heard none of the {probe.train.clicks} clicks back: the microphone must hear the speaker "
            "(hold them together, or use a device that loops back)"
        )
    frame_s = sender.frame_samples / SAMPLE_RATE
    return LatencyReport(
        whole_ms=median_ms([e.delay_s for e in echoes]),
        device_input_ms=mean_ms(mic.input_delays) - frame_s * 1000.0,
        frame_ms=frame_s * 1000.0,
        lookahead_ms=sender.codec_delay_samples * 1000.0 / SAMPLE_RATE,
        network_ms=mean_ms(probe.network_delays),
        jitter_buffer_ms=stats.buffer_delay_ms,
        device_output_ms=mean_ms(speaker.output_delays),
        clicks=len(echoes),
    )


def _past(loop: MediaLoop, args: argparse.Namespace, now: float) -> bool:
    return args.duration is not None and now >= loop.start + args.duration


def _merged(sender: Session, receiver: Session, now: float) -> StreamStats:
    """One view of a one-way loopback: what the receiver saw, with the sender's count and RTT."""
    sent = sender.stats(now)
    return dataclasses.replace(
        receiver.stats(now),
        packets_sent=sent.packets_sent,
        rtt_ms=sent.rtt_ms,
        remote_fraction_lost=sent.remote_fraction_lost,
        bitrate_kbps=sent.bitrate_kbps,
    )


def _simulator(
    args: argparse.Namespace, rng: random.Random | None = None
) -> NetworkSimulator[tuple[bytes, Address]] | None:
    if args.network == NetworkSpec():
        return None
    seed_source = rng or random.Random(args.seed)
    return NetworkSimulator(args.network, random.Random(seed_source.getrandbits(64)))


# ---- output ------------------------------------------------------------------------------


class StatusLine:
    """One self-overwriting line on a terminal; nothing when stderr is not a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def show(self, now: float, text: str) -> None:
        if self.enabled and now - self._last >= STATUS_INTERVAL_S:
            self._last = now
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


def _level(io: AudioIO) -> str:
    """A microphone level meter: ten steps from -60 to 0 dBFS."""
    if io.mic is None:
        return ""
    db = max(-60.0, io.mic.level_dbfs)
    bars = int((db + 60) / 6)
    return f"mic [{'#' * bars}{'.' * (10 - bars)}] {db:4.0f} dB  "


def _status_fields(s: StreamStats) -> str:
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "-"
    return (
        f"delay {s.buffer_delay_ms:3.0f} ms (target {s.buffer_target_ms:3.0f})  jitter {s.jitter_ms:4.1f} ms  "
        f"loss {s.packets_lost}  concealed {s.concealed_ms:.0f} ms  rtt {rtt}  {s.bitrate_kbps:.1f} kbit/s"
    )


def _summary(title: str, stats: StreamStats, args: argparse.Namespace) -> None:
    values = dataclasses.asdict(stats)
    if args.stats_json:
        _write_text(args.stats_json, json.dumps(values, indent=2) + "\n")
    if args.quiet:
        return
    print(f"{title}:")
    for key, value in values.items():
        shown = "-" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))
        print(f"  {key:22} {shown}")


def _print_latency(stats: StreamStats, sender: Session, network: NetworkSpec) -> None:
    frame_ms = sender.frame_samples * 1000 / SAMPLE_RATE
    lookahead_ms = sender.codec_delay_samples * 1000 / SAMPLE_RATE
    total = frame_ms + lookahead_ms + network.delay_ms + stats.buffer_delay_ms
    print(
        f"latency (estimated, without audio devices): {total:.0f} ms = frame {frame_ms:.0f} + "
        f"codec lookahead {lookahead_ms:.1f} + network {network.delay_ms:.0f} + "
        f"jitter buffer {stats.buffer_delay_ms:.0f}"
    )


def _info(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr)


def _show(addr: tuple[str, int] | tuple[str, int, int, int] | tuple[object, ...]) -> str:
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise VoipError(f"cannot write {path!r}: {exc.strerror or exc}") from None
