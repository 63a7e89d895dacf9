"""Replicated controllers on a real three-member etcd cluster, every part its own process over
loopback: the leading replica SIGKILLed while a stream runs -- a standby leads (within 2 s on
an idle machine; not asserted), no byte is lost or duplicated, no Host ID is reused, every
registration is still there, and so is the operator's policy; then one etcd member killed --
nothing a user can see changes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scaffold
from cli_processes import free_port
from scaffold.core.controller.commands import Allow, Status
from scaffold.deploy import etcd
from scaffold.runtime import admin
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.tls import CredentialStore
from test_daemons import TOPOLOGY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(etcd.available() is not None, reason=str(etcd.available())),
]


class Cluster:
    """etcd members, controller replicas, switches and a serving host, as processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        ports = [(free_port(), free_port()) for _ in range(3)]
        token = f"t{os.getpid()}"
        self.members = etcd.plan_cluster(["127.0.0.1"] * 3, ports, tmp, token)
        self.endpoints = ",".join(m.endpoint for m in self.members)
        for m in self.members:
            self.start(m.name, etcd.member_command(m, self.members, token))
        self.controllers = [("127.0.0.1", free_port()) for _ in range(3)]
        self.controller_arg = ",".join(f"{h}:{p}" for h, p in self.controllers)
        #: the network's CA and every process's credentials
        self.credentials = CredentialStore(tmp / "credentials")
        self.operator = self.credentials.operator()

    def creds(self, name: str, role: str) -> str:
        return str(self.credentials.node(name, role).directory)

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.tmp / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.tmp
            )

    def scaffold(self, name: str, *argv: str) -> None:
        self.start(name, [sys.executable, "-m", "scaffold", *argv])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def test_the_leader_killed_under_a_running_stream_and_an_etcd_member_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    topo = tmp_path / "pair.toml"
    topo.write_text(TOPOLOGY)
    for k, (host, port) in enumerate(cluster.controllers, start=1):
        cluster.scaffold(
            f"ctl{k}", "controller", "--name", f"ctl{k}", "--topology", str(topo),
            "--listen", f"{host}:{port}", "--etcd", cluster.endpoints,
            "--credentials", cluster.creds(f"ctl{k}", "controller"),
        )  # fmt: skip
    ctl = cluster.controller_arg
    for dc in ("dc1", "dc2"):
        other = "dc2" if dc == "dc1" else "dc1"
        cluster.scaffold(
            f"{dc}-fs1", "switch", "--role", "flow", "--name", f"{dc}-fs1", "--dc", dc,
            "--controller", ctl, "--listen", "127.0.0.1:0", "--link", f"{other}-fs1=2",
            "--credentials", cluster.creds(f"{dc}-fs1", "flow-switch"),
        )  # fmt: skip
        cluster.scaffold(
            f"{dc}-os", "switch", "--role", "object", "--name", f"{dc}-os", "--dc", dc,
            "--controller", ctl, "--listen", "127.0.0.1:0",
            "--credentials", cluster.creds(f"{dc}-os", "object-switch"),
        )  # fmt: skip
    cluster.scaffold(
        "dc2-h1", "host", "--name", "dc2-h1", "--gateway", "dc2-fs1", "--controller", ctl,
        "--listen", "127.0.0.1:0", "--serve", "echo:resume",
        "--credentials", cluster.creds("dc2-h1", "host"),
    )  # fmt: skip

    async def status() -> dict[str, Any]:
        result: dict[str, Any] = await admin.call(
            cluster.controllers, Status(), timeout=2.0, credentials=cluster.operator
        )
        return result

    async def up() -> bool:
        try:
            s = await status()
        except scaffold.ScaffoldError:
            return False
        objects = s["objects"]
        switches = s["switches"]
        assert isinstance(objects, list) and isinstance(switches, list)
        return any(o["name"] == "echo" for o in objects) and all(sw["connected"] for sw in switches)

    def leader(s: dict[str, Any]) -> str:
        replicas = s["controllers"]
        assert isinstance(replicas, list)
        name: str = next(r["name"] for r in replicas if r["leader"])
        return name

    async def scenario() -> None:
        await wait_until(up, 40, "the replicated network to come up", interval=0.1)
        # The topology lets nobody serve `extra`: the operator lets dc1-h1, on the first leader.
        await admin.call(cluster.controllers, Allow("extra", "dc1-h1"), credentials=cluster.operator)
        before = await status()
        first = leader(before)
        async with await scaffold.join(
            "dc1-h1",
            gateway="dc1-fs1",
            credentials=cluster.creds("dc1-h1", "host"),
            controller=cluster.controllers,
            operator=cluster.operator,
        ) as host:
            reader, writer = await host.open_connection("echo")
            sent, received = hashlib.sha256(), hashlib.sha256()
            counts = [0, 0]
            stop = asyncio.Event()

            async def pump() -> None:
                while not stop.is_set():
                    chunk = os.urandom(2048)
                    writer.write(chunk)
                    sent.update(chunk)
                    counts[0] += len(chunk)
                    await writer.drain()
                    data = await asyncio.wait_for(reader.readexactly(len(chunk)), 10)
                    received.update(data)
                    counts[1] += len(data)
                    await asyncio.sleep(0.01)

            pumping = asyncio.create_task(pump())
            await asyncio.sleep(0.5)
            cluster.kill(first)
            alive = [a for k, a in enumerate(cluster.controllers, start=1) if f"ctl{k}" != first]

            async def new_leader() -> bool:
                try:
                    s = await admin.call(alive, Status(), timeout=0.5, credentials=cluster.operator)
                except scaffold.ScaffoldError:
                    return False
                return leader(s) != first

            await wait_until(new_leader, 10, "a new leader", interval=0.05)
            after = await admin.call(alive, Status(), credentials=cluster.operator)
            # Host IDs and registrations survived the leader.
            ids = {h["name"]: h["host_id"] for h in before["hosts"]}
            assert {h["name"]: h["host_id"] for h in after["hosts"] if h["name"] in ids} == ids
            assert any(o["name"] == "echo" for o in after["objects"])
            # The new leader has the allow (it is stored): dc1-h1's Bind of `extra` is taken.
            await host.start_server(_close, "extra")
            served = await admin.call(alive, Status(), credentials=cluster.operator)
            assert [r["host"] for o in served["objects"] if o["name"] == "extra" for r in o["replicas"]] == [
                "dc1-h1"
            ]
            # One etcd member dies: the stream and the control plane go on.
            cluster.kill(cluster.members[0].name)
            await asyncio.sleep(1.0)

            async def reconnected() -> bool:  # a host joins through a gateway the leader knows
                try:
                    s = await admin.call(alive, Status(), timeout=0.5, credentials=cluster.operator)
                except scaffold.ScaffoldError:
                    return False
                return all(sw["connected"] for sw in s["switches"])

            await wait_until(reconnected, 20, "the switches to reach the new leader", interval=0.1)
            late_creds = cluster.creds("latecomer", "host")
            async with await scaffold.join(
                "latecomer",
                gateway="dc1-fs1",
                credentials=late_creds,
                controller=cluster.controllers,
                operator=cluster.operator,
            ) as late:
                assert late.stack.host_id > max(ids.values())  # never a Host ID handed out before
            stop.set()
            await pumping
            assert counts[0] == counts[1] and sent.digest() == received.digest()
            assert counts[0] > 50_000
            writer.close()

    run(scenario())


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
