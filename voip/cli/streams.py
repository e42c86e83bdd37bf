"""The streaming commands: devices, send, receive, loopback."""

from __future__ import annotations

import argparse
import dataclasses
import random
import socket
import time

from voip import SAMPLE_RATE
from voip.cli.console import (
    Metrics,
    StatusLine,
    draw_timeline,
    info,
    level_meter,
    read_text,
    record_timeline,
    security,
    show,
    status_fields,
    summary,
    write_text,
)
from voip.cli.options import (
    DEFAULT_PORT,
    MAX_WRONG_CODES,
    check_drift,
    frame_samples,
    processing_settings,
    session_config,
    simulator,
)
from voip.control import NO_RESPONSE_S, CallEnded, CallSettings, Connected, IncomingCall
from voip.crypto import new_code
from voip.errors import VoipError
from voip.io.audio import Microphone, Speaker
from voip.io.files import SilenceSource
from voip.io.loop import Endpoint, MediaLoop
from voip.io.media import AudioIO, open_audio
from voip.io.udp import open_socket, parse_host_port, resolve
from voip.latency import CLICK_PERIOD_S, LatencyProbe, LatencyReport, find_echoes, mean_ms, median_ms
from voip.netsim import NetworkSpec
from voip.sdp import opus_sdp, parse_opus_sdp
from voip.session import Address, ByeReceived, Session, SessionConfig, StreamStarted
from voip.srtp import SrtpContext, sdes_keys
from voip.stats import StreamStats


def run_send(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.destination, DEFAULT_PORT)
    family, remote = resolve(host, port)
    check_drift(args, args.file)
    io = open_audio(args.file, [], frame_samples(args))
    try:
        return _send(args, io, family, remote)
    finally:
        io.close()


def _send(args: argparse.Namespace, io: AudioIO, family: socket.AddressFamily, remote: Address) -> int:
    """Stream to `remote`: by default as a one-way encrypted call (keys agreed with `voip
    receive`); with --sdp as SRTP keyed by the SDP; with --insecure as plain RTP."""
    if args.code is not None and (args.sdp or args.insecure):
        raise VoipError("--code agrees keys with `voip receive`: it cannot go with --sdp or --insecure")
    sock = open_socket("::" if family == socket.AF_INET6 else "0.0.0.0", 0, family)
    keys = sdes_keys() if args.sdp and not args.insecure else None
    srtp = SrtpContext(keys, gcm=False) if keys is not None else None
    as_call = not args.sdp and not args.insecure
    no_answer_s = min(NO_RESPONSE_S, args.timeout)
    call = (
        CallSettings(encrypted=True, code=args.code, timeout_s=args.timeout, no_answer_s=no_answer_s)
        if as_call
        else None
    )
    session = Session(session_config(args, None if as_call else remote), random.Random(), time.monotonic(), srtp, call)
    if args.sdp:
        key = keys.send.srtp if keys is not None else None
        sdp = opus_sdp(remote[0], remote[1], args.payload_type, session.config.opus, session.ssrc, key)
        write_text(args.sdp, sdp, secret=key is not None)
    endpoint = io.endpoint(session, sock, network=simulator(args))
    total = getattr(io.source, "duration_s", None)
    status = StatusLine(args.quiet)
    metrics = Metrics(args.metrics)
    control = session.control
    ended: CallEnded | None = None
    if control is not None:
        endpoint.source = None  # the file starts when the receiver has answered and keys are agreed
        control.call(remote, time.monotonic())
        info(f"sending {io.input_description} to {show(remote)}: agreeing keys", args.quiet)
    else:
        info(f"sending {io.input_description} to {show(remote)}{' (SRTP, key in the SDP)' if srtp else ''}", args.quiet)

    def progress(now: float) -> None:
        nonlocal ended
        for event in iter(session.next_event, None):
            if isinstance(event, Connected):
                assert control is not None
                endpoint.source = io.source
                loop.tick_now()
                status.clear()
                info(f"receiver answered, {security(control, False)}", args.quiet)
                if control.keys is not None and control.keys.sas is not None:
                    info(f'the receiver shows the words "{control.keys.sas}": if they differ, stop', args.quiet)
            elif isinstance(event, CallEnded):
                ended = event
        if endpoint.source is None:
            return
        elapsed = now - loop.start
        done = f"{elapsed:5.1f}/{total:.1f} s" if total else f"{elapsed:5.1f} s"
        status.show(now, lambda: [(0, f"sending {done}"), (3, level_meter(io.mic)), *status_fields(session.stats(now))])
        metrics.write(now, lambda: io.device_counters(session.stats(now)))

    loop = MediaLoop([endpoint], session.frame_samples, on_tick=progress, source_drift_ppm=args.network.drift_ppm)

    def should_stop(now: float) -> bool:
        if ended is not None:
            return True
        if endpoint.source_done or _past(loop, args, now):
            session.hang_up(now)
            return control is None  # a call ends when the receiver acknowledges (or gives up)
        return False

    try:
        loop.run(should_stop)
    except KeyboardInterrupt:
        session.hang_up(time.monotonic())
        endpoint.transmit(time.monotonic())
    finally:
        sock.close()
        metrics.close()
    status.clear()
    if ended is not None and not ended.normal:
        hint = " (is `voip receive` running there? ffmpeg and GStreamer need --sdp or --insecure)"
        raise VoipError(f"not sent: {ended.reason}{hint if 'answer' in ended.reason else ''}")
    summary("sent", io.device_counters(session.stats(time.monotonic())), args)
    return 0


