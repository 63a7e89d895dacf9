"""Shared fixtures: a simulated default network with echo replicas; the processes a test
starts (``cli_processes``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_processes import Processes
from scaffold.core.host import DatagramReceived, HostEvent, HostStack
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork

WEB = ObjectId.from_name("web")


def echo(stack: HostStack, event: HostEvent, now: float) -> None:
    if isinstance(event, DatagramReceived):
        stack.send_datagram(event.socket_id, event.data, now)


def serve_objects(net: SimNetwork) -> None:
    """Bind every object of the topology on its replicas, with an echo service."""
    for obj in net.topology.objects:
        oid = ObjectId.from_name(obj.name)
        for host, weight in obj.replicas:
            net.act(host, lambda core, now, oid=oid, w=weight, n=obj.name: core.bind(oid, w, n))
            net.on_event(host, echo)
    net.run(0.05)


@pytest.fixture
def net() -> Iterator[SimNetwork]:
    """The default topology in the sim, up, with ``web`` served by its three replicas."""
    network = SimNetwork(default_topology(), seed=11)
    network.start()
    network.settle()
    serve_objects(network)
    yield network


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start processes in ``tmp_path`` (``processes.spawn``); all are stopped by pid at the end."""
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
