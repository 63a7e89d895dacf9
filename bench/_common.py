"""Helpers shared by the benchmark scripts under ``bench/`` (not a benchmark itself).

Every benchmark prints one JSON document on stdout and measures its peer in the same run,
so machine noise hits both sides (STYLE.md, habit 10).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Address", "cpu_seconds", "emit", "environment", "median", "pin_to_cpu", "process_cpu_seconds"]

Address = tuple[str, int]


def median(values: Sequence[float]) -> float:
    """The median, rounded for a readable report."""
    return round(statistics.median(values), 1)


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time so far of process ``pid`` alone ("self": this one) (Linux
    ``/proc``; robust to a busy machine, where wall time is not)."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields 14 and 15 of proc(5), counted after the ")" that ends the command name.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process ``pid`` and every process below it (a relay's
    workers, a ``--workers`` supervisor's) (Linux ``/proc``; 0 elsewhere, or for a process
    gone)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 4, 14 and 15 of proc(5), counted after the ")" that ends the command name.
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    tree, total = {pid}, 0.0
    for _ in range(4):  # a relay's or a pool's process tree is at most a few levels deep
        tree |= {child for child, (parent, _) in stats.items() if parent in tree}
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


def pin_to_cpu(cpu: int, pid: int = 0) -> int | None:
    """Pin process ``pid`` (0: this one) to the ``cpu``-th CPU of the machine (modulo their
    number); the CPU id used, or None.

    Counts over all online CPUs, not this process's affinity, so a child of a pinned
    process can still be pinned elsewhere.
    """
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return None
    online = sorted(_online_cpus())
    if len(online) < 2:
        return None
    chosen = online[cpu % len(online)]
    os.sched_setaffinity(pid, {chosen})
    return chosen


def _online_cpus() -> set[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return set(range(os.cpu_count() or 1))
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def environment() -> dict[str, Any]:
    """Interpreter and machine facts every report carries."""
    try:
        import uvloop  # noqa: F401

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "uvloop": has_uvloop,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def emit(report: dict[str, Any]) -> None:
    """Print the report as the script's one JSON document."""
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