def run_receive(args: argparse.Namespace) -> int:
    io = open_audio(None, args.out or [args.default_out], frame_samples(args))
    try:
        return _receive(args, io)
    finally:
        io.close()


def _receive(args: argparse.Namespace, io: AudioIO) -> int:
    config, port, srtp = session_config(args), args.port, None
    if args.sdp:
        if args.code is not None:
            raise VoipError("--code agrees keys with `voip send`: an SDP brings its own key")
        stream = parse_opus_sdp(read_text(args.sdp))
        config = dataclasses.replace(config, payload_type=stream.payload_type)
        port = args.port if args.port is not None else stream.port
        if stream.srtp_key is not None:
            srtp = SrtpContext(sdes_keys(stream.srtp_key), gcm=False)
    if args.code == "":
        args.code = new_code()
    sock = open_socket(args.bind, port if port is not None else DEFAULT_PORT)
    wrong_codes = 0
    try:
        encrypted = " (SRTP, key from the SDP)" if srtp is not None else ""
        info(f"listening on {show(sock.getsockname())}{encrypted}, playing to {io.output_description}", args.quiet)
        if args.code:
            print(f"code: {args.code}  (the sender runs: voip send FILE HOST --code {args.code})", flush=True)
        while True:
            session, ended = _receive_stream(args, io, sock, config, srtp)
            if ended is None or not ended.reason.startswith("wrong code"):
                break
            wrong_codes += 1
            if wrong_codes >= MAX_WRONG_CODES:
                raise VoipError(f"{wrong_codes} wrong codes: start `voip receive --code` again for a new code")
            info(f"a sender came with a wrong code; waiting for the stream ({wrong_codes} wrong so far)", args.quiet)
    finally:
        sock.close()
    if ended is not None and not ended.normal:
        raise VoipError(f"stream ended: {ended.reason}")
    stats = io.device_counters(session.stats(time.monotonic()))
    summary("received", stats, args)
    draw_timeline(args, session, stats, "received")
    return 0


def _receive_stream(
    args: argparse.Namespace, io: AudioIO, sock: socket.socket, config: SessionConfig, srtp: SrtpContext | None
) -> tuple[Session, CallEnded | None]:
    """One stream, to its end (BYE, --duration or Ctrl-C) or to a failed key agreement."""
    # Without an SDP: `voip send` calls with keys to agree; a plain RTP sender is taken too,
    # unless a code is asked for: a stream that cannot show the code is not the one expected.
    takes_plain = args.code is None
    call = None if srtp is not None else CallSettings(encrypted=True, code=args.code, takes_plain_stream=takes_plain)
    session = Session(config, random.Random(), time.monotonic(), srtp, call)
    record_timeline(args, session)
    endpoint = io.endpoint(session, sock)
    status = StatusLine(args.quiet)
    metrics = Metrics(args.metrics)
    ended: CallEnded | None = None

    def on_tick(now: float) -> None:
        nonlocal ended
        for event in iter(session.next_event, None):
            if isinstance(event, IncomingCall) and session.control is not None:
                session.control.accept(now)  # a receiver takes the stream it is sent
            elif isinstance(event, Connected) and session.control is not None:
                status.clear()
                info(f"{show(event.peer)} is sending, {security(session.control, False)}", args.quiet)
                sas = session.control.keys.sas if session.control.keys is not None else None
                if sas is not None:
                    info(f'the sender shows the words "{sas}": if they differ, someone is in the middle', args.quiet)
            elif isinstance(event, CallEnded):
                ended = event
                session.jitter.end_of_stream(now)  # what was sent still plays, BYE or not
            elif isinstance(event, StreamStarted):
                status.clear()
                plain = ", NOT ENCRYPTED" if session.encryption is None else ""
                info(f"receiving from {show(event.address)} (SSRC {event.ssrc:#010x}){plain}", args.quiet)
            elif isinstance(event, ByeReceived):
                status.clear()
                reason = f": {event.reason}" if event.reason else ""
                info(f"sender said goodbye{reason}; playing out the buffer", args.quiet)
        if session.remote_ssrc is not None:
            status.show(now, lambda: [(0, "receiving"), *status_fields(session.stats(now))])
            metrics.write(now, lambda: io.device_counters(session.stats(now)))

    loop = MediaLoop([endpoint], session.frame_samples, on_tick=on_tick)
    try:
        loop.run(
            lambda now: session.receive_finished or _past(loop, args, now) or (ended is not None and not ended.normal)
        )
    except KeyboardInterrupt:
        pass
    finally:
        session.hang_up(time.monotonic())
        endpoint.transmit(time.monotonic())
        metrics.close()
    status.clear()
    return session, ended


