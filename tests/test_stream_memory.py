"""What a stream held open and idle costs in memory, at each end (issue 16: at most 6 KB per
stream per end, with the API's objects; this is the host stack's and transport's share)."""

from __future__ import annotations

import gc
import tracemalloc

import scaffold
from conftest import WEB
from scaffold.core.host import HostEvent, HostStack, StreamEventFor
from scaffold.core.topology import make_topology
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import DataReceived, StreamState

#: bytes a held idle stream may keep at one end, in the host stack and its transport (Flow,
#: connection, timers, demultiplexing tables): 2,548 when this was written, 2,692 when every
#: flow also kept its header's cache key
BUDGET_PER_END = 2_650
STREAMS = 1_000


def echo(stack: HostStack, event: HostEvent, now: float) -> None:
    if isinstance(event, StreamEventFor) and isinstance(event.event, DataReceived):
        stack.stream_send(event.socket_id, stack.stream_read(event.socket_id, -1, now), now, force=True)


def read(stack: HostStack, event: HostEvent, now: float) -> None:
    if isinstance(event, StreamEventFor) and isinstance(event.event, DataReceived):
        stack.stream_read(event.socket_id, -1, now)


def test_a_held_idle_stream_keeps_little_at_each_end() -> None:
    """Streams that exchanged a message (buffers were used, then drained) and went idle:
    the memory they keep, counted with tracemalloc, is within budget."""
    net = SimNetwork(make_topology(1, 2), seed=9)
    net.start()
    net.settle()
    net.act("dc1-h1", lambda core, now: core.bind(WEB, 1, "web"))
    net.on_event("dc1-h1", echo)
    net.on_event("dc1-h2", read)
    net.run(0.05)

    def open_streams(n: int) -> list[int]:
        flows = [net.act("dc1-h2", lambda core, now: core.open_stream(WEB, now)) for _ in range(n)]
        for flow in flows:

            def send(core: HostStack, now: float, s: int = flow.socket_id) -> None:
                core.stream_send(s, b"hello", now)

            net.act("dc1-h2", send)
        return [f.socket_id for f in flows]

    open_streams(50)  # the first streams grow the tables and the code's caches once
    net.run(2.0)
    gc.collect()
    tracemalloc.start(2)
    try:
        before = tracemalloc.take_snapshot()
        held = open_streams(STREAMS)
        net.run(5.0)  # echoed, acknowledged, idle: every delayed ACK and retransmission done
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Only what scaffold's code allocated (the standard library's calls from it too), not
    # what a thread that another test left behind might allocate meanwhile.
    ours = [tracemalloc.Filter(True, scaffold.__file__.rsplit("/", 1)[0] + "/*", all_frames=True)]
    kept = sum(
        stat.size_diff
        for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    client = net.host("dc1-h2")
    flows = [client.flows[s] for s in held]
    assert all(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in flows)
    assert all(f.transport is not None and f.transport.receive_offset == 5 for f in flows)  # echoed
    assert len(net.host("dc1-h1").flows) == len(client.flows) == STREAMS + 50
    per_end = kept / (2 * STREAMS)
    assert per_end <= BUDGET_PER_END, f"{per_end:.0f} bytes per idle stream end"
