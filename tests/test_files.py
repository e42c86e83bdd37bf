"""Recordings: a WAV that survives its writer being killed, and a full disk said in one line."""

from __future__ import annotations

import json
import os
import signal
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Processes, free_udp_port, run_voip, voip_command
from tests.test_call import _listener, _wait_for_line
from voip.io.files import WAV_HEADER, WavSink, open_sink, read_48k

RATE = 48000


def test_a_wav_counts_its_samples_every_second_before_it_is_closed(tmp_path):
    path = tmp_path / "x.wav"
    sink = open_sink(str(path))
    assert isinstance(sink, WavSink)
    tone = (0.5 * np.sin(np.arange(RATE // 2) * 0.05)).astype(np.float32)
    for _ in range(5):  # 2.5 s, and no close: as if the process died here
        sink.write(tone)
    with wave.open(str(path)) as cut:
        assert (cut.getframerate(), cut.getnchannels(), cut.getsampwidth()) == (RATE, 1, 2)
        assert cut.getnframes() == 2 * RATE  # the last stamp, at 2 s
    sink.close()
    whole = read_48k(path)
    assert len(whole) == 5 * len(tone)
    assert np.max(np.abs(whole - np.tile(tone, 5))) < 1e-4


def test_a_recording_cut_by_sigkill_is_a_valid_wav(tmp_path, processes: Processes):
    path = tmp_path / "cut.wav"
    proc = processes.start(voip_command("loopback", "--in", "speech", "--out", str(path), "--quiet"))
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < WAV_HEADER.size + 2 * RATE * 3) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for 3 s of audio in the file, not for a time
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with wave.open(str(path)) as cut:
        assert cut.getnframes() >= 2 * RATE  # all but what came after the last stamp


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_a_full_disk_is_one_line_and_the_call_is_hung_up(tmp_path, processes: Processes):
    full = tmp_path / "full.wav"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    port = free_udp_port()
    listener = _listener(processes, "127.0.0.1", port, "--in", "tone:440", "--out", str(full))
    caller = run_voip("call", f"127.0.0.1:{port}", "--in", "tone:880", "--out", "null", "--duration", "10")
    _, err = listener.communicate(timeout=15)
    assert listener.returncode == 1
    assert err.strip().splitlines()[-1] == f"voip: cannot write audio file {str(full)!r}: No space left on device"
    assert "Traceback" not in err
    assert caller.returncode == 0 and "call ended: remote hung up" in caller.stdout  # told, not left to time out


def test_sigterm_ends_a_recording_as_ctrl_c_does(tmp_path, processes: Processes):
    port = free_udp_port()
    path = tmp_path / "got.wav"
    receiver = processes.start(voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), "--out", str(path)))
    sender = processes.start(
        voip_command("send", "tone:440", f"127.0.0.1:{port}", "--insecure", "--duration", "20", "--quiet")
    )
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < WAV_HEADER.size + 2 * RATE) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(receiver.pid, signal.SIGTERM)
    out, err = receiver.communicate(timeout=15)
    assert receiver.returncode == 0, err
    assert "received:" in out  # the summary, as after Ctrl-C
    with wave.open(str(path)) as whole:
        assert whole.getnframes() >= RATE
    sender.send_signal(signal.SIGTERM)
    sender.communicate(timeout=15)
    assert sender.returncode == 0


def test_a_recording_whose_writer_stood_still_for_seconds_keeps_everything(tmp_path, processes: Processes):
    """`voip receive --out FILE` stopped (SIGSTOP) for 2.5 s while the sender goes on. The
    packets wait in the socket with the kernel's arrival stamps; after SIGCONT the loop reads
    them first and pulls the missed frames between them, as it would have. So the recording is
    the whole stream, with nothing concealed or stretched. Pulling the missed frames before
    reading the socket concealed the stall, then found the buffer seconds full: 3 s of
    stretching and 1.9 s of extra audio, or 151 packets late."""
    port = free_udp_port()
    path, stats = tmp_path / "got.wav", tmp_path / "receiver.json"
    receiver = processes.start(
        voip_command(
            "receive", "--bind", "127.0.0.1", "--port", str(port), "--out", str(path), "--stats-json", str(stats)
        )
    )
    _wait_for_line(receiver, "listening on")
    sender = processes.start(voip_command("send", "speech", f"127.0.0.1:{port}", "--insecure", "--quiet"))
    _wait_for_line(receiver, "receiving from")
    time.sleep(1.0)  # into the stream, so the stall falls inside it
    os.kill(receiver.pid, signal.SIGSTOP)
    time.sleep(2.5)  # the fault itself: a receiver that does not run
    os.kill(receiver.pid, signal.SIGCONT)
    sender.communicate(timeout=30)
    receiver.communicate(timeout=30)
    assert sender.returncode == 0 and receiver.returncode == 0
    values = json.loads(stats.read_text())
    print({key: values[key] for key in ("packets_late", "concealed_ms", "expanded_ms", "accelerated_ms")})
    assert values["packets_received"] == values["packets_played"] >= 390  # 7.88 s of 20 ms frames
    assert values["packets_late"] == 0 and values["packets_lost"] == 0
    assert values["concealed_ms"] + values["expanded_ms"] + values["accelerated_ms"] <= 100.0
    assert abs(len(read_48k(path)) / RATE - 7.88) <= 0.1
