"""Shared fixtures: a simulated default network with echo replicas, stream echo and drain
handlers, a Python call counter; the processes a test starts (``cli_processes``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_processes import Processes
from scaffold.core.engine import NodeCore, NodeEngine
from scaffold.core.host import DatagramReceived, HostEvent, HostStack, StreamEventFor
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import DataReceived

WEB = ObjectId.from_name("web")


def echo(stack: HostStack, event: HostEvent, now: float) -> None:
    if isinstance(event, DatagramReceived):
        stack.send_datagram(event.socket_id, event.data, now)


def echo_streams(stack: HostStack, event: HostEvent, now: float) -> None:
    """Server: write back whatever a stream brings."""
    if (
        isinstance(event, StreamEventFor)
        and isinstance(event.event, DataReceived)
        and event.socket_id in stack.flows
    ):
        stack.stream_send(event.socket_id, stack.stream_read(event.socket_id, -1, now), now, force=True)


def drain_replies(stack: HostStack, event: HostEvent, now: float) -> None:
    """Client: read what comes back, so windows stay open."""
    if (
        isinstance(event, StreamEventFor)
        and isinstance(event.event, DataReceived)
        and event.socket_id in stack.flows
    ):
        stack.stream_read(event.socket_id, -1, now)


def stream_network(
    server: str, client: str, seed: int, serve: Callable[[HostStack, HostEvent, float], None] = echo_streams
) -> SimNetwork:
    """The default topology in the sim: ``server`` binds ``web`` and answers with ``serve``,
    ``client`` reads what comes back."""
    net = SimNetwork(default_topology(), seed=seed)
    net.start()
    net.settle()
    net.act(server, lambda core, now: core.bind(WEB, 1, "web"))
    net.on_event(server, serve)
    net.on_event(client, drain_replies)
    net.run(0.05)
    return net


def node_core(node: NodeEngine) -> NodeCore[Any]:
    """``node`` as the ``NodeCore`` every node core is, for its ``drops`` and ``counters``
    (the runtime's interface, ``NodeEngine``, has neither)."""
    assert isinstance(node, NodeCore)
    return node


def count_calls(action: Callable[[], object]) -> int:
    """Python and builtin calls made while ``action`` runs (``sys.setprofile``): a cost that
    does not depend on the machine's speed."""
    counted = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal counted
        counted += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        action()
    finally:
        sys.setprofile(None)
    return counted


def serve_objects(net: SimNetwork) -> None:
    """Bind every object of the topology on its replicas, with an echo service."""
    for obj in net.topology.objects:
        oid = ObjectId.from_name(obj.name)
        for host, weight in obj.replicas:

            def bind(
                core: HostStack, now: float, oid: ObjectId = oid, w: int = weight, n: str = obj.name
            ) -> None:
                core.bind(oid, w, n)

            net.act(host, bind)
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
