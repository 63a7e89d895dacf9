"""What the nodes' control keepalives cost the controller (docs/protocol.md §6.6).

Every node that sends no ``NodeStats`` says something every ``KEEPALIVE`` (10 s) so that the
controller's idle timeout (30 s) does not cut its connection: at 100,000 hosts, 10,000
keepalives a second. Two ways to say it are measured against the same controller in the
same run, alternating, so machine noise hits both:

* ``record``: a ``Heartbeat`` record (what nodes sent before), decoded and handed to the
  ``Controller`` core, the runtime flushing after it;
* ``frame``: an empty frame (``control.KEEPALIVE_FRAME``, what nodes send now): it resets the
  idle timeout and nothing else;
* ``idle``: nothing sent for as long (the controller's own timer and housekeeping).

The controller runs in a child process (a real ``ControllerRuntime``, mutual TLS as deployed
unless ``--plain``), ``--hosts`` hosts registered on their own connections; each phase sends
``--rate`` keepalives a second spread over the connections for ``--seconds``. Figures: the
controller's CPU (from ``/proc``: what a busy machine does not distort) per keepalive and as a
share of one core at that rate, and ``calls_per_keepalive``: Python calls made in scaffold's
own code (runtime, wire, core) per keepalive, counted in-process on plain TCP (deterministic).

    PYTHONPATH=src python bench/keepalive.py [--hosts 200] [--rate 10000] [--seconds 3]

Prints one JSON document; ``frame_over_record`` gives the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, emit, environment
from control_tls import registered_host
from scaffold.core.controller import Controller
from scaffold.core.topology import make_topology
from scaffold.runtime.aio import ControllerRuntime, run, wait_until
from scaffold.runtime.tls import CredentialStore, client_context
from scaffold.wire import control

SCAFFOLD = str(Path(control.__file__).resolve().parents[1])
#: the empty keepalive frame; None in a tree from before it (only ``record`` is measured)
KEEPALIVE_FRAME: bytes | None = getattr(control, "KEEPALIVE_FRAME", None)


def new_controller(store_dir: str | None) -> ControllerRuntime:
    core = Controller(make_topology(1, 1), heartbeat_interval=3600.0, open_binding=True)
    credentials = CredentialStore(store_dir).node("controller", "controller") if store_dir else None
    return ControllerRuntime(core, ("127.0.0.1", 0), credentials=credentials)


async def controller_child(store_dir: str | None) -> None:
    runtime = new_controller(store_dir)
    await runtime.start()
    print(runtime.address[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await runtime.close()


async def send_phase(
    writers: list[asyncio.StreamWriter], payloads: list[bytes], rate: int, seconds: float
) -> int:
    """Keepalives at ``rate`` a second, round robin over ``writers``; how many were sent."""
    sent = 0
    per_tick = max(1, rate // 100)  # 100 ticks a second: each connection's keepalives apart
    started = time.perf_counter()
    tick = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(per_tick):
            k = sent % len(writers)
            if payloads:
                writers[k].write(payloads[k])
            sent += 1
        tick += 1
        await asyncio.sleep(max(0.0, tick / 100 - elapsed))
    return sent


async def measure(args: argparse.Namespace, store: CredentialStore | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child"] + ([str(store.directory)] if store else [])
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        names = [f"h{i}" for i in range(args.hosts)]
        contexts = [client_context(store.node(n, "host")) if store else None for n in names]
        writers = [await registered_host(port, n, c) for n, c in zip(names, contexts, strict=True)]
        phases = {"record": [control.frame(control.Heartbeat(n, 0)) for n in names]}
        if KEEPALIVE_FRAME is not None:
            phases["frame"] = [KEEPALIVE_FRAME] * len(names)
        phases["idle"] = []
        out: dict[str, Any] = {}
        for phase, payloads in phases.items():
            cpu, wall = cpu_seconds(child.pid), time.perf_counter()
            sent = await send_phase(writers, payloads, args.rate, args.seconds)
            await asyncio.sleep(0.2)  # what was sent is read
            used, took = cpu_seconds(child.pid) - cpu, time.perf_counter() - wall
            out[phase] = {"cpu_s": round(used, 3), "core_share": round(used / took, 3), "sent": sent}
        idle_cpu = out["idle"]["cpu_s"]
        for phase in phases.keys() - {"idle"}:
            per = (out[phase]["cpu_s"] - idle_cpu) / out[phase]["sent"]
            out[phase]["cpu_us_per_keepalive"] = round(per * 1e6, 2)
        for writer in writers:
            writer.close()
        return out
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


async def count_calls(count: int) -> dict[str, dict[str, float]]:
    """Calls (Python functions and builtins) per keepalive in this process, where the
    controller runs on plain TCP: ``scaffold``, those made in or into scaffold's own code
    (the controller's runtime, the decoder, the core); ``all``, asyncio's streams and event
    loop too, and the sender's few (the same in every phase)."""
    runtime = new_controller(None)
    await runtime.start()
    writer = await registered_host(runtime.address[1], "h0", None)
    out: dict[str, dict[str, float]] = {}
    payloads = {"record": control.frame(control.Heartbeat("h0", 0))}
    if KEEPALIVE_FRAME is not None:
        payloads["frame"] = KEEPALIVE_FRAME
    for phase, payload in payloads.items():
        calls = ours = 0

        def profile(frame: Any, event: str, arg: object) -> None:
            nonlocal calls, ours
            if event in ("call", "c_call"):
                calls += 1
                ours += frame.f_code.co_filename.startswith(SCAFFOLD)

        sys.setprofile(profile)
        try:
            for _ in range(count):
                writer.write(payload)
                await writer.drain()
                await asyncio.sleep(0)  # one read each, as keepalives seconds apart are
                await asyncio.sleep(0)
        finally:
            sys.setprofile(None)
        out[phase] = {"scaffold": round(ours / count, 1), "all": round(calls / count, 1)}
    writer.close()
    await wait_until(lambda: "h0" not in runtime._writers, 5.0, "the connection closed")
    await runtime.close()
    return out


async def main(args: argparse.Namespace) -> None:
    calls = await count_calls(1000)
    with tempfile.TemporaryDirectory(prefix="bench-keepalive-") as tmp:
        store = None if args.plain else CredentialStore(tmp)
        runs = [await measure(args, store) for _ in range(args.runs)]
    best = min(runs, key=lambda r: sum(p.get("cpu_us_per_keepalive", 0.0) for p in r.values()))
    emit(
        {
            "benchmark": "keepalive",
            "environment": environment(),
            "load_average": os.getloadavg(),
            "parameters": vars(args),
            "calls_per_keepalive": calls,
            "best": best,
            "frame_over_record": {
                "calls_scaffold": round(calls["frame"]["scaffold"] / calls["record"]["scaffold"], 3),
                "cpu_per_keepalive": [
                    round(r["frame"]["cpu_us_per_keepalive"] / r["record"]["cpu_us_per_keepalive"], 3)
                    for r in runs
                ],
            }
            if KEEPALIVE_FRAME is not None
            else None,
            "runs": runs,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rate", type=int, default=10_000, help="keepalives per second")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="plain TCP, no TLS")
    parser.add_argument("--child", nargs="?", const="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child is not None:
        run(controller_child(parsed.child or None))
    else:
        run(main(parsed))
