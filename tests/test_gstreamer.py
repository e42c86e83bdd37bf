"""GStreamer on both ends of our streams, as real gst-launch-1.0 processes.

`voip send` to GStreamer: plain RTP through sdpdemux reading our SDP, and SRTP through
srtpdec with caps built from it (GStreamer 1.22's sdpdemux ignores a=crypto: it passes the
ciphertext on). A GStreamer sender (opusenc ! rtpopuspay) to `voip receive --sdp`, with an
SDP written by hand as a GStreamer user would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Processes, assert_speech_carried, free_udp_port, lead_silence, voip_command, wait_for_file
from tests.test_call import _wait_for_line
from voip.io.files import read_48k
from voip.sdp import parse_opus_sdp

pytestmark = pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None and not os.environ.get("CI"),
    reason="GStreamer not installed (scripts/test installs it; CI must have it)",
)

# Raw samples, written as they come: the pipeline is stopped by a signal, and EOS through
# srtpdec never reaches the sinks (GStreamer 1.22), so a WAV header would stay unfinished.
DECODE_TO_RAW = (
    "rtpopusdepay ! opusdec ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,rate=48000,channels=1 ! "
    "filesink buffer-mode=unbuffered"
)


def _gst(processes: Processes, pipeline: str) -> subprocess.Popen[str]:
    """gst-launch-1.0 running `pipeline`, once it is playing."""
    proc = processes.start(["gst-launch-1.0", *pipeline.split()])
    assert proc.stdout is not None
    killer = threading.Timer(15.0, proc.kill)  # a pipeline that never plays fails the test, not the suite
    killer.start()
    try:
        for line in proc.stdout:
            if "Setting pipeline to PLAYING" in line:
                return proc
    finally:
        killer.cancel()
    raise AssertionError(f"GStreamer did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop_and_read(proc: subprocess.Popen[str], raw: Path) -> np.ndarray:
    """Stop a pipeline that is still running (sdpdemux ends by itself at our RTCP BYE)."""
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=15)
    assert proc.returncode in (0, -signal.SIGTERM), err
    return np.fromfile(raw, dtype="<f4")


def _srtp_caps(sdp: str) -> str:
    """What srtpdec needs, from our SDP: the payload type, the SSRC (a=ssrc) and the SDES key."""
    stream = parse_opus_sdp(sdp)
    ssrc = re.search(r"^a=ssrc:(\d+) ", sdp, re.MULTILINE)
    assert stream.srtp_key is not None and ssrc is not None, sdp
    return (
        "application/x-srtp,media=audio,clock-rate=48000,encoding-name=OPUS,"
        f"payload={stream.payload_type},ssrc=(uint){ssrc.group(1)},srtp-key=(buffer){stream.srtp_key.hex()},"
        "srtp-cipher=aes-128-icm,srtp-auth=hmac-sha1-80,srtcp-cipher=aes-128-icm,srtcp-auth=hmac-sha1-80"
    )


def test_gstreamer_plays_voip_send_from_its_sdp(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    sdp, out = tmp_path / "stream.sdp", tmp_path / "gst.f32"
    sender = processes.start(
        voip_command(
            "send", str(lead_silence(tmp_path, speech)), f"127.0.0.1:{port}", "--insecure", "--sdp", str(sdp), "--quiet"
        )
    )
    wait_for_file(sdp)
    gst = _gst(processes, f"filesrc location={sdp} ! sdpdemux ! {DECODE_TO_RAW} location={out}")
    _, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    assert_speech_carried(speech, _stop_and_read(gst, out))


def test_gstreamer_decrypts_voip_send_with_the_key_in_its_sdp(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    sdp, out = tmp_path / "stream.sdp", tmp_path / "gst.f32"
    sender = processes.start(
        voip_command("send", str(lead_silence(tmp_path, speech)), f"127.0.0.1:{port}", "--sdp", str(sdp), "--quiet")
    )
    caps = _srtp_caps(wait_for_file(sdp))
    # with rtcp-mux, srtpdec sends the decrypted RTCP out of its rtcp_src pad, which must go somewhere
    pipeline = (
        f"udpsrc address=127.0.0.1 port={port} caps={caps} ! srtpdec name=srtp "
        f"srtp.rtp_src ! {DECODE_TO_RAW} location={out} srtp.rtcp_src ! fakesink async=false sync=false"
    )
    gst = _gst(processes, pipeline)
    _, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    assert_speech_carried(speech, _stop_and_read(gst, out))


def test_voip_receive_plays_a_gstreamer_sender_from_a_hand_written_sdp(tmp_path, speech, processes: Processes):
    port = free_udp_port()
    sdp, out, stats = tmp_path / "gst.sdp", tmp_path / "got.wav", tmp_path / "rx.json"
    sdp.write_text(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=GStreamer\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio {port} RTP/AVP 96\na=rtpmap:96 OPUS/48000/2\n"
    )
    receiver = processes.start(
        voip_command("receive", "--sdp", str(sdp), "--bind", "127.0.0.1", "--out", str(out), "--stats-json", str(stats))
    )
    _wait_for_line(receiver, "listening on")
    source = lead_silence(tmp_path, speech, 0.5)
    pipeline = (
        f"filesrc location={source} ! wavparse ! audioconvert ! audioresample ! opusenc bitrate=32000 ! "
        f"rtpopuspay pt=96 ! udpsink host=127.0.0.1 port={port}"
    )
    sender = subprocess.run(["gst-launch-1.0", *pipeline.split()], capture_output=True, text=True, timeout=30)
    assert sender.returncode == 0, sender.stderr
    os.kill(receiver.pid, signal.SIGINT)  # GStreamer sends no BYE: the receiver plays out what it has
    _, err = receiver.communicate(timeout=15)
    assert receiver.returncode == 0, err
    received = read_48k(out)
    assert len(received) > 0.9 * len(speech)
    assert float(np.sqrt(np.mean(received**2))) > 0.01
    assert_speech_carried(speech, received)
