"""The namespace testbed: every node a process in its own network namespace, veth links, the
kernel routing the underlay. Failures are real: a SIGKILLed process, a link set down, a
controller killed and restarted. After every test nothing of ours is left: no namespace, no
veth, no process.

Needs root and ``ip netns``; skipped otherwise. CI runs as root.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scaffold.api.host import Host
from scaffold.apps.pattern import PatternChecker
from scaffold.core.controller.commands import Counters, Status
from scaffold.deploy.joining import join_from_state
from scaffold.deploy.netns import NetnsNetwork, available, leftovers
from scaffold.deploy.netns.kernel import alive
from scaffold.deploy.state_file import NetworkState, load_state
from scaffold.deploy.topology_file import load_topology
from scaffold.errors import PathError, ScaffoldError
from scaffold.runtime import admin
from scaffold.runtime.aio import run, wait_until

REASON = available()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(REASON is not None, reason=f"namespace testbed unavailable: {REASON}"),
]

# dc3 reaches dc1 directly (1 ms) or through dc2 (2 + 2 ms); "solo" has one replica in dc1.
TOPOLOGY = """\
name = "netns-test"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1"]

[[datacenter]]
name = "dc3"
hosts = ["dc3-h1"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 2

[[link]]
a = "dc2"
b = "dc3"
delay_ms = 2

[[link]]
a = "dc3"
b = "dc1"
delay_ms = 1
bandwidth = "200mbit"

[[object]]
name = "echo"
replicas = { "dc1-h1" = 1, "dc2-h1" = 1 }
resumable = true

[[object]]
name = "solo"
replicas = ["dc1-h2"]
"""


def assert_nothing_left(state: NetworkState) -> None:
    assert leftovers(state.run_id) == []
    assert [n.name for n in state.nodes.values() if alive(n.pid, n.start_time)] == []


@pytest.fixture
def topology_path(tmp_path: Path) -> Path:
    path = tmp_path / "net.toml"
    path.write_text(TOPOLOGY)
    return path


def in_network(
    topology_path: Path,
    tmp_path: Path,
    body: Callable[[NetnsNetwork, Host], Awaitable[None]],
    **options: Any,
) -> None:
    """Start the network, join a client host from outside (gateway dc3-fs1), run ``body``;
    then remove everything and check nothing is left."""
    holder: list[NetworkState] = []

    async def main() -> None:
        network = NetnsNetwork(
            load_topology(topology_path),
            state_path=tmp_path / "state.json",
            run_dir=tmp_path / "run",
            **options,
        )
        try:
            await network.start()
            assert network.state is not None
            holder.append(network.state)
            client = await join_from_state("outside", state=network.state_path, gateway="dc3-fs1")
            try:
                await body(network, client)
            finally:
                await client.close()
        finally:
            await network.close()

    try:
        run(main())
    finally:
        if holder:
            assert_nothing_left(holder[0])
        assert not (tmp_path / "state.json").exists()


class Exchange:
    """A stream client that sends numbered chunks and checks every echoed byte."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer
        self.sent = 0
        self.verified = 0

    async def round(self, size: int = 2000, timeout: float = 10.0) -> None:
        chunk = os.urandom(size)
        self.writer.write(chunk)
        await self.writer.drain()
        got = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        assert got == chunk, "echoed bytes differ: silent corruption"
        self.sent += size
        self.verified += size


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_cli_up_status_fault_down(topology_path: Path, tmp_path: Path) -> None:
    """``scaffold up --netns --detach`` … ``down``: one namespace and process per node, the
    status tables, faults, and nothing left afterwards."""
    up = run_cli("up", "--netns", "--detach", str(topology_path), cwd=tmp_path)
    state = None
    try:
        assert up.returncode == 0, up.stderr
        state = load_state(tmp_path / ".scaffold" / "state.json")
        assert state.mode == "netns" and len(state.nodes) == 11
        # every node is its own process in its own network namespace
        inodes = {os.stat(f"/proc/{n.pid}/ns/net").st_ino for n in state.nodes.values()}
        assert len(inodes) == len(state.nodes)
        assert os.stat("/proc/self/ns/net").st_ino not in inodes
        status = run_cli("status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert all(s["connected"] for s in doc["switches"])
        assert {o["name"] for o in doc["objects"]} == {"echo", "solo"}
        assert set(doc["counters"]) >= {"dc1-fs1", "dc1-h1"}
        tables = run_cli("status", cwd=tmp_path)
        assert "Objects and replicas" in tables.stdout and "Backbone links" in tables.stdout
        for fault in (["loss", "dc1", "dc2", "5"], ["delay", "dc1", "dc2", "7"], ["kill", "dc2-h1"]):
            done = run_cli("fault", *fault, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        ns = state.nodes["dc1-fs1"].namespace
        rules = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True, check=True
        )
        assert "numgen random mod 100 < 5" in rules.stdout
        assert not alive(state.nodes["dc2-h1"].pid, state.nodes["dc2-h1"].start_time)
        bad = run_cli("fault", "link-down", "dc1-h1", "dc3-h1", cwd=tmp_path)
        assert bad.returncode == 2 and "no link" in bad.stderr
    finally:
        down = run_cli("down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        if state is not None:
            assert_nothing_left(state)
        assert not (tmp_path / ".scaffold" / "state.json").exists()


def test_a_sigkilled_replica_mid_transfer(topology_path: Path, tmp_path: Path) -> None:
    in_network(topology_path, tmp_path, _a_sigkilled_replica_mid_transfer)


async def _a_sigkilled_replica_mid_transfer(net: NetnsNetwork, client: Host) -> None:
    reader, writer = await client.open_connection("echo")
    serving = writer.get_extra_info("peer_host")
    assert serving in ("dc1-h1", "dc2-h1")
    survivor = "dc2-h1" if serving == "dc1-h1" else "dc1-h1"
    flow = Exchange(reader, writer)
    for _ in range(5):
        await flow.round()
    net.kill(serving)  # SIGKILL: the process gets no chance to say goodbye
    assert not net.alive(serving)
    outcome = "resumed"
    try:
        for _ in range(5):
            await flow.round(timeout=8.0)
    except (PathError, TimeoutError, asyncio.IncompleteReadError) as exc:
        outcome = f"failed: {exc!r}"
    # Echo is stateless and "echo" resumable: the survivor takes the stream over
    # (RESUME), and every byte echoed after the kill was checked.
    assert outcome == "resumed"
    assert writer.get_extra_info("peer_host") == survivor

    async def dead() -> bool:
        status = await admin.call(net.controller, Status(), credentials=net.operator)
        return not next(h for h in status["hosts"] if h["name"] == serving)["alive"]

    await wait_until(dead, 5.0, f"the controller to declare {serving} dead", interval=0.05)
    for _ in range(4):  # every new flow lands on the survivor
        reader2, writer2 = await client.open_connection("echo")
        assert writer2.get_extra_info("peer_host") == survivor
        await Exchange(reader2, writer2).round()
        writer2.close()


def test_a_cut_backbone_link_reroutes_live_flows(topology_path: Path, tmp_path: Path) -> None:
    in_network(topology_path, tmp_path, _a_cut_backbone_link_reroutes_live_flows)


async def _a_cut_backbone_link_reroutes_live_flows(net: NetnsNetwork, client: Host) -> None:
    reader, writer = await client.open_connection("solo")
    assert writer.get_extra_info("peer_host") == "dc1-h2"
    flow = Exchange(reader, writer)
    for _ in range(5):
        await flow.round()
    before: int = (await net.status())["counters"]["dc2-fs1"]["forwarded"]
    net.link_down("dc3", "dc1")  # the kernel link; nobody tells the controller

    async def link_down_seen() -> bool:
        status = await admin.call(net.controller, Status(), credentials=net.operator)
        return not next(link for link in status["links"] if {link["a"], link["b"]} == {"dc3", "dc1"})["up"]

    await wait_until(link_down_seen, 5.0, "the border switches to report the cut port", interval=0.05)
    for _ in range(20):  # the same flow goes on, now through dc2
        await flow.round(timeout=10.0)

    async def through_dc2() -> bool:
        counters = await admin.call(net.controller, Counters(), credentials=net.operator)
        forwarded: int = counters["dc2-fs1"]["forwarded"]
        return forwarded > before

    await wait_until(through_dc2, 5.0, "dc2-fs1 to carry the rerouted flow", interval=0.05)
    net.link_up("dc3", "dc1")

    async def link_up_seen() -> bool:
        return not await link_down_seen()

    await wait_until(link_up_seen, 5.0, "the ports to come back", interval=0.05)
    await flow.round()


def test_a_killed_controller_restarts_while_flows_go_on(topology_path: Path, tmp_path: Path) -> None:
    in_network(topology_path, tmp_path, _a_killed_controller_restarts_while_flows_go_on)


async def _a_killed_controller_restarts_while_flows_go_on(net: NetnsNetwork, client: Host) -> None:
    reader, writer = await client.open_connection("solo")
    flow = Exchange(reader, writer)
    await flow.round()
    net.kill("controller")
    with pytest.raises(ScaffoldError):
        await admin.call(net.controller, Status(), timeout=1.0, credentials=net.operator)
    # The switches forward on their last tables: the flow goes on with no controller.
    deadline = time.monotonic() + 1.0
    rounds = 0
    while time.monotonic() < deadline:
        await flow.round()
        rounds += 1
    assert rounds >= 5
    await net.restart("controller")
    # It comes back from its store; every node reconnects and gets its tables again.
    await net.wait_ready(20.0)
    status = await admin.call(net.controller, Status(), credentials=net.operator)
    assert next(h for h in status["hosts"] if h["name"] == "outside")["alive"]
    for _ in range(5):
        await flow.round()
    reader2, writer2 = await client.open_connection("echo")
    await Exchange(reader2, writer2).round()


def test_ctrl_c_of_a_foreground_up_removes_everything(topology_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaffold", "up", "--netns", str(topology_path)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    state_path = tmp_path / ".scaffold" / "state.json"
    state = None
    try:
        deadline = time.monotonic() + 60
        while "is up" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        state = load_state(state_path)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            run_cli("down", cwd=tmp_path)
    assert state is not None and all(n.pid for n in state.nodes.values())
    assert_nothing_left(state)
    assert not state_path.exists()
    assert "network removed" in log.read_text()


PROGRAM = """
import asyncio, sys
import scaffold
async def main():
    host = await scaffold.join("dc3-app", gateway="dc3-fs1", controller=(sys.argv[1], int(sys.argv[2])),
                               bind=("0.0.0.0", 0), advertise=sys.argv[3], credentials=sys.argv[4],
                               operator=sys.argv[5])
    reader, writer = await host.open_connection("solo")
    writer.write(b"over the veth")
    await writer.drain()
    print((await asyncio.wait_for(reader.readexactly(13), 10)).decode(), writer.get_extra_info("peer_host"))
    await host.close()
asyncio.run(main())
"""


def test_a_program_in_a_host_namespace_joins_over_its_veth(topology_path: Path, tmp_path: Path) -> None:
    in_network(topology_path, tmp_path, _a_program_in_a_host_namespace_joins_over_its_veth)


async def _a_program_in_a_host_namespace_joins_over_its_veth(net: NetnsNetwork, client: Host) -> None:
    assert net.state is not None
    host = net.state.nodes["dc3-h1"]
    script = Path(net.state.run_dir) / "program.py"
    script.write_text(PROGRAM)
    ip, port = net.controller[0]  # the one replica of this network
    # Its certificate, from the network's CA, names the address it announces.
    store = net.state.credential_store()
    credentials = str(store.node("dc3-app", "host", [host.node_ip]).directory)
    operator = str(store.operator().directory)
    argv = [sys.executable, str(script), ip, str(port), host.node_ip, credentials, operator]
    pid = net.popen("dc3-h1", argv, log_name="program")
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    log = Path(net.state.run_dir) / "program.log"
    deadline = time.monotonic() + 20
    while "over the veth" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no output"
        await asyncio.sleep(0.05)
    assert "over the veth dc1-h2" in log.read_text()


def test_an_external_host_joins_from_this_process_over_its_own_veth(
    topology_path: Path, tmp_path: Path
) -> None:
    """What ``scaffold demo --netns`` needs: clients in this process, each with its sockets
    in its own host namespace, downloading the verifiable pattern from service daemons."""
    in_network(
        topology_path,
        tmp_path,
        _an_external_host_joins_from_this_process_over_its_own_veth,
        external_hosts={"dc3-h1"},
        host_options=["--service", "pattern", "--pattern-size", "300000", "--pattern-pace", "0.001"],
    )


async def _an_external_host_joins_from_this_process_over_its_own_veth(
    net: NetnsNetwork, client: Host
) -> None:
    assert net.state is not None and not net.state.nodes["dc3-h1"].pid
    host = await net.join_host("dc3-h1")
    try:
        assert host.node.address == (net.state.nodes["dc3-h1"].node_ip, host.node.address[1])
        reader, writer = await host.open_connection("solo")
        checker = PatternChecker()
        while data := await asyncio.wait_for(reader.read(65536), 10):
            checker.feed(data)
        writer.close()
        assert checker.ok and checker.offset == 300_000
        assert writer.get_extra_info("peer_host") == "dc1-h2"
    finally:
        await host.close()
    link = net.state.link("dc3-h1", "dc3-fs1")
    dev = link.dev_a if link.a == "dc3-h1" else link.dev_b
    shown = subprocess.run(
        ["ip", "-n", net.state.nodes["dc3-h1"].namespace, "-j", "-s", "link", "show", dev],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)[0]["stats64"]["rx"]["bytes"] > 300_000  # it came over the veth
