"""Reliable streams over the whole simulated network: loss, reordering, duplication, restore."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from conftest import WEB
from scaffold.core.host import HostEvent, HostStack, StreamEventFor
from scaffold.core.topology import default_topology
from scaffold.runtime.sim import EventHandler, SimNetwork
from scaffold.transport import ConnectionTerminated, DataReceived, EndOfStream, SendSpaceAvailable

CLIENTS = ["north-h1", "north-h2", "east-h3", "east-h4", "west-h2", "west-h3", "west-h4"]
CHUNK = 64 * 1024


@dataclass
class Upload:
    """A client streaming ``payload`` to a sink that hashes what it gets."""

    host: str
    payload: bytes
    socket_id: int = 0
    sent: int = 0
    done: bool = False


@dataclass
class Sink:
    received: dict[tuple[int, int], bytearray] = field(default_factory=dict)
    finished: dict[tuple[int, int], str] = field(default_factory=dict)

    def __call__(self, stack: HostStack, event: HostEvent, now: float) -> None:
        if not isinstance(event, StreamEventFor):
            return
        flow = stack.flows.get(event.socket_id)
        key = (stack.host_id, event.socket_id)
        if isinstance(event.event, DataReceived) and flow is not None:
            self.received.setdefault(key, bytearray()).extend(stack.stream_read(event.socket_id, -1, now))
        elif isinstance(event.event, EndOfStream) and flow is not None:
            self.finished[key] = hashlib.sha256(self.received.get(key, b"")).hexdigest()
            stack.stream_shutdown(event.socket_id, now)


def pump_upload(stack: HostStack, upload: Upload, now: float) -> None:
    while upload.sent < len(upload.payload):
        taken = stack.stream_send(upload.socket_id, upload.payload[upload.sent : upload.sent + CHUNK], now)
        upload.sent += taken
        if taken == 0:
            return
    if not upload.done:
        upload.done = True
        stack.stream_shutdown(upload.socket_id, now)


def make_client(uploads: dict[tuple[str, int], Upload], ended: set[tuple[str, int]]) -> EventHandler:
    def on_event(stack: HostStack, event: HostEvent, now: float) -> None:
        if not isinstance(event, StreamEventFor):
            return
        upload = uploads.get((stack.name, event.socket_id))
        if upload is None:
            return
        if isinstance(event.event, ConnectionTerminated):
            ended.add((stack.name, event.socket_id))
        elif event.socket_id not in stack.flows:
            return  # terminated: its ConnectionTerminated event is on the way
        elif isinstance(event.event, SendSpaceAvailable) or upload.sent < len(upload.payload):
            pump_upload(stack, upload, now)

    return on_event


def start(
    net: SimNetwork, count: int, size: int, seed: int
) -> tuple[dict[tuple[str, int], Upload], set[tuple[str, int]], Sink]:
    sink = Sink()
    for host, weight in (("east-h1", 1), ("east-h2", 2), ("west-h1", 3)):

        def bind(core: HostStack, now: float, w: int = weight) -> None:
            core.bind(WEB, w, "web")

        net.act(host, bind)
        net.on_event(host, sink)
    net.run(0.05)
    uploads: dict[tuple[str, int], Upload] = {}
    ended: set[tuple[str, int]] = set()
    handler = make_client(uploads, ended)
    for name in CLIENTS:
        net.on_event(name, handler)
    rng = random.Random(seed)
    for i in range(count):
        host = CLIENTS[i % len(CLIENTS)]
        upload = Upload(host, rng.randbytes(size))
        flow = net.act(host, lambda core, now: core.open_stream(WEB, now))
        upload.socket_id = flow.socket_id
        uploads[(host, flow.socket_id)] = upload

        def pump(core: HostStack, now: float, u: Upload = upload) -> None:
            pump_upload(core, u, now)

        net.act(host, pump)
    return uploads, ended, sink


def test_twenty_4mib_streams_survive_loss_reordering_and_duplication() -> None:
    net = SimNetwork(default_topology(), seed=21)
    net.start()
    net.settle()
    net.set_all_links(loss=0.05, jitter=0.003, duplicate=0.02)
    uploads, ended, sink = start(net, 20, 4 * 1024 * 1024, seed=5)
    assert net.run_while(lambda: len(ended) < len(uploads), timeout=600)
    digests = sorted(hashlib.sha256(u.payload).hexdigest() for u in uploads.values())
    assert sorted(sink.finished.values()) == digests
    lost = sum(link.lost for link in net.links.values())
    assert lost > 1000  # the links really dropped packets


def test_stream_state_restored_into_a_fresh_host_stack_completes_byte_exact() -> None:
    net = SimNetwork(default_topology(), seed=22)
    net.start()
    net.settle()
    uploads, ended, sink = start(net, 1, 4 * 1024 * 1024, seed=6)
    (host, socket_id), upload = next(iter(uploads.items()))
    net.run_while(lambda: upload.sent < len(upload.payload) // 2, timeout=30)
    assert upload.sent < len(upload.payload)
    old = net.host(host)
    state = old.export_flow(socket_id, net.now)
    assert socket_id not in old.flows
    fresh = net.restart_host(host)  # a new process: nothing but the exported bytes survive
    net.run(0.01)
    assert fresh.registered and fresh.host_id == old.host_id and fresh is not old
    net.on_event(host, make_client(uploads, ended))
    flow = net.act(host, lambda core, now: core.import_flow(state, now))
    assert flow.socket_id == socket_id and flow.transport is not None
    net.act(host, lambda core, now: pump_upload(core, upload, now))
    assert net.run_while(lambda: len(ended) < 1, timeout=60)
    assert list(sink.finished.values()) == [hashlib.sha256(upload.payload).hexdigest()]


def test_stream_orphaned_by_a_dead_server_is_reset_by_the_new_replica() -> None:
    net = SimNetwork(default_topology(), seed=23)
    net.start()
    net.settle()
    uploads, ended, _ = start(net, 1, 8 * 1024 * 1024, seed=7)
    (host, socket_id), upload = next(iter(uploads.items()))
    net.run_while(lambda: upload.sent < len(upload.payload) // 4, timeout=30)
    flow = net.host(host).flows[socket_id]
    serving = net.controller.host_name(flow.peer_host)
    assert serving is not None
    net.kill(serving)
    killed_at = net.now
    events: list[object] = []
    handler = net.handlers[host]

    def record(stack: HostStack, event: HostEvent, now: float) -> None:
        if isinstance(event, StreamEventFor) and event.socket_id == socket_id:
            events.append(event.event)
        handler(stack, event, now)

    net.on_event(host, record)
    assert net.run_while(lambda: not ended, timeout=30)
    reasons = [e.reason for e in events if isinstance(e, ConnectionTerminated)]
    assert reasons == ["reset"]  # refused by the surviving replica, not a 30 s retry limit
    assert net.now - killed_at < 5.0  # heartbeat detection (0.6 s) plus a few RTOs
    assert sum(net.host(h).counters["reset-unknown-flow"] for h in ("east-h1", "east-h2", "west-h1")) >= 1
