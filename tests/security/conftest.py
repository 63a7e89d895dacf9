"""Shared fixtures of the attack tests: a real ``scaffold up`` network (a process of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .attacker import TOPOLOGY, UpNetwork


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
