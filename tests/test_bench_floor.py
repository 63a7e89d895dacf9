"""``bench/floor.py``, the floor peer of ``bench/ingress.py``: it must carry what it is given
both ways, and the ends of connections, or the requests/s and CPU per request it reports
mean nothing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scaffold.runtime.aio import run, wait_until

BENCH = Path(__file__).resolve().parent.parent / "bench"
FLOOR = str(BENCH / "floor.py")
sys.path.insert(0, str(BENCH))  # bench/ is no package
bench_ingress = importlib.import_module("ingress")
LOCAL = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def floor(shape: str, replicas: list[int]) -> AsyncIterator[int]:
    """The floor in one process (``1p``) or as three (``3p``); yields its client port."""
    port = free_port()
    targets = ["--replicas", ",".join(map(str, replicas))]
    if shape == "1p":
        argvs = [["--listen", str(port), *targets]]
    else:
        udp = {role: free_port(socket.SOCK_DGRAM) for role in ("switch", "ingress", "publisher")}
        hops = [arg for role, p in udp.items() for arg in (f"--{role}", str(p))]
        argvs = [
            ["--role", "switch", *hops],
            ["--role", "publisher", *targets, *hops],
            ["--role", "ingress", "--listen", str(port), *hops],
        ]
    procs = [subprocess.Popen([sys.executable, FLOOR, *argv]) for argv in argvs]

    try:
        # bench/ingress.py's own wait for the floor (a loopback connect: refused or taken at once)
        await wait_until(lambda: bench_ingress.answers(port), 10, "the floor's ingress to listen")
        yield port
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(10)


@pytest.mark.parametrize("shape", ["1p", "3p"])
def test_the_floor_carries_bytes_both_ways_and_the_ends_of_connections(shape: str) -> None:
    async def main() -> None:
        ended = 0

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal ended
            while (data := await reader.read(65536)) and data != b"bye":
                writer.write(data.upper())
            writer.close()
            ended += 1

        echoes = [await asyncio.start_server(echo, LOCAL, 0) for _ in range(2)]
        replicas = [server.sockets[0].getsockname()[1] for server in echoes]
        big = bytes(range(97, 123)) * 10_000  # 260 kB: several datagrams each way
        async with floor(shape, replicas) as port:
            for _ in range(3):  # round-robin over both replicas
                reader, writer = await asyncio.open_connection(LOCAL, port)
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.readexactly(5), 10) == b"HELLO"
                writer.write(big)
                assert await asyncio.wait_for(reader.readexactly(len(big)), 10) == big.upper()
                writer.close()
            # A client that leaves closes its replica's connection...
            await wait_until(lambda: ended == 3, 5, "the replicas' connections closed")
            # ... and a replica that hangs up ends its client's.
            reader, writer = await asyncio.open_connection(LOCAL, port)
            writer.write(b"bye")
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        for server in echoes:
            server.close()

    run(main())


def test_the_ingress_runs_picture_draws_each_setup_and_refuses_other_json(tmp_path: Path) -> None:
    """``bench/plot_ingress.py``: a bar per measured setup, split by part where the run has
    parts; a JSON that is not ``bench/ingress.py``'s is refused with a clear message."""
    plot_ingress = importlib.import_module("plot_ingress")

    others = {"replicas": 15.0, "wrk": 10.0}
    run = {
        "throughput": {
            "direct": {"requests_per_s": 70000.0, "cpu_us_per_request": {"balancer": 0.0, **others}},
            "haproxy-tuned": {"requests_per_s": 40000.0, "cpu_us_per_request": {"balancer": 15.0, **others}},
            "floor-3p": {
                "requests_per_s": 21000.0,
                "cpu_us_per_request": {
                    "balancer": 52.0,
                    "ingress": 18.0,
                    "switch": 15.0,
                    "publisher": 19.0,
                    **others,
                },
            },
        },
        "cpu_budget": {"floor-3p/haproxy-tuned-2t": {"budget_us_per_request": 61.6}},
    }
    rows = plot_ingress.bars(run)
    assert [name for name, *_ in rows] == ["haproxy-tuned", "floor-3p"]  # direct has no balancer
    assert rows[1][1] == [("ingress", 18.0), ("switch", 15.0), ("publisher", 19.0)]
    assert rows[1][4] == [61.6] and rows[0][4] == []
    source = tmp_path / "run.json"
    source.write_text(json.dumps(run))
    picture = tmp_path / "run.png"
    command = [sys.executable, str(BENCH / "plot_ingress.py"), str(source), str(picture)]
    subprocess.run(command, check=True)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    source.write_text("{}")
    refused = subprocess.run(command, check=False, capture_output=True, text=True)
    assert refused.returncode != 0 and "no 'throughput'" in refused.stderr
