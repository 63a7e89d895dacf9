"""``bench/ingress.py``'s CPU accounting: a setup's processes counted whole (a ``--workers``
supervisor's workers are its children), and the budget that says whether a goal fits this
machine's CPUs."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
bench_ingress = importlib.import_module("ingress")  # bench/ingress.py (bench/ is no package)
bench_common = importlib.import_module("_common")

#: a parent that starts a child burning CPU for ``BURN`` seconds, then both wait to be stopped
BURN = 0.4
FAMILY = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
                          "while time.process_time() - t < {BURN}: pass\\nprint('burnt', flush=True)\\n"
                          "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
child.stdout.readline()
print("done", flush=True)
time.sleep(60)
"""


def test_a_process_tree_counts_its_childrens_cpu() -> None:
    parent = subprocess.Popen([sys.executable, "-c", FAMILY], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "done"
        whole, alone = bench_common.process_cpu_seconds(parent.pid), bench_common.process_cpu_seconds(child)
        assert alone >= BURN * 0.9  # the child's burn
        assert whole >= alone  # the parent's own start-up on top
        assert bench_common.process_cpu_seconds(2**22 + 7) == 0.0  # (no such process)
    finally:
        for pid in (child, parent.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        parent.wait(10)


def test_machine_busy_moves_with_work() -> None:
    before = bench_ingress.machine_busy()
    started = time.process_time()
    while time.process_time() - started < 0.2:
        pass
    assert bench_ingress.machine_busy() - before >= 0.15


def throughput(rate: float, balancer: float | None = None, others: float = 0.0) -> dict[str, object]:
    entry: dict[str, object] = {"requests_per_s": rate}
    if balancer is not None:
        entry["cpu_us_per_request"] = {"balancer": balancer, "wrk": others / 2, "replicas": others / 2}
    return entry


@pytest.mark.parametrize(
    ("cost", "fits"),
    [(90.0, True), (110.0, False)],
)
def test_a_goal_fits_when_its_cost_is_within_what_the_others_leave(cost: float, fits: bool) -> None:
    # HAProxy at 40k/s: the goal is 10k/s; wrk and the replicas at 40 µs a request take 0.4
    # of the 2 CPUs, but one worker has one core: 1 / 10k = 100 µs a request.
    runs = {"haproxy-tuned": throughput(40_000, 15.0), "scaffold-raw": throughput(9_000, cost, 40.0)}
    budget = bench_ingress.cpu_budget(runs, cpus=2)["scaffold-raw/haproxy-tuned"]
    assert budget["target_requests_per_s"] == 10_000
    assert budget["budget_us_per_request"] == pytest.approx(100.0)
    assert budget["fits"] is fits
    # The deployment's processes may use both CPUs: (2 - 0.4) / 10k = 160 µs a request.
    runs = {"haproxy-tuned": throughput(40_000, 15.0), "scaffold-raw-w1": throughput(9_000, cost, 40.0)}
    deployed = bench_ingress.cpu_budget(runs, cpus=2)["scaffold-raw-w1/haproxy-tuned"]
    assert deployed["budget_us_per_request"] == pytest.approx(160.0)
    assert deployed["fits"] is True
    # A deployment at 0.45x of 50k/s: 22.5k/s, the others take 0.9 CPU, 1.1 left: 48.9 µs.
    runs = {"haproxy-tuned-2t": throughput(50_000, 15.0), "scaffold-raw-w2": throughput(6_000, cost, 40.0)}
    two = bench_ingress.cpu_budget(runs, cpus=2)["scaffold-raw-w2/haproxy-tuned-2t"]
    assert two["budget_us_per_request"] == pytest.approx(1.1 / 22_500 * 1e6, abs=0.1)
    assert two["fits"] is False
    # A setup not measured (or without its CPU) has no entry.
    assert bench_ingress.cpu_budget({"haproxy-tuned": throughput(40_000)}, cpus=2) == {}
