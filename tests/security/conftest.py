"""A real ``scaffold up`` network to attack: fixtures of the data-plane security tests.

``up`` starts ``python -m scaffold up`` (embedded: the whole network is one process, over
loopback) on a two-datacenter topology whose ``web`` object is the echo service on ``dc1-h1``,
and stops it by its pid at the end. Attacks are raw UDP datagrams sent from the test process
to the network's own loopback addresses; legitimate clients join the network as hosts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaffold.deploy.state_file import NetworkState, load_state
from scaffold.ids import ObjectId
from scaffold.wire import header as wire_header
from scaffold.wire.header import Header, Proto

TOPOLOGY = """\
name = "attacked"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 1

[[object]]
name = "web"
replicas = ["dc1-h1"]
"""

WEB = ObjectId.from_name("web")


class Network:
    """A running ``scaffold up`` and what a test needs to reach it."""

    def __init__(self, directory: Path, proc: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.proc = proc
        self.state_path = directory / "state.json"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    @property
    def state(self) -> NetworkState:
        return load_state(self.state_path)

    def status(self) -> dict[str, Any]:
        """``scaffold status --json``: the controller's view and every node's counters."""
        out = subprocess.run(
            [sys.executable, "-m", "scaffold", "status", "--json", "--state", str(self.state_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        status: dict[str, Any] = json.loads(out.stdout)
        return status

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.status()["hosts"] if h["name"] == name)

    def counters(self, node: str) -> dict[str, Any]:
        counters: dict[str, Any] = self.status()["counters"].get(node, {})
        return counters

    def wait_counter(self, node: str, kind: str, reason: str, at_least: int, timeout: float = 20) -> int:
        """Poll a node's reported ``drops`` or ``counters`` (sent every second) until
        ``reason`` reaches ``at_least``; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = int(self.counters(node).get(kind, {}).get(reason, 0))
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def address(self, node: str) -> tuple[str, int]:
        address = self.state.nodes[node].address
        assert address is not None
        return address

    def send(self, node: str, packets: list[bytes], rate: float = 0.0) -> None:
        """Send raw datagrams to a node's UDP socket, ``rate`` a second (0: at once)."""
        address = self.address(node)
        start = time.monotonic()
        for i, packet in enumerate(packets):
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            self.sock.sendto(packet, address)

    def rss(self) -> int:
        """Resident bytes of the ``scaffold up`` process (it runs the whole network)."""
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def packet(proto: Proto, body: bytes, **fields: Any) -> bytes:
    """A SCAFFOLD packet for ``web`` (fields of ``Header`` as keywords)."""
    fields.setdefault("obj", WEB.raw)
    fields.setdefault("flow", 1)
    return wire_header.encode(Header(proto, **fields), body)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Network]:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115 - open for the process's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaffold", "up", "topology.toml", "--state", "state.json"],
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    net = Network(tmp_path, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            if net.state_path.exists():
                try:
                    if any(o["name"] == "web" and o["replicas"] for o in net.status()["objects"]):
                        break
                except subprocess.CalledProcessError:
                    pass
            assert time.monotonic() < deadline, "scaffold up did not come up"
            time.sleep(0.2)
        yield net
    finally:
        net.sock.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
