"""Daemons as separate processes over loopback (no root): a controller, switches and hosts
started with flags (and one with a config file) form a network; a program joins it as a
host; SIGTERM stops every daemon cleanly (exit 0) and every log line is JSON."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scaffold
from cli_processes import Daemons
from scaffold.core.controller.commands import Counters, Status
from scaffold.deploy.joining import join_from_state
from scaffold.errors import ConfigError
from scaffold.runtime import admin
from scaffold.runtime.aio import run

TOPOLOGY = """\
name = "pair"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 2

[[object]]
name = "echo"
replicas = ["dc2-h1"]
"""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.stop_all()


def test_a_network_of_daemons_serves_a_joined_host_and_stops_cleanly(
    daemons: Daemons, tmp_path: Path
) -> None:
    topo = tmp_path / "pair.toml"
    topo.write_text(TOPOLOGY)
    ctl = f"127.0.0.1:{daemons.port}"
    daemons.start(
        "controller",
        "controller",
        "--topology",
        str(topo),
        "--listen",
        ctl,
        "--credentials",
        daemons.creds("controller", "controller"),
    )
    for dc in ("dc1", "dc2"):
        daemons.start(
            f"{dc}-fs1",
            "switch",
            "--role",
            "flow",
            "--name",
            f"{dc}-fs1",
            "--credentials",
            daemons.creds(f"{dc}-fs1", "flow-switch"),
            "--dc",
            dc,
            "--controller",
            ctl,
            "--listen",
            "127.0.0.1:0",
            "--link",
            f"{'dc2' if dc == 'dc1' else 'dc1'}-fs1=2",
        )
    # one switch from a config file instead of flags
    config = tmp_path / "dc1-os.toml"
    config.write_text(
        f'name = "dc1-os"\nrole = "object"\ndc = "dc1"\ncontroller = "{ctl}"\nlisten = "127.0.0.1:0"\n'
        f'credentials = "{daemons.creds("dc1-os", "object-switch")}"\n'
    )
    daemons.start("dc1-os", "switch", "--config", str(config))
    daemons.start(
        "dc2-os",
        "switch",
        "--role",
        "object",
        "--name",
        "dc2-os",
        "--credentials",
        daemons.creds("dc2-os", "object-switch"),
        "--dc",
        "dc2",
        "--controller",
        ctl,
        "--listen",
        "127.0.0.1:0",
    )
    daemons.start(
        "dc2-h1",
        "host",
        "--name",
        "dc2-h1",
        "--credentials",
        daemons.creds("dc2-h1", "host"),
        "--gateway",
        "dc2-fs1",
        "--controller",
        ctl,
        "--listen",
        "127.0.0.1:0",
        "--serve",
        "echo:2:policy=weighted:capacity=40",
    )

    async def scenario() -> tuple[bytes, str, dict[str, Any], dict[str, Any]]:
        deadline = time.monotonic() + 30
        while True:  # until the replica is registered (the daemons start in parallel)
            try:
                status = await admin.call(
                    daemons.controller, Status(), timeout=1.0, credentials=daemons.operator
                )
                registered = any(o["name"] == "echo" and o["replicas"][0]["alive"] for o in status["objects"])
                if registered and all(sw["connected"] for sw in status["switches"]):
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the daemons did not come up"
            await asyncio.sleep(0.05)
        async with await scaffold.join(
            "dc1-h1",
            gateway="dc1-fs1",
            controller=daemons.controller,
            credentials=daemons.creds("dc1-h1", "host"),
            operator=daemons.operator,
        ) as host:
            reader, writer = await host.open_connection("echo")
            payload = os.urandom(5_000)
            writer.write(payload)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
            served = writer.get_extra_info("peer_host")
            writer.close()
            # Nodes report their counters every second (later on a loaded machine).
            deadline = time.monotonic() + 20
            reporters = {"dc1-fs1", "dc2-fs1", "dc1-os", "dc2-os", "dc2-h1"}
            while True:
                counters = await admin.call(daemons.controller, Counters(), credentials=daemons.operator)
                forwarded = counters.get("dc1-fs1", {}).get("forwarded", 0)
                if (forwarded > 0 and reporters <= set(counters)) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        return (got == payload and b"ok") or b"bad", served, counters, status

    ok, served, counters, status = run(scenario())
    assert ok == b"ok"
    # the --serve spec's policy and capacity reached the controller
    (echo,) = [o for o in status["objects"] if o["name"] == "echo"]
    assert echo["policy"] == "weighted" and echo["replicas"][0]["capacity"] == 40.0
    assert served == "dc2-h1"
    assert {"dc1-fs1", "dc2-fs1", "dc1-os", "dc2-os", "dc2-h1"} <= set(counters)
    assert counters["dc1-fs1"]["forwarded"] > 0
    codes = daemons.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes
    for name in daemons.procs:
        records = daemons.log(name)  # every line is JSON
        assert records and all({"t", "node", "level", "msg"} <= set(r) for r in records)
        assert records[-1]["msg"] in ("stopped", "counters") or any(r["msg"] == "stopped" for r in records)
    assert any(r["msg"] == "serving" and r["object"] == "echo" for r in daemons.log("dc2-h1"))
    assert any(r["msg"] == "host-up" for r in daemons.log("controller"))


def test_a_daemon_with_a_bad_option_exits_2_with_a_json_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scaffold", "switch", "--name", "x", "--dc", "d"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    record = json.loads(proc.stderr.strip().splitlines()[-1])
    assert record["level"] == "error" and "--controller" in str(record["error"])
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "scaffold", "host", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "unknown setting 'colour'" in proc.stderr


def test_join_refuses_a_gateway_that_is_not_a_flow_switch(daemons: Daemons, tmp_path: Path) -> None:
    topo = tmp_path / "pair.toml"
    topo.write_text(TOPOLOGY)
    daemons.start(
        "controller",
        "controller",
        "--topology",
        str(topo),
        "--listen",
        f"127.0.0.1:{daemons.port}",
        "--credentials",
        daemons.creds("controller", "controller"),
    )

    async def scenario() -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                await admin.call(daemons.controller, Status(), timeout=1.0, credentials=daemons.operator)
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        with pytest.raises(ConfigError, match="not a flow switch"):
            await scaffold.join(
                "me",
                gateway="dc1-os",
                controller=daemons.controller,
                credentials=daemons.creds("me", "host"),
                operator=daemons.operator,
            )

    run(scenario())
    assert daemons.stop_all() == {"controller": 0}


def test_embedded_up_status_fault_join_down(tmp_path: Path) -> None:
    """``scaffold up`` (embedded, no root) writes the state file that ``status``, ``fault``,
    ``join_from_state`` and ``down`` use."""
    topo = tmp_path / "pair.toml"
    topo.write_text(TOPOLOGY)
    log = tmp_path / "up.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaffold", "up", str(topo)], cwd=tmp_path, stdout=err, stderr=err
        )
    state_path = tmp_path / ".scaffold" / "state.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scaffold", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        deadline = time.monotonic() + 30
        while "is up" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        status = cli("status", "--json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert [o["name"] for o in doc["objects"]] == ["echo"]
        assert cli("fault", "link-down", "dc1", "dc2").returncode == 0
        assert not json.loads(cli("status", "--json").stdout)["links"][0]["up"]
        assert cli("fault", "link-up", "dc1", "dc2").returncode == 0
        assert cli("fault", "delay", "dc1", "dc2", "3").returncode == 0
        killed = cli("fault", "kill", "dc2-h1")
        assert killed.returncode == 2 and "--netns" in killed.stderr

        async def use() -> bytes:
            async with await join_from_state("visitor", state=state_path) as host:
                reader, writer = await host.open_connection("echo")
                writer.write(b"through the embedded network")
                await writer.drain()
                data = await asyncio.wait_for(reader.readexactly(28), 10)
                writer.close()
                return data

        assert run(use()) == b"through the embedded network"
        down = cli("down")
        assert down.returncode == 0, down.stderr
        assert proc.wait(timeout=20) == 0, log.read_text()
        assert not state_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
