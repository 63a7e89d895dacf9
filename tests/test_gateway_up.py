"""The gateway commands against a network from ``scaffold up``: every piece a real process.

``scaffold up`` runs the network; ``scaffold publish`` makes a ``python -m http.server`` a
replica of ``web``; ``scaffold ingress`` serves ``web`` to ``curl``. Both gateway commands
join the running network as hosts of their own through its state file.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cli_processes import Processes, free_port, wait_for, wait_for_port
from scaffold.deploy.netns import available, leftovers
from scaffold.deploy.state_file import load_state

TOPOLOGY = """\
name = "gateway"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 1

# The operator's policy: any host may serve `web` (the publishers join with names of their own).
[[object]]
name = "web"
allow = ["*"]
"""


NETNS_UNAVAILABLE = available()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/system-deps)")
@pytest.mark.parametrize(
    "mode",
    [
        "embedded",
        pytest.param(
            "netns",
            marks=[
                pytest.mark.netns,
                pytest.mark.skipif(
                    NETNS_UNAVAILABLE is not None,
                    reason=f"namespace testbed unavailable: {NETNS_UNAVAILABLE}",
                ),
            ],
        ),
    ],
)
def test_publish_and_ingress_join_a_scaffold_up_network(
    tmp_path: Path, processes: Processes, mode: str
) -> None:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("served by an unmodified http.server\n")
    spawn = processes.spawn
    scaffold = [sys.executable, "-m", "scaffold"]

    def down() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*scaffold, "down"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )

    if mode == "netns":
        # Every node a process in its own namespace; the gateway commands join from here.
        detached = subprocess.run(
            [*scaffold, "up", "--netns", "--detach", "--metrics", ":0", "topology.toml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert detached.returncode == 0, detached.stderr
        up = None
        _every_daemon_serves_its_metrics(tmp_path)
    else:
        up, up_log = spawn("up", *scaffold, "up", "topology.toml")
        wait_for(up_log, "is up", up)
    run_id = load_state(tmp_path / ".scaffold" / "state.json").run_id
    try:
        _serve_and_fetch(tmp_path, spawn, scaffold)
    finally:
        result = down()
    assert result.returncode == 0, result.stderr
    if up is not None:
        assert up.wait(15) == 0
    if mode == "netns":
        assert not leftovers(run_id), leftovers(run_id)


def _every_daemon_serves_its_metrics(tmp_path: Path) -> None:
    """``up --netns --metrics``: each daemon on the port of its management address (0: 9464)."""
    listed = subprocess.run(
        [sys.executable, "-m", "scaffold", "metrics", "targets"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    targets = json.loads(listed.stdout)[0]["targets"]
    state = load_state(tmp_path / ".scaffold" / "state.json")
    assert sorted(targets) == sorted(f"{n.mgmt_ip}:9464" for n in state.nodes.values())
    for target in targets:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
            assert b"scaffold_" in response.read()


def _serve_and_fetch(tmp_path: Path, spawn: Any, scaffold: list[str]) -> None:
    web_port, ingress_port = free_port(), free_port()
    spawn(
        "http",
        sys.executable,
        "-m",
        "http.server",
        str(web_port),
        "--bind",
        "127.0.0.1",
        "--directory",
        "site",
    )
    wait_for_port(web_port)  # the target answers before it is published
    publish, publish_log = spawn(
        "publish",
        *scaffold,
        "publish",
        "web",
        "--target",
        f"127.0.0.1:{web_port}",
        "--gateway",
        "dc1-fs1",
        "--policy",
        "weighted",
        "--capacity",
        "50",
    )
    wait_for(publish_log, "published", publish)
    ingress, ingress_log = spawn(
        "ingress",
        *scaffold,
        "ingress",
        "web",
        "--listen",
        f"127.0.0.1:{ingress_port}",
        "--gateway",
        "dc2-fs1",
    )
    wait_for(ingress_log, "ingress tcp", ingress)
    for _ in range(5):
        got = subprocess.run(
            ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{ingress_port}/hello.txt"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == "served by an unmodified http.server\n"
    status = subprocess.run(
        [*scaffold, "status", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert '"web"' in status.stdout and "publish-" in status.stdout
    (web,) = [o for o in json.loads(status.stdout)["objects"] if o["name"] == "web"]
    assert web["policy"] == "weighted" and web["replicas"][0]["capacity"] == 50.0  # --policy, --capacity
    for proc in (ingress, publish):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
