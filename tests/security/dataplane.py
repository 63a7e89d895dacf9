"""What the data-plane attack tests do to a ``scaffold up`` network (``attacker.UpNetwork``):
raw datagrams sent from the test process to the network's own loopback addresses, and the
counters every node reports, read back as its operator would."""

from __future__ import annotations

import socket
import time
from typing import Any

from scaffold.core.controller.commands import Allow, Counters, Status
from scaffold.ids import ObjectId
from scaffold.runtime.aio import run
from scaffold.wire import header as wire_header
from scaffold.wire.header import Header, Proto

from .attacker import UpNetwork, operator_call

__all__ = ["WEB", "DataPlane", "Proto", "packet"]

WEB = ObjectId.from_name("web")


def packet(proto: Proto, body: bytes, **fields: Any) -> bytes:
    """A SCAFFOLD packet for ``web`` (fields of ``Header`` as keywords)."""
    fields.setdefault("obj", WEB.raw)
    fields.setdefault("flow", 1)
    return wire_header.encode(Header(proto, **fields), body)


class DataPlane:
    """A running network seen from an attacker's socket and an operator's console."""

    def __init__(self, net: UpNetwork) -> None:
        self.net = net
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    @property
    def state_path(self) -> Any:
        return self.net.state_path

    def close(self) -> None:
        self.sock.close()

    def status(self) -> dict[str, Any]:
        """The controller's ``status`` (hosts, objects, datacenters)."""
        status: dict[str, Any] = run(operator_call(self.state_path, Status()))
        return status

    def allow(self, name: str) -> None:
        """The operator's policy: any host may serve plain-named object ``name``."""
        run(operator_call(self.state_path, Allow(object=name, where="*")))

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.status()["hosts"] if h["name"] == name)

    def dc_id(self, dc: str) -> int:
        return int(self.status()["datacenters"][dc])

    def counters(self, node: str) -> dict[str, Any]:
        """A node's last reported summary: ``drops``, ``counters``, ``runtime`` by reason."""
        counters: dict[str, Any] = run(operator_call(self.state_path, Counters()))
        mine: dict[str, Any] = counters.get(node, {})
        return mine

    def count(self, node: str, kind: str, reason: str) -> int:
        return int(self.counters(node).get(kind, {}).get(reason, 0))

    def wait_count(self, node: str, kind: str, reason: str, at_least: int, timeout: float = 20) -> int:
        """Poll a node's reported ``drops`` or ``counters`` (sent every second) until
        ``reason`` reaches ``at_least``; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.count(node, kind, reason)
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def address(self, node: str) -> tuple[str, int]:
        address = self.net.state.nodes[node].address
        assert address is not None
        return address

    def send(self, node: str, packets: list[bytes], rate: float = 0.0) -> None:
        """Send raw datagrams to a node's UDP socket, ``rate`` a second (0: at once)."""
        address = self.address(node)
        start = time.monotonic()
        for i, data in enumerate(packets):
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            self.sock.sendto(data, address)

    def rss(self) -> int:
        """Resident bytes of the ``scaffold up`` process (it runs the whole network)."""
        return self.net.rss()
