"""A connection's setup through the ingress in two (or more) checkouts at once: latency and CPU.

This machine's speed drifts by 2-3x over minutes (``direct`` alone measured 0.18 ms p50 one
hour and 0.5 ms the next), so a change to the setup path is judged in pairs: every checkout's
one-process scaffold child (``bench/ingress.py --scaffold``, run from that checkout with its
own ``src``) serves the same two replicas at the same time, and the setups are taken in turn
-- one to each checkout, then one ``direct`` (the peer: the replica with nothing between) --
5 ms apart, so all of them share the same seconds. Per run it reports each checkout's p50
overhead over ``direct`` and the CPU time its child spent per setup (user + system, from
``/proc``, less the child's idle rate measured just before: heartbeats, health checks).

Two children share the caches and the two CPUs, so the absolute figures run above
``bench/ingress.py``'s; the differences are what to read. A checkout is any tree of this
repository (``git worktree add /tmp/base main``): its child runs on this interpreter, with
that tree's ``src`` and ``bench/ingress.py``.

    PYTHONPATH=src .venv/bin/python bench/ab_setup.py /tmp/base,. [--rounds 300] [--runs 3] [--http]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, emit, environment
from ingress import answers, free_port, one_setup, scaffold_state, wait_for

BENCH = Path(__file__).resolve().parent


def checkout_of(text: str) -> Path:
    path = Path(text).resolve()
    if not (path / "src" / "scaffold").is_dir() or not (path / "bench" / "ingress.py").is_file():
        missing = "src/scaffold or bench/ingress.py missing"
        raise SystemExit(f"bench/ab_setup.py: {text} is not a checkout of scaffold ({missing})")
    return path


def measure(args: argparse.Namespace) -> dict[str, Any]:
    checkouts = [checkout_of(c) for c in args.checkouts.split(",")]
    names = [c.name or str(c) for c in checkouts]
    if len(set(names)) != len(names):  # two trees of one name: their whole paths
        names = [str(c) for c in checkouts]
    procs: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], src: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(src))
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    runs: list[dict[str, Any]] = []
    try:
        replicas = [free_port(), free_port()]
        for port in replicas:
            start([sys.executable, str(BENCH / "ingress.py"), "--replica", str(port)], BENCH.parent / "src")
        for port in replicas:
            wait_for(lambda port=port: answers(port), f"replica on port {port}")
        children: list[tuple[str, int, int]] = []  # name, pid, port
        for name, checkout in zip(names, checkouts, strict=True):
            control = free_port()
            child = start(
                [
                    sys.executable,
                    str(checkout / "bench" / "ingress.py"),
                    "--scaffold",
                    ",".join(map(str, replicas)),
                    "--control",
                    str(control),
                ],
                checkout / "src",
            )
            wait_for(lambda control=control: answers(control), f"the scaffold network of {name}")
            wait_for(
                lambda control=control: all(p["healthy"] for p in scaffold_state(control)["publishers"]),
                f"the publishers of {name}",
            )
            port = scaffold_state(control)["http_port" if args.http else "raw_port"]
            children.append((name, child.pid, port))
        for _, _, port in children:
            for _ in range(30):  # first-use imports and caches out of the measured rounds
                one_setup(port)
        for run in range(args.runs):
            before = {name: cpu_seconds(pid) for name, pid, _ in children}
            started = time.monotonic()
            time.sleep(args.idle)
            quiet = time.monotonic() - started
            idle = {name: (cpu_seconds(pid) - before[name]) / quiet for name, pid, _ in children}
            before = {name: cpu_seconds(pid) for name, pid, _ in children}
            started = time.monotonic()
            latency: dict[str, list[float]] = {name: [] for name, _, _ in children}
            direct: list[float] = []
            for _ in range(args.rounds):
                for name, _, port in children:
                    time.sleep(0.005)
                    latency[name].append(one_setup(port))
                time.sleep(0.005)
                direct.append(one_setup(replicas[0]))
            elapsed = time.monotonic() - started
            base = statistics.median(direct)
            row: dict[str, Any] = {"run": run + 1, "direct_p50_ms": round(base * 1000, 3)}
            for name, pid, _ in children:
                spent = cpu_seconds(pid) - before[name] - idle[name] * elapsed
                row[name] = {
                    "overhead_p50_ms": round((statistics.median(latency[name]) - base) * 1000, 3),
                    "cpu_us_per_setup": round(spent / args.rounds * 1e6),
                }
            runs.append(row)
            print(f"run {run + 1}: {row}", file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return {
        "benchmark": "ab-setup",
        "environment": environment(),
        "mode": "http" if args.http else "raw",
        "checkouts": dict(zip(names, map(str, checkouts), strict=True)),
        "rounds": args.rounds,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", help="comma-separated checkouts of this repository (e.g. /tmp/base,.)")
    parser.add_argument("--rounds", type=int, default=300, help="setups per checkout per run (default 300)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle rate (default 2)")
    parser.add_argument("--http", action="store_true", help="the HTTP ingress (default: raw)")
    args = parser.parse_args()
    if args.rounds < 1 or args.runs < 1 or args.idle <= 0:
        parser.error("--rounds and --runs must be positive, --idle above 0")
    emit(measure(args))


if __name__ == "__main__":
    main()
