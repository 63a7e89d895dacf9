"""What mutual TLS costs the control plane, and what an oversized frame costs the controller.

The controller runs in a child process (a real ``ControllerRuntime`` behind a real
``Controller``, one datacenter), twice: with the network's credentials (mutual TLS 1.3,
Ed25519 certificates) and on plain TCP (the peer: what it cost before). Against each, this
process measures, with real host certificates issued by the network's CA:

* ``setup``: ``--setups`` sequential control connections, each from ``connect()`` to the
  ``Welcome`` answering its ``Hello`` (what a host pays to register): p50 / p99 ms;
* ``registrations``: ``--hosts`` hosts registering, ``--concurrency`` at a time: per second,
  and the controller's CPU time per registration (from ``/proc``: what a busy machine does
  not distort);
* ``big_frame``: ``--frames`` connections that each send an 8 MiB frame of nested empty
  arrays (0x91 repeated, what the issue's attacker sent): time from the first byte written to
  the connection's close (median and max ms) and the controller's RSS growth (MB).

    PYTHONPATH=src python bench/control_tls.py [--hosts 400] [--setups 200]

Prints one JSON document; ``tls_over_plain`` gives the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, emit, environment
from scaffold.core.controller import Controller
from scaffold.core.topology import make_topology
from scaffold.runtime.aio import ControllerRuntime, run
from scaffold.runtime.tls import CredentialStore, client_context
from scaffold.wire import control

BIG = 8 * 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def controller_child(store_dir: str, tls: bool) -> None:
    store = CredentialStore(store_dir)
    core = Controller(make_topology(1, 1), heartbeat_interval=3600.0, open_binding=True)
    runtime = ControllerRuntime(
        core, ("127.0.0.1", 0), credentials=store.node("controller", "controller") if tls else None
    )
    await runtime.start()
    print(runtime.address[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await runtime.close()


async def registered_host(port: int, name: str, context: ssl.SSLContext | None) -> asyncio.StreamWriter:
    """A host's control connection, its ``Hello`` answered (also used by ``keepalive.py``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(control.frame(control.Hello(name, "host", gateway="dc1-fs1", address=("127.0.0.1", 9))))
    decoder = control.FrameDecoder(control.MAX_FRAME_FROM_CONTROLLER)
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"{name}: closed before Welcome")
        if any(isinstance(m, control.Welcome) for m in decoder.feed(chunk)):
            return writer


async def register(port: int, name: str, context: ssl.SSLContext | None) -> float:
    started = time.perf_counter()
    writer = await registered_host(port, name, context)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def big_frame(port: int, context: ssl.SSLContext | None) -> float:
    body = b"\x81\xa4type" + b"\x91" * (BIG - 6)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    started = time.perf_counter()
    writer.write(control.FRAME.pack(len(body)) + body)
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def measure(args: argparse.Namespace, store: CredentialStore, tls: bool) -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(store.directory), "--tls" if tls else "--plain"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        contexts: dict[str, ssl.SSLContext | None] = {}

        def context(name: str) -> ssl.SSLContext | None:
            if not tls:
                return None
            if name not in contexts:
                contexts[name] = client_context(store.node(name, "host"))
            return contexts[name]

        for i in range(max(args.setups, args.hosts)):  # certificates and contexts made ahead
            context(f"h{i}")
        setups = [await register(port, f"h{i}", context(f"h{i}")) for i in range(args.setups)]
        names = [f"h{i}" for i in range(args.hosts)]
        started, cpu = time.perf_counter(), cpu_seconds(child.pid)
        for k in range(0, len(names), args.concurrency):
            batch = names[k : k + args.concurrency]
            await asyncio.gather(*(register(port, n, context(n)) for n in batch))
        per_second = len(names) / (time.perf_counter() - started)
        cpu_per_registration = (cpu_seconds(child.pid) - cpu) / len(names)
        before = rss(child.pid)
        frames = [await big_frame(port, context(f"h{i}")) for i in range(args.frames)]
        growth = rss(child.pid) - before
        return {
            "setup_ms": {
                "p50": round(statistics.median(setups) * 1000, 2),
                "p99": round(sorted(setups)[int(len(setups) * 0.99) - 1] * 1000, 2),
            },
            "registrations_per_s": round(per_second, 1),
            "controller_cpu_ms_per_registration": round(cpu_per_registration * 1000, 3),
            "big_frame": {
                "refused_ms_median": round(statistics.median(frames) * 1000, 2),
                "refused_ms_max": round(max(frames) * 1000, 2),
                "controller_rss_growth_mb": round(growth / 1e6, 2),
            },
        }
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-control-tls-") as tmp:
        store = CredentialStore(tmp)
        results: dict[str, list[dict[str, Any]]] = {"tls": [], "plain": []}
        for _ in range(args.runs):  # alternate, so machine noise hits both
            results["plain"].append(await measure(args, store, tls=False))
            results["tls"].append(await measure(args, store, tls=True))
    best = {mode: max(runs, key=lambda r: r["registrations_per_s"]) for mode, runs in results.items()}
    emit(
        {
            "benchmark": "control_tls",
            "environment": environment(),
            "parameters": vars(args),
            "tls": best["tls"],
            "plain": best["plain"],
            "tls_over_plain": {
                "setup_p50": round(best["tls"]["setup_ms"]["p50"] / best["plain"]["setup_ms"]["p50"], 2),
                "registrations_per_s": round(
                    best["tls"]["registrations_per_s"] / best["plain"]["registrations_per_s"], 2
                ),
                "controller_cpu_per_registration": round(
                    best["tls"]["controller_cpu_ms_per_registration"]
                    / max(best["plain"]["controller_cpu_ms_per_registration"], 1e-6),
                    2,
                ),
            },
            "goal": {"big_frame_refused_ms": 100, "big_frame_rss_mb": 10},
            "runs": results,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--setups", type=int, default=200)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child:
        run(controller_child(parsed.child, parsed.tls))
    else:
        run(main(parsed))
