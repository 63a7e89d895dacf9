"""Shared fixtures of the attack tests: a real ``scaffold up`` network (a process of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaffold.deploy.state_file import NetworkState, load_state

TOPOLOGY = """\
name = "attacked"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1", "dc2-h2"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 1

[[object]]
name = "web"
replicas = ["dc1-h1", "dc2-h1"]
"""


@dataclass
class UpNetwork:
    """A network from ``scaffold up`` in ``directory``; ``process`` runs all of it."""

    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def state_path(self) -> Path:
        return self.directory / ".scaffold" / "state.json"

    @property
    def state(self) -> NetworkState:
        return load_state(self.state_path)

    def rss(self) -> int:
        """The ``scaffold up`` process's resident memory, bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@pytest.fixture(scope="module")
def up_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpNetwork]:
    """``scaffold up`` of a two-datacenter network, `web` served by dc1-h1 and dc2-h1."""
    directory = tmp_path_factory.mktemp("up")
    (directory / "topology.toml").write_text(TOPOLOGY)
    log = open(directory / "up.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "scaffold", "up", "topology.toml"],
        cwd=directory,
        stdout=log,
        stderr=log,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
    )
    deadline = time.monotonic() + 60
    try:
        while "is up" not in (directory / "up.log").read_text():
            assert process.poll() is None, (directory / "up.log").read_text()
            assert time.monotonic() < deadline, "scaffold up did not come up"
            time.sleep(0.05)
        yield UpNetwork(directory, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
