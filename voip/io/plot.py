"""`--plot PATH.png`: the jitter buffer's timeline as a picture (matplotlib, imported on use)."""

from __future__ import annotations

from pathlib import Path

from voip.errors import VoipError
from voip.stats import StreamStats
from voip.timeline import Timeline

MATPLOTLIB_HINT = "--plot needs matplotlib: pip install matplotlib (or the package's [plot] extra)"


def check_plot_path(path: str) -> None:
    """Fail before the call, not after it: matplotlib present, a .png in a folder that exists."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VoipError(MATPLOTLIB_HINT) from None
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise VoipError(f"--plot writes a PNG: give a path ending in .png, not {path!r}")
    if not target.parent.is_dir():
        raise VoipError(f"cannot write {path!r}: folder {str(target.parent)!r} does not exist")


def write_plot(timeline: Timeline, stats: StreamStats, path: str, title: str) -> None:
    """Arrival delay, target and playout delay over time, with losses, late packets and stretches."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    start = min((t for t, _ in timeline.arrivals), default=0.0)
    figure, axes = plt.subplots(figsize=(12, 5), constrained_layout=True)
    if timeline.arrivals:
        times, delays = zip(*timeline.arrivals, strict=True)
        axes.scatter([t - start for t in times], delays, s=3, color="0.6", label="relative arrival delay")
    if timeline.playouts:
        times, playout, target = zip(*timeline.playouts, strict=True)
        seconds = [t - start for t in times]
        axes.step(seconds, target, where="post", color="tab:orange", label="target playout delay")
        axes.step(seconds, playout, where="post", color="tab:blue", linewidth=1, label="playout delay")
    for index, (t, ms) in enumerate(timeline.concealments):
        axes.axvspan(
            t - start,
            t - start + ms / 1000,
            color="tab:red",
            alpha=0.25,
            lw=0,
            label="concealed (loss or late)" if index == 0 else None,
        )
    if timeline.late:
        axes.plot(
            [t - start for t in timeline.late],
            [0] * len(timeline.late),
            "x",
            color="tab:red",
            label="late packet (dropped)",
        )
    for label, sign, color in (("expanded", 1, "tab:green"), ("accelerated", -1, "tab:purple")):
        marks = [t - start for t, ms in timeline.stretches if ms * sign > 0]
        if marks:
            axes.plot(marks, [0] * len(marks), "|", markersize=14, color=color, label=label)
    axes.set_xlabel("seconds")
    axes.set_ylabel("milliseconds")
    axes.set_title(
        f"{title}: {stats.packets_received} packets, {stats.packets_lost} lost, {stats.packets_late} late, "
        f"{stats.concealed_ms:.0f} ms concealed, buffer delay {stats.buffer_delay_ms:.0f} ms "
        f"(p95 {stats.buffer_delay_p95_ms:.0f})"
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise VoipError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
