"""Python calls per ingress setup and per keep-alive request, counted with cProfile, by function.

The one-process shape of ``bench/ingress.py``'s ``--scaffold`` child: an embedded ``Testbed``
(one datacenter, three hosts), a ``Publisher`` per replica on two hosts and one ``Ingress``
(``--mode raw`` or ``http``) on the third, all on this process's event loop; the two replicas
are ``bench/ingress.py --replica`` processes, and the client runs in a thread of its own (cProfile
profiles only the loop's thread). Three windows are profiled in turn:

* ``idle``: nothing but the background (heartbeats, health checks), ``--idle`` seconds;
* ``setups``: ``--setups`` sequential fresh connections, 5 ms apart, each one tiny GET with
  ``Connection: close`` read to the end (accept to close, every node);
* ``requests``: ``--requests`` GETs on one keep-alive connection, one at a time.

Each window's calls minus the idle rate times its length, divided by its count, is the cost
of one setup or one request; ``top`` lists the functions that account for most of it (primitive
calls of each function, builtins included) and ``by_file`` the same summed per source file
(a builtin counted in the file of its caller).
Counts are deterministic to a few calls, unlike wall time on a shared machine.

``--alternate N`` times instead (no profiler): N fresh connections each to the replica, the raw
ingress and the HTTP ingress of one such process, in turn, from a client process -- the HTTP
ingress's setup next to the raw one's under the same noise.

Prints ONE JSON document. Run: ``PYTHONPATH=src .venv/bin/python bench/ingress_calls.py --mode http``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import emit, environment

LOCAL = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
SETUP_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
KEEP_ALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
        return port


def wait_answering(port: int, deadline: float) -> None:
    while True:
        try:
            socket.create_connection((LOCAL, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_setups(port: int, count: int) -> None:
    for _ in range(count):
        time.sleep(0.005)
        with socket.create_connection((LOCAL, port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(SETUP_REQUEST)
            answer = b""
            while data := s.recv(65536):
                answer += data
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"setup answered {answer[:40]!r}")


def run_requests(port: int, count: int) -> None:
    with socket.create_connection((LOCAL, port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = s.makefile("rb")
        for _ in range(count):
            s.sendall(KEEP_ALIVE_REQUEST)
            status = reader.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"request answered {status!r}")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)


def short(path: str, line: int, name: str) -> str:
    where = path
    for prefix in ("/src/", "/python3.11/", "site-packages/"):
        where = where.rsplit(prefix, maxsplit=1)[-1]
    return f"{where}:{line} {name}" if path != "~" else name


def calls_by_function(profile: cProfile.Profile) -> tuple[Counter[str], Counter[str]]:
    """Primitive calls per function, and per source file with each builtin's calls counted
    in the file of the function that made them."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    functions: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for (path, line, name), (primitive, _calls, _tt, _ct, callers) in stats.items():
        functions[short(path, line, name)] += primitive
        if path != "~":
            files[short(path, 0, "").split(":")[0]] += primitive
        else:
            for (caller_path, _, _), (caller_calls, *_) in callers.items():
                files[short(caller_path, 0, "").split(":")[0]] += caller_calls
    return functions, files


async def profiled(window: Any, *args: Any) -> tuple[tuple[Counter[str], Counter[str]], float]:
    loop = asyncio.get_running_loop()
    profile = cProfile.Profile()
    started = time.monotonic()
    profile.enable()
    try:
        if window is None:
            await asyncio.sleep(args[0])
        else:
            await loop.run_in_executor(None, window, *args)
    finally:
        profile.disable()
    return calls_by_function(profile), time.monotonic() - started


Counts = tuple[Counter[str], Counter[str]]


def net_per_unit(window: Counts, elapsed: float, idle: Counts, idle_for: float, count: int) -> Counts:
    """Calls of ``window`` minus the idle rate over its ``elapsed`` seconds, per unit."""
    scale = elapsed / idle_for
    return tuple(  # type: ignore[return-value]
        Counter({key: (calls - background.get(key, 0) * scale) / count for key, calls in counts.items()})
        for counts, background in zip(window, idle, strict=True)
    )


