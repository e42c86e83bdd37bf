"""The real CLI as subprocesses over real UDP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import (
    Processes,
    assert_speech_carried,
    free_udp_port,
    lead_silence,
    run_voip,
    voip_command,
    wait_for_file,
)
from tests.test_call import _wait_for_line
from voip.io.files import bundled_speech, read_48k
from voip.quality import pesq_wb

SPEECH = str(bundled_speech())


def test_send_to_receive_over_udp_keeps_speech_quality_and_length(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    out = tmp_path / "got.wav"
    receiver = processes.start(
        voip_command(
            "receive",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--out",
            str(out),
            "--stats-json",
            str(tmp_path / "rx.json"),
            "--duration",
            "40",
        )
    )
    _wait_for_line(receiver, "listening on")
    sent = run_voip("send", SPEECH, f"127.0.0.1:{port}", "--bitrate", "24k", "--stats-json", str(tmp_path / "tx.json"))
    assert sent.returncode == 0, sent.stderr
    _, err = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, err
    assert "sender said goodbye" in err
    got = read_48k(out)
    # Nothing lost; the buffer may have grown by a few packets on a loaded machine (the
    # receiver keeps what it learnt of scheduling jitter as delay, which lengthens the file).
    assert -960 <= len(got) - len(speech) <= 5 * 960
    assert_speech_carried(speech, got)
    rx = json.loads((tmp_path / "rx.json").read_text())
    tx = json.loads((tmp_path / "tx.json").read_text())
    assert rx["packets_received"] == tx["packets_sent"] and rx["packets_lost"] == 0
    assert tx["rtt_ms"] is not None and tx["rtt_ms"] < 50


def test_loopback_redundancy_beats_fec_beats_nothing_under_loss(tmp_path, speech, processes: Processes):
    runs = {}
    flag_sets = {"redundancy": (), "fec": ("--no-redundancy",), "nothing": ("--no-fec", "--no-redundancy")}
    for name, flags in flag_sets.items():  # side by side: each takes the speech's 8 s
        out, stats = tmp_path / f"{name}.wav", tmp_path / f"{name}.json"
        command = voip_command(
            "loopback", "--in", "speech", "--network", "loss=10%", "--seed", "4", "--out", str(out),
            "--stats-json", str(stats), "--quiet", *flags,
        )  # fmt: skip
        runs[name] = (processes.start(command), out, stats)
    scores, stats = {}, {}
    for name, (proc, out, path) in runs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        scores[name], stats[name] = pesq_wb(speech, read_48k(out)), json.loads(path.read_text())
    print("PESQ-WB", scores, {name: values["fec_recovered"] for name, values in stats.items()})
    assert stats["fec"]["fec_recovered"] > 5 and stats["nothing"]["fec_recovered"] == 0
    # copies rebuild almost every loss once the first report has told the sender of it
    assert stats["redundancy"]["fec_recovered"] >= 0.8 * stats["redundancy"]["packets_lost"], stats["redundancy"]
    assert scores["fec"] > scores["nothing"] + 0.05, scores
    assert scores["redundancy"] > scores["fec"] + 0.1, scores


@pytest.mark.parametrize("ppm", [10000, -10000])
def test_loopback_absorbs_a_drifting_sender_clock(tmp_path, ppm):
    """In real time, the file source runs 1% fast (slow): 80 ms more (less) audio than the 8 s
    the receiver plays. The receiver removes (makes up) most of that, by stretching speech.
    On a loaded machine a scheduling stall can make it conceal a frame or two instead, and
    then it has that much less to stretch: so the test counts all the audio the receiver
    made up, concealment included. Without stretching, a slow sender's 80 ms would all be
    concealed and a fast one's would pile up in the buffer. That nothing is concealed at
    all is test_session's (simulated time)."""
    stats = tmp_path / "s.json"
    network = f"drift={ppm}ppm"
    result = run_voip("loopback", "--in", "speech", "--out", "null", "--network", network, "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    values = json.loads(stats.read_text())
    made_up = values["expanded_ms"] - values["accelerated_ms"] + values["concealed_ms"]
    # what is not made up yet is the buffer still settling on its target when the file ends
    assert 40 <= (-made_up if ppm > 0 else made_up) <= 120, values
    assert values["concealed_ms"] <= 40 and values["packets_late"] <= 2, values


def test_loopback_reports_latency_and_writes_all_stats_keys(tmp_path):
    stats = tmp_path / "s.json"
    result = run_voip("loopback", "--in", "tone:440", "--out", "null", "--duration", "1.5", "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    assert "latency (estimated" in result.stdout
    values = json.loads(stats.read_text())
    for key in (
        "packets_sent",
        "packets_received",
        "packets_lost",
        "jitter_ms",
        "rtt_ms",
        "concealed_ms",
        "buffer_delay_ms",
        "buffer_target_ms",
        "fec_recovered",
        "bitrate_kbps",
        "mos",
    ):
        assert key in values
    assert values["packets_received"] > 50
    assert 3.6 < values["mos"] < 3.9  # a clean path on one machine: only the codec's own impairment


@pytest.mark.skipif(
    shutil.which("ffmpeg") is None and not __import__("os").environ.get("CI"),
    reason="ffmpeg not installed (scripts/test installs it; CI must have it)",
)
def test_ffmpeg_decrypts_and_decodes_what_voip_send_sends_from_its_sdp(tmp_path, speech, processes: Processes):
    """`voip send --sdp` sends SRTP and writes its key into the SDP (SDES): ffmpeg, given the
    file, decrypts the stream."""
    port = free_udp_port()
    sdp, out = tmp_path / "stream.sdp", tmp_path / "ffmpeg.wav"
    source = lead_silence(tmp_path, speech)
    sender = processes.start(voip_command("send", str(source), f"127.0.0.1:{port}", "--sdp", str(sdp), "--quiet"))
    text = wait_for_file(sdp)  # written before the first packet
    assert "m=audio" in text and "RTP/SAVP 111" in text and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text
    assert sdp.stat().st_mode & 0o077 == 0  # the key is readable by its owner only
    ffmpeg_args = ["-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp"]
    ffmpeg = processes.start(["ffmpeg", *ffmpeg_args, "-i", str(sdp), "-t", "30", "-y", str(out)])
    _, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    ffmpeg.communicate(timeout=40)
    assert ffmpeg.returncode == 0
    decoded = read_48k(out)
    assert pesq_wb(speech, decoded) >= 3.5


def test_with_insecure_the_sdp_describes_plain_rtp(tmp_path):
    sdp = tmp_path / "plain.sdp"
    probe = run_voip("send", "silence", "127.0.0.1:5999", "--sdp", str(sdp), "--insecure", "--duration", "0.1")
    assert probe.returncode == 0, probe.stderr
    assert "RTP/AVP 111" in sdp.read_text() and "a=crypto" not in sdp.read_text()


def _one_clear_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_and_unreadable_files(tmp_path):
    line = _one_clear_line(run_voip("send", str(tmp_path / "nope.wav"), "127.0.0.1:5999"))
    assert "nope.wav" in line and "no such file" in line
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    assert "cannot read audio file" in _one_clear_line(run_voip("send", str(junk), "127.0.0.1:5999"))
    line = _one_clear_line(run_voip("receive", "--out", str(tmp_path / "no" / "dir.wav")))
    assert "does not exist" in line


def test_bad_host_and_port():
    assert "cannot resolve host" in _one_clear_line(run_voip("send", SPEECH, "no-such-host.invalid:5004"))
    assert "bad port" in _one_clear_line(run_voip("send", SPEECH, "127.0.0.1:99999"))


def test_port_in_use(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        line = _one_clear_line(run_voip("receive", "--bind", "127.0.0.1", "--port", str(port), "--out", "null"))
    assert "already in use" in line


def test_receive_records_flac_and_ogg(tmp_path, processes: Processes):
    port = free_udp_port()
    flac, ogg = tmp_path / "a.flac", tmp_path / "a.ogg"
    receiver = processes.start(
        voip_command(
            "receive",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--out",
            str(flac),
            "--out",
            str(ogg),
            "--duration",
            "20",
        )
    )
    _wait_for_line(receiver, "listening on")
    assert run_voip("send", "tone:1000", f"127.0.0.1:{port}", "--duration", "1", "--quiet").returncode == 0
    receiver.communicate(timeout=30)
    for path in (flac, ogg):
        data, rate = sf.read(str(path))
        assert rate == 48000 and len(data) > 0.8 * 48000
        peak_hz = np.argmax(np.abs(np.fft.rfft(data))) * rate / len(data)
        assert abs(peak_hz - 1000) < 10


def test_loopback_draws_its_timeline(tmp_path):
    plot = tmp_path / "timeline.png"
    result = run_voip(
        "loopback",
        "--in",
        "tone:300",
        "--out",
        "null",
        "--duration",
        "2",
        "--network",
        "jitter=20ms,loss=5%",
        "--seed",
        "2",
        "--plot",
        str(plot),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10000


def test_a_bad_plot_path_fails_before_anything_runs(tmp_path):
    started = time.monotonic()
    line = _one_clear_line(run_voip("loopback", "--in", "tone:300", "--out", "null", "--plot", str(tmp_path / "x.jpg")))
    assert line == f"voip: --plot writes a PNG: give a path ending in .png, not {str(tmp_path / 'x.jpg')!r}"
    line = _one_clear_line(run_voip("receive", "--out", "null", "--plot", str(tmp_path / "no" / "x.png")))
    assert "does not exist" in line
    assert time.monotonic() - started < 20


def test_drift_with_a_microphone_is_refused_not_ignored():
    line = _one_clear_line(run_voip("loopback", "--in", "mic", "--network", "drift=100ppm"))
    assert line == "voip: --network drift= runs a file source's clock fast or slow; a microphone keeps its own clock"
    usage = run_voip("loopback", "--network", "drift=20000ppm")  # argparse: usage, then the error
    assert usage.returncode == 2 and usage.stderr.strip().endswith("drift must be within +-10000 ppm")


def test_voip_receive_decrypts_what_voip_send_describes_in_its_sdp(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    sdp, out = tmp_path / "stream.sdp", tmp_path / "got.wav"
    source = lead_silence(tmp_path, speech)
    sender = processes.start(voip_command("send", str(source), f"127.0.0.1:{port}", "--sdp", str(sdp), "--quiet"))
    assert "a=crypto" in wait_for_file(sdp)
    received = run_voip(
        "receive",
        "--sdp",
        str(sdp),
        "--bind",
        "127.0.0.1",
        "--out",
        str(out),
        "--stats-json",
        str(tmp_path / "rx.json"),
        "--duration",
        "30",
    )
    sender.communicate(timeout=30)
    assert received.returncode == 0, received.stderr
    assert "SRTP, key from the SDP" in received.stderr and "sender said goodbye" in received.stderr
    assert "NOT ENCRYPTED" not in received.stderr  # SRTP by the SDP's key is encrypted too
    assert json.loads((tmp_path / "rx.json").read_text())["packets_unauthenticated"] == 0
    assert_speech_carried(speech, read_48k(out))


@pytest.mark.skipif(
    shutil.which("ffmpeg") is None and not __import__("os").environ.get("CI"),
    reason="ffmpeg not installed (scripts/test installs it; CI must have it)",
)
def test_voip_receive_plays_an_ffmpeg_sender_from_its_sdp(tmp_path, speech, processes: Processes):
    """ffmpeg's Opus goes out as payload type 97: the SDP it writes tells voip receive so."""
    port = free_udp_port()
    sdp, out = tmp_path / "ffmpeg.sdp", tmp_path / "got.wav"
    source = lead_silence(tmp_path, speech)
    ffmpeg_args = ["-hide_banner", "-loglevel", "error", "-re", "-i", str(source), "-c:a", "libopus", "-b:a", "32k"]
    ffmpeg = processes.start(["ffmpeg", *ffmpeg_args, "-f", "rtp", "-sdp_file", str(sdp), f"rtp://127.0.0.1:{port}"])
    assert "opus/48000" in wait_for_file(sdp)
    stats = tmp_path / "rx.json"
    receiver = processes.start(
        voip_command(
            "receive",
            "--sdp",
            str(sdp),
            "--bind",
            "127.0.0.1",
            "--out",
            str(out),
            "--stats-json",
            str(stats),
            "--quiet",
        )
    )
    ffmpeg.communicate(timeout=30)
    assert ffmpeg.returncode == 0
    time.sleep(1.0)  # what is buffered plays out; ffmpeg sends no BYE
    os.kill(receiver.pid, signal.SIGINT)
    _, err = receiver.communicate(timeout=10)
    assert receiver.returncode == 0, err
    assert json.loads(stats.read_text())["packets_invalid"] == 0
    assert_speech_carried(speech, read_48k(out))  # per sentence: 3.68-3.84 whole-file moved with one warp


@pytest.mark.parametrize("command", [("receive", "--out", "null"), ("listen", "--auto-answer")])
def test_a_port_out_of_range_is_refused_before_anything_starts(command):
    result = run_voip(*command, "--port", "99999")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("port 99999 is out of range: 1..65535 (0 for any free port)")


def test_metrics_appends_every_statistic_once_a_second(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"earlier": "run"}\n')  # appended to, not replaced
    result = run_voip(
        "loopback",
        "--in",
        "speech",
        "--out",
        "null",
        "--duration",
        "3.5",
        "--quiet",
        "--metrics",
        str(metrics),
        "--stats-json",
        str(tmp_path / "stats.json"),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert lines[0] == {"earlier": "run"}
    samples = lines[1:]
    assert len(samples) >= 3
    final = json.loads((tmp_path / "stats.json").read_text())
    assert all(set(sample) == set(final) | {"time"} for sample in samples)
    assert [s["time"] for s in samples] == sorted(s["time"] for s in samples)
    assert samples[-1]["packets_received"] > samples[0]["packets_received"]


def test_metrics_to_a_path_that_cannot_be_written_is_one_clear_error(tmp_path):
    result = run_voip("loopback", "--in", "speech", "--out", "null", "--metrics", str(tmp_path / "no" / "m.jsonl"))
    assert result.returncode != 0
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_voip_send_to_voip_receive_is_encrypted_with_the_same_words_on_both_sides(tmp_path, processes: Processes):
    port = free_udp_port()
    receiver = processes.start(
        voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), "--out", str(tmp_path / "got.wav"))
    )
    _wait_for_line(receiver, "listening on")
    sent = run_voip("send", SPEECH, f"127.0.0.1:{port}", "--duration", "2")
    assert sent.returncode == 0, sent.stderr
    _, receiver_err = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, receiver_err
    words = re.search(r'words "([a-z]+ [a-z]+)"', sent.stderr)
    assert words, sent.stderr
    assert f'words "{words.group(1)}"' in receiver_err
    assert "encrypted" in receiver_err and "NOT ENCRYPTED" not in receiver_err
    assert len(read_48k(str(tmp_path / "got.wav"))) > 48000


def test_a_plain_sender_is_received_and_shown_as_not_encrypted(tmp_path, processes: Processes):
    port = free_udp_port()
    receiver = processes.start(
        voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), "--out", str(tmp_path / "got.wav"))
    )
    _wait_for_line(receiver, "listening on")
    assert run_voip("send", SPEECH, f"127.0.0.1:{port}", "--insecure", "--duration", "1").returncode == 0
    _, receiver_err = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, receiver_err
    assert "NOT ENCRYPTED" in receiver_err


def test_a_receiver_with_a_code_takes_only_the_sender_that_knows_it(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    got = tmp_path / "got.wav"
    receiver = processes.start(
        voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), "--code", "--out", str(got))
    )
    _wait_for_line(receiver, "listening on")
    assert receiver.stdout is not None
    code = receiver.stdout.readline().split()[1]  # "code: 7-guitar-harbor  (the sender runs: ...)"
    plain = run_voip("send", "tone:440", f"127.0.0.1:{port}", "--insecure", "--duration", "1", "--quiet")
    assert plain.returncode == 0  # plain RTP expects no answer; the receiver just does not take it
    wrong = run_voip("send", "tone:440", f"127.0.0.1:{port}", "--code", "1-acid-tiger", "--duration", "1")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines()[-1] == "voip: not sent: wrong code: the listener's code is not this one"
    right = run_voip("send", SPEECH, f"127.0.0.1:{port}", "--code", code, "--duration", "2")
    assert right.returncode == 0, right.stderr
    assert "encrypted, verified by code" in right.stderr
    _, receiver_err = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, receiver_err
    assert "a sender came with a wrong code" in receiver_err and "NOT ENCRYPTED" not in receiver_err
    # the speech, not the tone: a receiver that took the plain sender would have ended at its BYE
    assert pesq_wb(speech[: 2 * 48000], read_48k(str(got))) > 3.0


def test_a_code_goes_with_key_agreement_only():
    for args in (("send", "tone:440", "127.0.0.1:5004", "--insecure"), ("receive", "--sdp", "x.sdp", "--out", "null")):
        line = _one_clear_line(run_voip(*args, "--code", "1-acid-tiger"))
        assert "--code agrees keys with" in line


def test_voip_send_with_nobody_to_agree_keys_fails_with_a_hint():
    result = run_voip("send", "silence", f"127.0.0.1:{free_udp_port()}", "--timeout", "3")
    assert result.returncode == 1
    assert "no answer" in result.stderr and "--insecure" in result.stderr and "Traceback" not in result.stderr


BAD_ARGUMENTS = [
    ("receive", "--port", "99999"),
    ("receive", "--port", "five"),
    ("listen", "--port", "-1"),
    ("send", "speech", "127.0.0.1", "--bitrate", "1k"),
    ("send", "speech", "127.0.0.1", "--fec-bitrate", "5k"),
    ("send", "speech", "127.0.0.1", "--frame-ms", "25"),
    ("send", "speech", "127.0.0.1", "--payload-type", "200"),
    ("call", "127.0.0.1", "--timeout", "0"),
    ("call", "127.0.0.1", "--duration", "-3"),
    ("loopback", "--jitter-min-ms", "-5"),
    ("loopback", "--jitter-min-ms", "300", "--jitter-max-ms", "100"),
    ("loopback", "--network", "loss=150%"),
    ("loopback", "--network", "jitter=fast"),
    ("loopback", "--room", "echo=loud"),
    ("loopback", "--complexity", "11"),
    ("receive", "--out", "null", "--no-such-option"),
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=[" ".join(a) for a in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_and_exit_2_before_anything_opens(args):
    result = run_voip(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    # argparse: usage, then the one line (an unknown option is the top parser's to report)
    assert last.startswith((f"voip {args[0]}: error: ", "voip: error: unrecognized")), result.stderr


def test_the_program_loads_only_what_the_command_uses():
    """`voip --help` and parsing load no command, no numpy and no libopus; `voip devices` loads
    PortAudio's binding but not the codec or the network core (issue 13: start-up)."""
    probe = (
        "import sys, voip.cli\n"
        "voip.cli.build_parser().parse_args(['call', 'host'])\n"
        "heavy = ['numpy', 'voip.codec', 'voip.session', 'voip.cli.call', 'voip.cli.streams', 'cryptography']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import voip.cli.devices\n"
        "print(sorted(m for m in ['voip.codec', 'voip.session', 'voip.crypto'] if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["[]", "[]"], result.stdout + result.stderr
