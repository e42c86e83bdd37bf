"""The live status line fits the terminal: a wider line wraps, and each update then stacks."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

import pytest

from tests.conftest import run_voip, voip_command
from voip.cli.console import SUMMARY_ROWS, device_hint, fit, status_fields, summary_table
from voip.stats import StreamStats

BUSY = StreamStats(
    packets_received=1000,
    packets_lost=12,
    rtt_ms=41.5,
    remote_fraction_lost=0.02,
    remote_jitter_ms=3.5,
    erle_db=42.0,
    buffer_delay_ms=61.0,
    concealed_ms=240.0,
    bitrate_kbps=24.3,
)


@pytest.mark.parametrize("width", [40, 80, 120, 160, 400])
def test_the_line_never_exceeds_the_width_and_keeps_what_matters(width):
    line = fit([(0, "00:42"), (0, 'encrypted, unverified: "acid tiger"'), *status_fields(BUSY)], width)
    assert len(line) <= width
    assert line.startswith("00:42")
    if width >= 80:
        assert line.startswith("00:42  encrypted")
        assert "MOS" in line and "delay 61 ms" in line
    if width >= 400:
        assert "peer hears" in line and "kbit/s" in line  # nothing left out when there is room


def test_the_least_important_go_first():
    line = fit(status_fields(BUSY), 120)
    assert "kbit/s" not in line  # the bitrate is the first to go
    assert "loss 12" in line


def test_one_field_too_wide_is_cut():
    assert fit([(0, "x" * 50)], 20) == "x" * 19 + "~"


def test_a_real_terminal_of_80_columns_gets_lines_of_80_at_most():
    """The program's status line on a pseudo-terminal whose COLUMNS says 80."""
    leader, follower = os.openpty()
    env = {**os.environ, "COLUMNS": "80"}
    try:
        proc = subprocess.run(
            voip_command("loopback", "--in", "speech", "--out", "null", "--duration", "2", "--network", "jitter=20ms"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env=env,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower closed: everything was read
                break
            if not chunk:
                break
            output += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    text = output.decode(errors="replace")
    updates = [re.sub(r"\x1b\[K", "", part) for part in re.split(r"[\r\n]", text)]
    status = [u for u in updates if "MOS" in u]
    assert status, text
    assert max(len(u) for u in status) <= 79, status


def test_into_a_log_a_plain_line_comes_every_few_seconds():
    """stderr is a pipe, not a terminal: no carriage returns, a whole line every 5 s."""
    result = run_voip("loopback", "--in", "speech", "--out", "null", "--duration", "6")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "MOS" in line]
    assert len(lines) == 1, result.stderr  # at 5 s; the next would be at 10 s
    assert len(lines[0]) <= 160 and "\r" not in result.stderr


def test_the_summary_table_shows_every_statistic_once_with_its_unit():
    keys = [key for _, entries in SUMMARY_ROWS for key, _ in entries]
    assert sorted(keys) == sorted(
        [*(f.name for f in dataclasses.fields(StreamStats)), "mos", "call_setup_ms", "send_errors"]
    )
    table = summary_table(StreamStats(packets_received=50, packets_lost=2, jitter_ms=4.25), {"call_setup_ms": 31.0})
    assert "received 50, lost 2" in table and "jitter 4.2 ms" in table and "call set-up 31 ms" in table
    assert "round trip" not in table and "echo" not in table  # unknown: no RTCP yet, no processing
    assert not any(line.rstrip().endswith((",", ";", ":")) for line in table.splitlines())


def test_the_summary_table_fits_a_narrow_terminal_breaking_between_statistics():
    wide = summary_table(BUSY)
    narrow = summary_table(BUSY, width=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60 < max(len(line) for line in wide.splitlines())
    # the same statistics, each whole: only the breaks differ
    assert " ".join(narrow.split()) == " ".join(wide.split())
    continued = [line for line in narrow.splitlines() if line.startswith(" " * 14)]
    assert continued and all(not line.startswith(" " * 15) for line in continued)


def test_a_device_that_ran_dry_at_normal_priority_gets_a_hint_and_only_then():
    ran_dry = StreamStats(output_underflows=3, input_overflows=1, audio_scheduling="normal")
    hint = device_hint(ran_dry)
    assert hint is not None and "4 times" in hint and "voip doctor" in hint
    assert device_hint(dataclasses.replace(ran_dry, audio_scheduling="real-time")) is None  # priority was not it
    assert device_hint(dataclasses.replace(ran_dry, output_underflows=0, input_overflows=0)) is None
    assert device_hint(StreamStats()) is None  # no devices