async def measure(args: argparse.Namespace, replicas: list[int]) -> dict[str, Any]:
    import scaffold
    from scaffold.gateway import Ingress, Publisher

    async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=3) as net:
        publishers = [
            Publisher(net.hosts[i], "web", (LOCAL, port), check_interval=0.5, fall=2, rise=2)
            for i, port in enumerate(replicas)
        ]
        for publisher in publishers:
            await publisher.start()
        async with Ingress(net.hosts[2], "web", (LOCAL, 0), http=args.mode == "http") as ingress:
            port = ingress.address[1]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, run_setups, port, 20)  # warm up
            idle, idle_for = await profiled(None, args.idle)
            setups, setups_for = await profiled(run_setups, port, args.setups)
            requests, requests_for = await profiled(run_requests, port, args.requests)
            per_setup = net_per_unit(setups, setups_for, idle, idle_for, args.setups)
            per_request = net_per_unit(requests, requests_for, idle, idle_for, args.requests)
            errors = dict(ingress.stats.errors)
        for publisher in publishers:
            await publisher.close()

    def summary(per: tuple[Counter[str], Counter[str]]) -> dict[str, Any]:
        functions, files = per
        return {
            "calls": round(sum(functions.values()), 1),
            "by_file": {k: round(v, 1) for k, v in files.most_common(args.top)},
            "top": {k: round(v, 2) for k, v in functions.most_common(args.top)},
        }

    return {
        "mode": args.mode,
        "idle_calls_per_s": round(sum(idle[0].values()) / idle_for),
        "setups": args.setups,
        "requests": args.requests,
        "ingress_errors": errors,
        "per_setup": summary(per_setup),
        "per_request": summary(per_request),
    }


def timed_setups(ports: dict[str, int], count: int) -> dict[str, Any]:
    """``count`` fresh connections to each port in turn, 5 ms apart: connect() to the first
    response byte, as ``bench/ingress.py`` times a setup (run in the ``--client`` process)."""
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for i in range(count * len(ports)):
        name = list(ports)[i % len(ports)]
        time.sleep(0.005)
        started = time.perf_counter()
        with socket.create_connection((LOCAL, ports[name]), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(SETUP_REQUEST)
            if not s.recv(1):
                raise RuntimeError(f"{name}: closed before an answer")
            samples[name].append((time.perf_counter() - started) * 1000)
            while s.recv(65536):
                pass
    result = {}
    for name, times in samples.items():
        times.sort()
        result[name] = {
            "p50_ms": round(times[len(times) // 2], 3),
            "p90_ms": round(times[len(times) * 9 // 10], 3),
        }
    return result


async def alternate(args: argparse.Namespace, replicas: list[int]) -> dict[str, Any]:
    """Both ingresses in this process, the client in another, setups alternating between the
    raw ingress, the HTTP ingress and the replica itself: the HTTP ingress's own setup cost
    next to the raw one's under the same noise."""
    import scaffold
    from scaffold.gateway import Ingress, Publisher

    async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=3) as net:
        publishers = [
            Publisher(net.hosts[i], "web", (LOCAL, port), check_interval=0.5, fall=2, rise=2)
            for i, port in enumerate(replicas)
        ]
        for publisher in publishers:
            await publisher.start()
        async with (
            Ingress(net.hosts[2], "web", (LOCAL, 0)) as raw,
            Ingress(net.hosts[2], "web", (LOCAL, 0), http=True) as web,
        ):
            ports = {"direct": replicas[0], "raw": raw.address[1], "http": web.address[1]}
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                json.dumps(ports),
                "--alternate",
                str(args.alternate),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await client.communicate()
        for publisher in publishers:
            await publisher.close()
    result: dict[str, Any] = json.loads(out)
    for name in ("raw", "http"):
        result[name]["overhead_p50_ms"] = round(result[name]["p50_ms"] - result["direct"]["p50_ms"], 3)
    return {"alternating_setups": args.alternate, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("raw", "http"), default="http")
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        help="time N setups each: direct, raw, HTTP",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--setups", type=int, default=500, help="fresh connections (default 500)")
    parser.add_argument("--requests", type=int, default=2000, help="keep-alive requests (default 2000)")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of the idle window (default 3)")
    parser.add_argument("--top", type=int, default=25, help="functions and files listed (default 25)")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(timed_setups(json.loads(args.client), args.alternate)))
        return
    replicas = [free_port(), free_port()]
    replica = [sys.executable, str(BENCH / "ingress.py"), "--replica"]
    procs = [subprocess.Popen([*replica, str(port)]) for port in replicas]
    try:
        deadline = time.monotonic() + 30
        for port in replicas:
            wait_answering(port, deadline)
        from scaffold.runtime.aio import run

        result = run(alternate(args, replicas) if args.alternate else measure(args, replicas))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(10)
    emit({"environment": environment(), **result})


if __name__ == "__main__":
    main()
