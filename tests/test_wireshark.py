"""What Wireshark makes of our packets: captures by dumpcap on the loopback device, read by
tshark, with contrib/voip.lua for our call control. Needs root to capture (CI runs as root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Processes, free_udp_port, run_voip, voip_command
from tests.test_call import _listener, _wait_for_line
from voip.codec import OpusEncoder, OpusSettings
from voip.red import RED_PAYLOAD_TYPE, RedPayload, RedundantBlock
from voip.rtp import RtpPacket

LUA = Path(__file__).resolve().parent.parent / "contrib" / "voip.lua"

pytestmark = pytest.mark.skipif(
    (shutil.which("tshark") is None or os.geteuid() != 0) and not os.environ.get("CI"),
    reason="needs tshark and dumpcap (scripts/test installs them) and root to capture",
)


class Capture:
    """dumpcap on lo for one UDP port, from when it really captures to when it is stopped.

    dumpcap says "Capturing on" some 100 ms before packets reach its file, and may still hold
    packets when told to stop: a probe, sent to a second port it also captures, has reached the
    file once the file grows. Packets are written in order, so all before the probe are there."""

    def __init__(self, processes: Processes, port: int, path: Path) -> None:
        self.path = path
        self._probe_port = free_udp_port()
        wanted = f"udp port {port} or udp port {self._probe_port}"
        self.proc = processes.start(["dumpcap", "-q", "-i", "lo", "-f", wanted, "-w", str(path)])
        _wait_for_line(self.proc, "Capturing on")
        self._probe()

    def _probe(self) -> None:
        before = None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for _ in range(200):  # bounded: 10 s of probes at most
                size = self.path.stat().st_size if self.path.exists() else None
                if before is None:
                    before = size  # what the file held before the first probe
                elif size is not None and size > before:
                    return
                probe.sendto(b"probe", ("127.0.0.1", self._probe_port))
                time.sleep(0.05)
        raise AssertionError("dumpcap wrote no probe in 10 s")

    def stop(self) -> Path:
        self._probe()
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=15)
        assert self.proc.returncode == 0, err
        return self.path


def _tshark(*args: str) -> str:
    result = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tshark_reads_a_stream_as_rtp_and_rtcp_and_counts_what_we_count(tmp_path, processes: Processes):
    port = free_udp_port()
    capture = Capture(processes, port, tmp_path / "stream.pcapng")
    stats = tmp_path / "rx.json"
    receiver = processes.start(
        voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), "--out", "null", "--stats-json", str(stats))
    )
    _wait_for_line(receiver, "listening on")
    impaired = ("--network", "loss=3%,jitter=10ms", "--seed", "1")  # something to count
    sent = run_voip("send", "speech", f"127.0.0.1:{port}", "--insecure", "--quiet", *impaired)
    assert sent.returncode == 0, sent.stderr
    receiver.communicate(timeout=30)
    pcap = capture.stop()
    decode = ("-r", str(pcap), "-d", f"udp.port=={port},rtp", "-o", "opus.dynamic.payload.type:111")
    assert _tshark(*decode, "-Y", "_ws.malformed") == ""
    kinds = _tshark(*decode, "-T", "fields", "-e", "_ws.col.Protocol").split()
    # media as Opus in RTP every 20 ms, reports every ~2 s (plus the BYE)
    assert kinds.count("RTCP") >= 3 and kinds.count("OPUS") > 300
    streams = _tshark(*decode, "-q", "-z", "rtp,streams")
    row = re.search(r"\bopus\s+(\d+)\s+(-?\d+) \(", streams)
    assert row, streams
    ours = json.loads(stats.read_text())
    assert (int(row.group(1)), int(row.group(2))) == (ours["packets_received"], ours["packets_lost"])  # to the packet
    assert ours["packets_lost"] > 0
    # Jitter: Wireshark reports none for a dynamic payload type with no SDP in the capture (it
    # knows no clock rate), so RFC 3550's estimator runs here on its capture times
    times = _tshark(*decode, "-Y", "rtp.p_type == 111", "-T", "fields", "-e", "frame.time_epoch", "-e", "rtp.timestamp")
    jitter, last = 0.0, None
    for line in times.splitlines():
        arrival, timestamp = line.split()
        transit = float(arrival) * 48000 - int(timestamp)
        if last is not None:
            jitter += (abs(transit - last) - jitter) / 16
        last = transit
    # the socket's kernel stamps make ours the wire's (0.01 ms apart here; 1.3 ms off before
    # them). Once, in a fresh-clone run on a busy machine, 5.24 ms against 5.51: not explained
    # yet (ours is the lower, so it is not a packet read without its stamp), hence 10%.
    assert ours["jitter_ms"] == pytest.approx(jitter / 48, rel=0.1, abs=0.2)


def test_the_lua_dissector_reads_every_message_of_a_call(tmp_path, processes: Processes):
    port = free_udp_port()
    capture = Capture(processes, port, tmp_path / "call.pcapng")
    listener = _listener(processes, "127.0.0.1", port, "--in", "tone:440", "--out", "null")
    call = run_voip("call", f"127.0.0.1:{port}", "--in", "tone:880", "--out", "null", "--duration", "1")
    assert call.returncode == 0, call.stderr
    listener.communicate(timeout=30)
    pcap = capture.stop()
    fields = ("-T", "fields", "-e", "voip.type", "-e", "voip.authenticated", "-e", "voip.offer.encrypted")
    rows = _tshark("-X", f"lua_script:{LUA}", "-r", str(pcap), "-Y", "voip", *fields).splitlines()
    messages = [row.split("\t") for row in rows]
    types = [int(kind) for kind, *_ in messages]
    assert types[:4] == [1, 2, 3, 7]  # INVITE, RINGING, ACCEPT, REVEAL: the handshake in order
    assert {5, 6} <= set(types)  # HANGUP and its acknowledgement
    for kind, authenticated, encrypted in messages:
        if int(kind) in (5, 6):
            assert authenticated == "1"  # under the call's keys
        if int(kind) in (1, 3):
            assert encrypted == "1"
    assert _tshark("-X", f"lua_script:{LUA}", "-r", str(pcap), "-Y", "voip && _ws.malformed") == ""


def _pcap(path: Path, payloads: list[bytes], port: int) -> None:
    """A classic pcap of UDP datagrams from 127.0.0.1:40000 to 127.0.0.1:`port`."""
    records = []
    for payload in payloads:
        udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x7f\0\0\x01", b"\x7f\0\0\x01")
        words = struct.unpack("!10H", ip)
        total = sum(words)
        total = (total & 0xFFFF) + (total >> 16)
        ip = ip[:10] + struct.pack("!H", ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp  # Ethernet II, IPv4
        records.append(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))


def test_tshark_reads_our_redundant_audio_as_rfc_2198_with_opus_in_both_blocks(tmp_path):
    encoder = OpusEncoder(OpusSettings())
    older, newer = (encoder.encode(np.zeros(960, dtype=np.float32)) for _ in range(2))
    red = RedPayload(111, newer, (RedundantBlock(960, older),))
    packet = RtpPacket(RED_PAYLOAD_TYPE, 2, 1920, 7, red.serialize()).serialize()
    _pcap(tmp_path / "red.pcap", [packet], 5004)
    out = _tshark(
        "-r", str(tmp_path / "red.pcap"), "-d", "udp.port==5004,rtp", "-d", f"rtp.pt=={RED_PAYLOAD_TYPE},rtp_rfc2198",
        "-o", "opus.dynamic.payload.type:111", "-V",
    )  # fmt: skip
    assert "RFC 2198: Redundant Audio Data" in out and "Timestamp offset: 960" in out, out
    assert f"Block length: {len(older)}" in out and out.count("Opus Interactive Audio Codec") == 2, out
