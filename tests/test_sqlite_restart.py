"""A controller daemon keeping 100,000 registrations in SQLite is SIGKILLed and restarted from
its store: Host IDs and registrations are intact, and a new host gets a Host ID never handed
out before (docs/protocol.md §6.4). So are the operator's allow and disallow rules (§6.7)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_processes import free_port
from scaffold.core.controller.commands import Allow, Disallow, Status
from scaffold.ids import ObjectId
from scaffold.runtime import admin
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.sqlite_store import SqliteStore
from scaffold.wire import control
from test_daemons import TOPOLOGY

OBJECTS = 100_000
pytestmark = pytest.mark.slow
#: the controller process: a ControllerRuntime over a SqliteStore (plain TCP: what is tested is
#: the store, not identity; any host may bind unless argv[4] is "policy")
CONTROLLER = """
import asyncio, sys
from scaffold.core.controller import Controller
from scaffold.deploy.topology_file import load_topology
from scaffold.runtime.aio import ControllerRuntime, run
from scaffold.runtime.sqlite_store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[2])
    topology = load_topology(sys.argv[1]).topology
    core = Controller(topology, saved=store.load(), open_binding=sys.argv[4:] != ["policy"])
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


class Daemon:
    """The controller process over its SQLite file, started (again) on demand."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        topo = tmp_path / "pair.toml"
        topo.write_text(TOPOLOGY)
        self.tmp_path = tmp_path
        self.store = tmp_path / "controller.sqlite3"
        self.address = ("127.0.0.1", free_port())
        self.argv = [sys.executable, "-c", CONTROLLER, str(topo), str(self.store), str(self.address[1])]
        self.argv += extra

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.tmp_path / "controller.log", "ab") as log:
            proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.tmp_path
            )
        run(wait_until(self.reachable, 20, "the controller to listen", interval=0.05))
        return proc

    async def reachable(self) -> bool:
        try:
            await admin.call(self.address, Status(), timeout=1.0, credentials=None)
        except Exception:
            return False
        return True


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_killed_controller_restarts_from_sqlite_with_its_registrations(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    address, store, start = daemon.address, daemon.store, daemon.start
    keys = [ObjectId.from_name(f"file-{i}").raw.hex() for i in range(OBJECTS)]
    proc = start()
    try:
        ids = run(_register_all(address, keys))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        saved = SqliteStore(store).load()  # what the killed process had committed
        assert saved is not None and len(saved.objects) == OBJECTS
        assert {h.name: h.host_id for h in saved.hosts if h.name in ids} == ids
        proc = start()
        status = run(admin.call(address, Status(), credentials=None))
        assert status["object_count"] == OBJECTS
        assert {h["name"]: h["host_id"] for h in status["hosts"] if h["name"] in ids} == ids
        newcomer = run(register(address, "newcomer", "dc1-fs1", []))
        assert newcomer > max(ids.values())
    finally:
        kill(proc)


def test_the_operators_allow_and_disallow_survive_a_killed_controller(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "policy")
    extra, echo = ObjectId.from_name("extra").raw.hex(), ObjectId.from_name("echo").raw.hex()
    proc = daemon.start()
    try:
        # The topology lets dc2-h1 serve echo, nobody serve extra: the operator turns both round.
        run(admin.call(daemon.address, Allow("extra", "dc1-h1"), credentials=None))
        run(admin.call(daemon.address, Disallow("echo", "dc2-h1"), credentials=None))
        kill(proc)
        proc = daemon.start()  # from its SQLite file
        run(register(daemon.address, "dc1-h1", "dc1-fs1", [extra]))
        run(register(daemon.address, "dc2-h1", "dc2-fs1", [echo]))

        async def decided() -> bool:
            status = await admin.call(daemon.address, Status(), credentials=None)
            return bool(status["drops"].get("bind-not-allowed")) and bool(status["objects"])

        run(wait_until(decided, 20, "both Binds to be decided", interval=0.05))
        status = run(admin.call(daemon.address, Status(), credentials=None))
        assert {o["object"]: [r["host"] for r in o["replicas"]] for o in status["objects"]} == {
            "obj:" + extra: ["dc1-h1"]
        }
        assert status["drops"]["bind-not-allowed"] == 1
    finally:
        kill(proc)


async def _register_all(address: tuple[str, int], keys: list[str]) -> dict[str, int]:
    ids = {"bulk": await register(address, "bulk", "dc1-fs1", keys)}

    async def all_bound() -> bool:
        status = await admin.call(address, Status(), credentials=None)
        return bool(status["object_count"] == len(keys))

    await wait_until(all_bound, 60, "every Bind to be taken", interval=0.1)
    # Welcomed after every Bind was taken: its commit comes after theirs (commit, then send).
    ids["marker"] = await register(address, "marker", "dc2-fs1", [])
    return ids
