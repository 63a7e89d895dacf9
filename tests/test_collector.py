"""The calmed garbage collector (``runtime/aio/collector.py``): held streams sit where no
collection walks them, and closed ones leave nothing behind there -- a stream's objects form no
reference cycle, which frozen, would never be reclaimed.

It runs in a child process: freezing is for a whole process, and this one is pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

STREAMS = 200

CHILD = r"""
import asyncio, gc, json, sys
import scaffold
from scaffold.runtime.aio import calm_collector, wait_until

N = int(sys.argv[1])

async def echo_and_hold(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    await reader.read(100)
    writer.close()

def idle(*hosts):
    return lambda: not any(h.stack.flows for h in hosts)

async def main():
    async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=1) as net:
        server, client = net.hosts[0], net.hosts[-1]
        await server.start_server(echo_and_hold, "echo")
        # One stream first: what a stream creates once per process is not a stream's.
        reader, writer = await client.open_connection("echo")
        writer.write(b"x")
        await reader.readexactly(1)
        writer.close()
        await wait_until(idle(server, client), 10, "the first stream to end")
        del reader, writer
        interval = 0.1
        calm_collector(interval)
        base = gc.get_freeze_count()
        held = []
        for _ in range(N):
            reader, writer = await client.open_connection("echo")
            writer.write(b"hello")
            await reader.readexactly(5)
            held.append(writer)
        await asyncio.sleep(3 * interval)  # ticks of the freezer (not waiting for state)
        frozen = gc.get_freeze_count() - base
        walked = sum(len(gc.get_objects(g)) for g in range(3))
        for writer in held:
            writer.close()
        del held, reader, writer
        await wait_until(idle(server, client), 30, "the streams to end")
        await asyncio.sleep(3 * interval)
        left = gc.get_freeze_count() - base
        print(json.dumps({"frozen": frozen, "walked": walked, "left": left}))

asyncio.run(main())
"""


def test_held_streams_are_frozen_and_closed_ones_leave_nothing_frozen() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(STREAMS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Every held stream's objects (both ends: transport, flow, reader, writer...) are frozen,
    # and the generations a collection walks hold a small part of that.
    assert result["frozen"] >= 20 * STREAMS, result
    assert result["walked"] < result["frozen"] / 4, result
    # Closed streams were freed by reference counting: no cycle of theirs stayed frozen
    # (each one left 48 objects behind while the writer and its protocol held each other).
    assert result["left"] < STREAMS, result
