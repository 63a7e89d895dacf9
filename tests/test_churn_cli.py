"""The churn commands from the command line, against a running network's controller."""

from __future__ import annotations

import json
import subprocess
import sys

import scaffold
from scaffold.runtime.aio import wait_until


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def echo(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
    writer.write(await reader.read(100))
    writer.close()


def test_churn_commands_reach_the_controller() -> None:
    with scaffold.Testbed.threaded(datacenters=3, hosts_per_datacenter=2) as net:
        for host in ("dc1-h1", "dc1-h2", "dc2-h1"):
            net.call(net.host(host).start_server(echo, "web", resumable=True), timeout=10)
        host, port = net.network.controller.address
        operator = net.network.operator_credentials
        assert operator is not None
        # the controller's address and an operator's credentials
        address = f"{host}:{port}", "--credentials", str(operator.directory)
        ctl = net.controller
        web = ctl.object_key("web")

        out = cli("set-weight", "web", "dc1-h1", "5", "--controller", *address, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"object": "web", "host": "dc1-h1", "weight": 5}
        assert ctl.objects[web]["dc1-h1"] == 5

        out = cli("drain", "dc1-h2", "web", "--controller", *address)
        assert out.returncode == 0, out.stderr
        # no flow was open there: the replica leaves at once
        net.call(wait_until(lambda: "dc1-h2" not in ctl.objects[web], 5, "the drain"), timeout=10)
        assert any(e.kind == "drain-complete" and e.target == "dc1-h2" for e in ctl.events)

        out = cli("migrate-object", "web", "dc2-h1", "dc2-h2", "--controller", *address)
        assert out.returncode == 0, out.stderr
        net.call(wait_until(lambda: "dc2-h2" in ctl.objects[web], 5, "the migration"), timeout=10)
        assert "dc2-h1" not in ctl.objects[web]

        out = cli("migrate-host", "dc1-h1", "dc3", "--controller", *address, "--json")
        assert out.returncode == 0, out.stderr
        assert ctl.hosts["dc1-h1"].dc == "dc3" and json.loads(out.stdout)["gateway"] == "dc3-fs1"

        out = cli("move-host", "dc3-h2", "dc2-fs1", "--controller", *address)
        assert out.returncode == 0, out.stderr
        assert ctl.hosts["dc3-h2"].gateway == "dc2-fs1"

        out = cli("drain", "nobody", "--controller", *address)
        assert out.returncode == 2 and "no host named 'nobody'" in out.stderr
        out = cli("set-weight", "web", "dc1-h1", "0", "--controller", *address)
        assert out.returncode == 2 and "weight must be > 0" in out.stderr
