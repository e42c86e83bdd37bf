"""What the commands print: the live status line, the summary, one-line messages."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from voip.control import CallControl
from voip.errors import VoipError
from voip.io.audio import Microphone
from voip.io.plot import write_plot
from voip.session import Session
from voip.stats import StreamStats
from voip.timeline import Timeline

STATUS_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 5.0  # not a terminal: a line this often
PLAIN_WIDTH = 160


Field = tuple[int, str]  # (importance: 0 is kept longest, text) of one part of the status line


class StatusLine:
    """The live status: on a terminal, one self-overwriting line never wider than it (a wider
    line wraps, and every update then stacks a new line); into a pipe or a log, a plain
    line every `PLAIN_INTERVAL_S`, so a long run can be followed there too."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet
        self._terminal = sys.stderr.isatty()
        self._last: float | None = None  # a log's first line comes one interval in, not at once
        self._shown = False

    def show(self, now: float, fields: Callable[[], list[Field]]) -> None:
        """Redraw at most every STATUS_INTERVAL_S (PLAIN_INTERVAL_S into a log); `fields` are
        only built when drawn."""
        if not self.enabled:
            return
        if self._last is None and not self._terminal:
            self._last = now
        interval = STATUS_INTERVAL_S if self._terminal else PLAIN_INTERVAL_S
        if self._last is not None and now - self._last < interval:
            return
        self._last = now
        if self._terminal:
            width = shutil.get_terminal_size(fallback=(80, 24)).columns - 1  # the last column would wrap
            sys.stderr.write("\r\x1b[K" + fit(fields(), width))
            sys.stderr.flush()
            self._shown = True
        else:
            print(fit(fields(), PLAIN_WIDTH), file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


class Metrics:
    """`--metrics PATH`: every statistic of `--stats-json` once a second, as one JSON object
    per line (JSON Lines), appended; "-" is stdout. For watching a long call from another
    program: `jq`, a plot, a dashboard."""

    def __init__(self, path: str | None) -> None:
        self._file: TextIO | None = None
        self._next = -math.inf
        if path == "-":
            self._file = sys.stdout
        elif path:
            try:
                self._file = open(path, "a")  # noqa: SIM115 (open for the command's life; close() ends it)
            except OSError as exc:
                raise VoipError(f"cannot write {path!r}: {exc.strerror or exc}") from None

    def write(self, now: float, stats: Callable[[], StreamStats]) -> None:
        """At most once a second of `now`; `stats` is only read when written."""
        if self._file is None or now < self._next:
            return
        self._next = self._next + 1.0 if now < self._next + 1.0 else now + 1.0  # a steady second
        values = {"time": round(time.time(), 3), **_values(stats())}
        try:
            self._file.write(json.dumps(values) + "\n")
            self._file.flush()
        except OSError as exc:  # the reader went away (`| head`) or the disk filled: the call goes on
            print(f"--metrics: stopped writing ({exc.strerror or exc})", file=sys.stderr)
            if self._file is sys.stdout:  # as Python's docs advise, so exit does not complain again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            else:
                self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


def _values(stats: StreamStats, extra: dict[str, object] | None = None) -> dict[str, object]:
    return {**dataclasses.asdict(stats), "mos": stats.mos, **(extra or {})}


def fit(fields: list[Field], width: int) -> str:
    """The fields in their order, two spaces apart: the most important first, then each less
    important one that still fits (a long field left out leaves room for shorter ones); one
    field that cannot fit alone is cut."""
    kept = [(importance, index, text) for index, (importance, text) in enumerate(fields) if text]
    if not kept:
        return ""
    chosen: set[int] = set()
    length = -2  # no separator before the first field
    for _, index, text in sorted(kept):
        if length + 2 + len(text) <= width:
            chosen.add(index)
            length += 2 + len(text)
    if not chosen:
        text = min(kept)[2]
        return text if len(text) <= width else text[: max(0, width - 1)] + "~"
    return "  ".join(text for _, index, text in kept if index in chosen)


def level_meter(mic: Microphone | None) -> str:
    """A microphone level meter: ten steps from -60 to 0 dBFS."""
    if mic is None:
        return ""
    db = max(-60.0, mic.level_dbfs)
    bars = int((db + 60) / 6)
    return f"mic [{'#' * bars}{'.' * (10 - bars)}] {db:4.0f} dB"


def status_fields(s: StreamStats) -> list[Field]:
    """What we hear (quality, delay, jitter, loss, concealment), the round trip, what the peer
    reports hearing; the MOS and the delay are kept longest on a narrow terminal."""
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "-"
    mos = f"{s.mos:.1f}" if s.mos is not None else "-"
    fields = [
        (0, f"MOS {mos}"),
        (1, f"delay {s.buffer_delay_ms:.0f} ms (target {s.buffer_target_ms:.0f})"),
        (3, f"jitter {s.jitter_ms:4.1f} ms"),
        (1, f"loss {s.packets_lost} (FEC {s.fec_recovered})"),
        (2, f"concealed {s.concealed_ms:.0f} ms ({s.concealment_events} times, {s.interruptions} interruptions)"),
        (4, f"stretched +{s.expanded_ms:.0f}/-{s.accelerated_ms:.0f} ms"),
        (3, f"rtt {rtt}"),
        (5, f"{s.bitrate_kbps:.1f} kbit/s"),
    ]
    if s.erle_db is not None:
        fields.append((2, f"echo cancelled {s.erle_db:.0f} dB"))
    if s.remote_fraction_lost is not None and s.remote_jitter_ms is not None:
        fields.append((4, f"| peer hears: loss {s.remote_fraction_lost:.0%} jitter {s.remote_jitter_ms:.1f} ms"))
    return fields


def summary(title: str, stats: StreamStats, args: argparse.Namespace, extra: dict[str, object] | None = None) -> None:
    """`--stats-json` gets every statistic by its key; people get `summary_table`."""
    if args.stats_json:
        write_text(args.stats_json, json.dumps(_values(stats, extra), indent=2) + "\n")
    if not args.quiet:
        print(f"{title}:")
        print(summary_table(stats, extra, shutil.get_terminal_size().columns if sys.stdout.isatty() else None))
        if (hint := device_hint(stats)) is not None:
            print(hint)


def device_hint(stats: StreamStats) -> str | None:
    """What to do about a device that ran dry (or over) while our threads had normal priority."""
    glitches = stats.output_underflows + stats.input_overflows
    if stats.audio_scheduling != "normal" or not glitches:
        return None
    return (
        f"the sound device was not served in time {glitches} times, and real-time scheduling was "
        "not permitted: `voip doctor` says how to get it"
    )


SUMMARY_INDENT = 14  # where a row's statistics start, after its subject

# The end-of-run table: a row per subject, each statistic with its name and unit (and its
# punctuation: a statistic that is unknown, None, is left out with it). Every key of
# --stats-json is in one row (tested).
SUMMARY_ROWS: list[tuple[str, list[tuple[str, str]]]] = [
    ("packets", [("packets_sent", "sent {},"), ("packets_received", "received {},"), ("packets_lost", "lost {},"),
                 ("packets_late", "late {},"), ("packets_duplicate", "duplicate {},"),
                 ("packets_reordered", "reordered {}")]),
    ("dropped", [("packets_invalid", "unusable {}:"), ("packets_malformed", "malformed {},"),
                 ("packets_wrong_ssrc", "wrong SSRC {},"), ("packets_wrong_payload_type", "wrong payload type {},"),
                 ("packets_sequence_jump", "sequence jump {};"), ("packets_foreign", "from strangers {};"),
                 ("packets_unauthenticated", "failing authentication {}")]),
    ("repair", [("fec_recovered", "rebuilt by FEC or copies {}"), ("fec_packets_received", "(of {} packets with FEC),"),
                ("concealed_ms", "concealed {:.0f} ms"), ("concealment_events", "in {} events,"),
                ("interruptions", "interruptions {}")]),
    ("network", [("jitter_ms", "jitter {:.1f} ms,"), ("rtt_ms", "round trip {:.1f} ms;"),
                 ("remote_fraction_lost", "the peer hears: loss {:.1%},"), ("remote_jitter_ms", "jitter {:.1f} ms;"),
                 ("send_errors", "send errors {}")]),
    ("buffer", [("buffer_delay_ms", "delay {:.1f} ms"), ("buffer_delay_p95_ms", "(95th percentile {:.1f} ms)"),
                ("packets_played", "over {} packets played,"),
                ("buffer_target_ms", "target {:.1f} ms;"), ("expanded_ms", "stretched +{:.0f}"),
                ("accelerated_ms", "/ -{:.0f} ms")]),
    ("quality", [("mos", "MOS {:.2f} (estimated),"), ("bitrate_kbps", "{:.1f} kbit/s,"),
                 ("frame_ms", "frames {:.0f} ms,"), ("lookahead_ms", "codec lookahead {:.1f} ms,"),
                 ("call_setup_ms", "call set-up {:.0f} ms")]),
    ("devices", [("input_overflows", "input overflows {},"), ("output_underflows", "output underflows {},"),
                 ("audio_scheduling", "scheduling {}")]),
    ("processing", [("erle_db", "echo cancelled {:.1f} dB,"), ("echo_delay_ms", "echo delay {:.0f} ms;"),
                    ("input_level_dbfs", "level in {:.1f} dBFS,"), ("output_level_dbfs", "out {:.1f} dBFS")]),
]  # fmt: skip


def summary_table(stats: StreamStats, extra: dict[str, object] | None = None, width: int | None = None) -> str:
    """A row per subject; within `width` columns, a row goes on under itself between statistics."""
    values = _values(stats, extra)
    lines = []
    indent = " " * SUMMARY_INDENT
    for subject, entries in SUMMARY_ROWS:
        shown = [form.format(values[key]) for key, form in entries if values.get(key) is not None]
        if not shown:
            continue
        shown[-1] = shown[-1].rstrip(",;:")
        line = f"  {subject:11} {shown[0]}"
        for entry in shown[1:]:
            if width is not None and len(line) + 1 + len(entry) > width:
                lines.append(line)
                line = indent + entry
            else:
                line += " " + entry
        lines.append(line)
    return "\n".join(lines)


def info(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr)


def show(addr: tuple[str, int] | tuple[str, int, int, int] | tuple[object, ...]) -> str:
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError as exc:
        raise VoipError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def write_text(path: str, text: str, secret: bool = False) -> None:
    """Write a file; a `secret` one (it holds a key) is readable by its owner only, from the start."""
    try:
        if secret:
            Path(path).unlink(missing_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write(text)
        else:
            Path(path).write_text(text)
    except OSError as exc:
        raise VoipError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def record_timeline(args: argparse.Namespace, session: Session) -> None:
    """With --plot, have the session's jitter buffer keep its timeline (the path is checked in main)."""
    if args.plot:
        session.jitter.timeline = Timeline()


def draw_timeline(args: argparse.Namespace, session: Session, stats: StreamStats, title: str) -> None:
    if args.plot and session.jitter.timeline is not None:
        write_plot(session.jitter.timeline, stats, args.plot, title)
        info(f"plot written to {args.plot}", args.quiet)


def security(control: CallControl, confirmed: bool) -> str:
    """What protects the call, for the status line: the words to compare, or a warning."""
    if control.keys is None:
        return "NOT ENCRYPTED (--insecure)"
    if control.keys.sas is None:
        return "encrypted, verified by code"
    return f'encrypted, {"verified" if confirmed else "unverified"}: "{control.keys.sas}"'
