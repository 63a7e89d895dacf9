"""What opening and accepting a stream cost the host stack, counted, not timed.

A setup through the ingress runs cold: setups come milliseconds apart and other processes
evict the caches in between, so a step costs by the code it touches -- the distinct
functions -- more than by its calls (docs/gateway.md, "Opening a stream, cold"). These
tests pin both for the two steps on a setup's critical path: the client's ``open_stream``
with a request in its SYN, and the server's reading of that SYN and sending its SYN-ACK.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType

from conftest import WEB
from scaffold.core.events import Packet
from scaffold.core.host import HostStack
from scaffold.core.topology import default_topology
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import StreamConnection
from scaffold.wire import header as wire_header
from scaffold.wire import stream as wire_stream
from scaffold.wire.header import HEADER_LEN

REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n".ljust(50, b"x")  # 50 bytes, in the SYN
NOW = 10.0

# Just above what the steps cost now (open 68 calls / 43 functions, accept 111 / 59; before
# the path-MTU search was deferred and the SYN parsed once: 87 / 56 and 129 / 71), so that
# touching more code fails here.
OPEN_CALLS, OPEN_FUNCTIONS = 69, 44
ACCEPT_CALLS, ACCEPT_FUNCTIONS = 112, 60


def work(action: Callable[[], object]) -> tuple[int, int]:
    """(Python and builtin calls, distinct Python functions) while ``action`` runs."""
    calls = 0
    functions: set[CodeType] = set()

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1
            functions.add(frame.f_code)
        elif event == "c_call":
            calls += 1

    sys.setprofile(count)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls - 1, len(functions) - 1  # not ``action`` itself


def hosts() -> tuple[HostStack, HostStack]:
    """A client and a server host of the default topology, registered, ``web`` bound on the
    server, and both told their gateway link's MTU as the runtime does (§4.2.6)."""
    net = SimNetwork(default_topology(), seed=5)
    net.start()
    net.settle()
    client, server = net.host("north-h1"), net.host("east-h1")
    for host in (client, server):
        host.set_path_limit(host.gateway, 9000 - 28, NOW)
    server.bind(WEB, 1, "web")
    return client, server


def syn_for(client: HostStack, server: HostStack) -> bytes:
    """The SYN the client queued, as the object switches deliver it to the server."""
    ((_, queued),) = client.datagrams_to_send(NOW)
    packet = bytes(queued)
    h = wire_header.parse(packet).with_dst(server.dc_id, server.host_id, 0)
    return wire_header.encode(h, packet[HEADER_LEN:])


def accept(server: HostStack, syn: bytes, replies: list[Packet]) -> None:
    """The server's step: the SYN in, its SYN-ACK out, its events taken."""
    server.receive_datagram(syn, server.gateway, NOW)
    replies.extend(packet for _, packet in server.datagrams_to_send(NOW))
    while server.next_event() is not None:
        pass


def test_opening_a_stream_with_data_on_syn_touches_few_functions() -> None:
    client, server = hosts()
    client.open_stream(WEB, NOW, data=REQUEST)  # the first one files things once
    client.datagrams_to_send(NOW)
    calls, functions = work(lambda: client.open_stream(WEB, NOW, data=REQUEST))
    assert calls <= OPEN_CALLS and functions <= OPEN_FUNCTIONS, (calls, functions)
    syn = wire_stream.parse(syn_for(client, server)[HEADER_LEN:])
    assert syn.type is wire_stream.StreamType.SYN and syn.payload == REQUEST


def test_accepting_a_stream_and_answering_its_syn_touches_few_functions() -> None:
    client, server = hosts()
    client.open_stream(WEB, NOW, data=REQUEST)
    accept(server, syn_for(client, server), [])  # the first one files things once
    client.open_stream(WEB, NOW, data=REQUEST)
    syn = syn_for(client, server)
    replies: list[Packet] = []
    calls, functions = work(lambda: accept(server, syn, replies))
    assert calls <= ACCEPT_CALLS and functions <= ACCEPT_FUNCTIONS, (calls, functions)
    (reply,) = replies
    syn_ack = wire_stream.parse(bytes(reply[HEADER_LEN:]))
    assert syn_ack.type is wire_stream.StreamType.SYN_ACK and syn_ack.ack == len(REQUEST)
    stream = next(reversed(server.flows.values())).transport
    assert stream is not None and stream.readable == len(REQUEST)  # the SYN's data was taken


def test_a_stream_builds_its_path_mtu_search_at_its_first_probe_as_it_would_have_begun() -> None:
    # A ceiling known when the stream starts only defers the search (docs/protocol.md §4.2.6):
    # until a probe is due nothing differs from a search begun at once, on the wire or in time.
    def exchange(deferred: bool) -> tuple[list[bytes], list[tuple[float | None, float | None]]]:
        client = StreamConnection("client", 7, NOW, mss_ceiling=8000 if deferred else 0)
        if not deferred:
            assert client._sender.pmtu is not None  # built before its ceiling, then given it
            client.set_mss_ceiling(8000, NOW)
        assert (client._sender.search is None) is deferred
        server = StreamConnection("server", 7, NOW)
        client.send(bytes(5000))
        client.connect(NOW)
        segments: list[bytes] = []
        deadlines = []
        now = NOW
        for _ in range(8):
            now += 0.01
            for segment in client.segments_to_send(now):
                segments.append(segment)
                server.receive_segment(segment, now)
            for segment in server.segments_to_send(now):
                segments.append(segment)
                client.receive_segment(segment, now)
            server.read()
            deadlines.append(client.deadlines())
        assert client._sender.search is not None  # more than a segment to send: it probed
        return segments, deadlines

    deferred = exchange(deferred=True)
    assert any(wire_stream.parse(s).type is wire_stream.StreamType.PROBE for s in deferred[0])
    assert deferred == exchange(deferred=False)
