"""A controller daemon keeping 100,000 registrations in SQLite is SIGKILLed and restarted from
its store: Host IDs and registrations are intact, and a new host gets a Host ID never handed
out before (docs/protocol.md §6.4)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.core.controller.commands import Status
from scaffold.ids import ObjectId
from scaffold.runtime import admin
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.sqlite_store import SqliteStore
from scaffold.wire import control
from test_daemons import TOPOLOGY, free_port

OBJECTS = 100_000
pytestmark = pytest.mark.slow
#: the controller process: a ControllerRuntime over a SqliteStore (plain TCP, any host may
#: bind: what is tested is the store, not identity)
CONTROLLER = """
import asyncio, sys
from scaffold.core.controller import Controller
from scaffold.deploy.topology_file import load_topology
from scaffold.runtime.aio import ControllerRuntime, run
from scaffold.runtime.sqlite_store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[2])
    core = Controller(load_topology(sys.argv[1]).topology, saved=store.load(), open_binding=True)
    runtime = ControllerRuntime(core, ("127.0.0.1", int(sys.argv[3])), store)
    await runtime.start()
    await asyncio.Event().wait()

run(main())
"""


async def register(address: tuple[str, int], name: str, gateway: str, binds: list[str]) -> int:
    """Register host ``name`` and its ``binds`` over a control connection; its Host ID. The
    Welcome of a later host proves the rows before it committed (commit, then send)."""
    reader, writer = await asyncio.open_connection(*address)
    frames = [control.frame(control.Hello(node=name, role="host", gateway=gateway))]
    frames += [control.frame(control.Bind(obj=key)) for key in binds]
    frames.append(control.frame(control.Heartbeat(node=name, seq=1)))
    writer.write(b"".join(frames))
    decoder = control.FrameDecoder()
    async with asyncio.timeout(60):
        while chunk := await reader.read(65536):
            for message in decoder.feed(chunk):
                if isinstance(message, control.Welcome):
                    writer.close()
                    return message.host_id
    raise AssertionError("no Welcome")


def test_a_killed_controller_restarts_from_sqlite_with_its_registrations(tmp_path: Path) -> None:
    topo = tmp_path / "pair.toml"
    topo.write_text(TOPOLOGY)
    store = tmp_path / "controller.sqlite3"
    address = ("127.0.0.1", free_port())
    argv = [sys.executable, "-c", CONTROLLER, str(topo), str(store), str(address[1])]
    keys = [ObjectId.from_name(f"file-{i}").raw.hex() for i in range(OBJECTS)]

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "controller.log", "ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=tmp_path)

    async def reachable() -> bool:
        try:
            await admin.call(address, Status(), timeout=1.0, credentials=None)
        except Exception:
            return False
        return True

    proc = start()
    try:
        run(wait_until(reachable, 20, "the controller to listen", interval=0.05))
        ids = run(_register_all(address, keys))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        saved = SqliteStore(store).load()  # what the killed process had committed
        assert saved is not None and len(saved.objects) == OBJECTS
        assert {h.name: h.host_id for h in saved.hosts if h.name in ids} == ids
        proc = start()
        run(wait_until(reachable, 20, "the restarted controller to listen", interval=0.05))
        status = run(admin.call(address, Status(), credentials=None))
        assert status["object_count"] == OBJECTS
        assert {h["name"]: h["host_id"] for h in status["hosts"] if h["name"] in ids} == ids
        newcomer = run(register(address, "newcomer", "dc1-fs1", []))
        assert newcomer > max(ids.values())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


async def _register_all(address: tuple[str, int], keys: list[str]) -> dict[str, int]:
    ids = {"bulk": await register(address, "bulk", "dc1-fs1", keys)}

    async def all_bound() -> bool:
        status = await admin.call(address, Status(), credentials=None)
        return bool(status["object_count"] == len(keys))

    await wait_until(all_bound, 60, "every Bind to be taken", interval=0.1)
    # Welcomed after every Bind was taken: its commit comes after theirs (commit, then send).
    ids["marker"] = await register(address, "marker", "dc2-fs1", [])
    return ids