def run_loopback(args: argparse.Namespace) -> int:
    sinks = args.out or [args.default_out]
    if args.measure_latency:
        if not args.source.startswith("mic") or not all(s.startswith("speaker") for s in sinks):
            raise VoipError("--measure-latency measures through the devices: use --in mic[:NAME] --out speaker[:NAME]")
        if args.duration is None:
            args.duration = 7 * CLICK_PERIOD_S + 0.5
    check_drift(args, args.source)
    # Measuring latency needs the echo that the canceller would remove.
    settings = None if args.measure_latency else processing_settings(args)
    io = open_audio(args.source, sinks, frame_samples(args), settings, args.room)
    try:
        return _loopback(args, io)
    finally:
        io.close()


def _loopback(args: argparse.Namespace, io: AudioIO) -> int:
    sender_sock = open_socket("127.0.0.1", 0)
    receiver_sock = open_socket("127.0.0.1", 0)
    rng = random.Random(args.seed)
    config = dataclasses.replace(session_config(args), plain_peer_takes_redundancy=True)  # both ends are ours
    now = time.monotonic()
    sender = Session(
        dataclasses.replace(config, remote=receiver_sock.getsockname()), random.Random(rng.getrandbits(64)), now
    )
    receiver = Session(
        dataclasses.replace(config, remote=sender_sock.getsockname()), random.Random(rng.getrandbits(64)), now
    )
    record_timeline(args, receiver)
    probe = LatencyProbe(args.payload_type) if args.measure_latency else None
    # One room and one canceller: what the receiving side plays comes back into what the sending side captures.
    forward = Endpoint(
        sender,
        sender_sock,
        source=io.source,
        mic=io.mic,
        network=simulator(args, rng),
        probe=probe,
        processor=io.processor,
        room=io.room,
    )
    backward = Endpoint(
        receiver,
        receiver_sock,
        sinks=io.sinks,
        speaker=io.speaker,
        network=simulator(args, rng),
        probe=probe,
        processor=io.processor,
        room=io.room,
    )
    status = StatusLine(args.quiet)
    metrics = Metrics(args.metrics)
    info(
        f"loopback: {io.input_description}{io.processing_description} -> opus {args.bitrate // 1000} kbit/s -> "
        f"network {args.network.describe()} -> jitter buffer -> {io.output_description}",
        args.quiet,
    )

    def on_tick(now: float) -> None:
        status.show(
            now,
            lambda: [
                (0, "loopback"),
                (3, level_meter(io.mic)),
                *status_fields(io.device_counters(_merged(sender, receiver, now))),
            ],
        )
        metrics.write(now, lambda: io.device_counters(_merged(sender, receiver, now)))

    loop = MediaLoop(
        [forward, backward], sender.frame_samples, on_tick=on_tick, source_drift_ppm=args.network.drift_ppm
    )

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
        metrics.close()
    status.clear()
    stats = io.device_counters(_merged(sender, receiver, time.monotonic()))
    summary("loopback", stats, args)
    draw_timeline(args, receiver, stats, "loopback")
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
        whole_ms=median_ms(echoes),
        device_input_ms=(mic.input_delay.mean - frame_s) * 1000.0,
        frame_ms=frame_s * 1000.0,
        lookahead_ms=sender.codec_delay_samples * 1000.0 / SAMPLE_RATE,
        network_ms=mean_ms(probe.network_delays),
        jitter_buffer_ms=stats.buffer_delay_ms,
        device_output_ms=speaker.output_delay.mean * 1000.0,
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


def _print_latency(stats: StreamStats, sender: Session, network: NetworkSpec) -> None:
    frame_ms = sender.frame_samples * 1000 / SAMPLE_RATE
    lookahead_ms = sender.codec_delay_samples * 1000 / SAMPLE_RATE
    total = frame_ms + lookahead_ms + network.delay_ms + stats.buffer_delay_ms
    print(
        f"latency (estimated, without audio devices): {total:.0f} ms = frame {frame_ms:.0f} + "
        f"codec lookahead {lookahead_ms:.1f} + network {network.delay_ms:.0f} + "
        f"jitter buffer {stats.buffer_delay_ms:.0f}"
    )
