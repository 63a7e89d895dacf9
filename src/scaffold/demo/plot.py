"""The demo's picture: per-flow goodput over time, with the churn events marked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .results import DemoReport

__all__ = ["plot_goodput"]

BIN = 0.25  # seconds per goodput sample


def plot_goodput(report: DemoReport, path: str) -> None:
    """Write a PNG: one goodput line per flow (KiB/s in 0.25 s bins), events as lines.

    Raises:
        UsageError: matplotlib is not installed (``pip install scaffold[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib: pip install 'scaffold[plot]'") from exc
    end = max((t for p in report.progress.values() for t, _ in p), default=1.0)
    bins = int(end / BIN) + 2
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    for name, samples in sorted(report.progress.items()):
        rates = [0.0] * bins
        last = 0
        for t, offset in samples:
            rates[int(t / BIN)] += (offset - last) / 1024 / BIN
            last = offset
        style = "-" if "/web#" in name else "--"
        ax.plot([i * BIN for i in range(bins)], rates, style, linewidth=0.8, alpha=0.7)
    top = ax.get_ylim()[1]
    for event in report.events:
        ax.axvline(event["t"], color="black", linewidth=1, alpha=0.6)
        label = f"{event['kind']}\n{event['flows_recovered']}/{event['flows_affected']} recovered"
        ax.text(event["t"] + 0.05, top * 0.97, label, fontsize=7, va="top")
    ax.set_xlabel("seconds since the flows started")
    ax.set_ylabel("goodput per flow (KiB/s)")
    ax.set_title("SCAFFOLD demo: per-flow goodput under churn (solid: web, resumable; dashed: session)")
    ax.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
