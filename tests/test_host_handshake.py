"""Handshakes in a whole simulated network (docs/protocol.md §4.2.7 - §4.2.9, §4.3): data on SYN
across a replica's death, RETRY under load, NOT_HERE from a host whose listener just went,
bounded answers to forged sources, signals that are only hints."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from scaffold.core.host import Flow, HostStack, StreamEventFor
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.ratelimit import TokenBucket
from scaffold.core.topology import default_topology
from scaffold.errors import UsageError
from scaffold.ids import ObjectId
from scaffold.runtime.sim import EventHandler, SimNetwork
from scaffold.transport import ConnectionTerminated, DataReceived, StreamState
from scaffold.wire import header as wire_header
from scaffold.wire import signal as wire_signal
from scaffold.wire import stream as wire_stream
from scaffold.wire.header import HEADER_LEN, Flags, Header, Proto
from scaffold.wire.stream import StreamSegment, StreamType

WEB = ObjectId.from_name("web")
CLIENT = "north-h1"


class Echo:
    """A server that echoes what each stream brings; remembers who got what."""

    def __init__(self) -> None:
        self.received: Counter[tuple[str, bytes]] = Counter()

    def handler(self, name: str) -> EventHandler:
        def on_event(stack: HostStack, event: object, now: float) -> None:
            if (
                isinstance(event, StreamEventFor)
                and isinstance(event.event, DataReceived)
                and event.socket_id in stack.flows
            ):
                data = stack.stream_read(event.socket_id, -1, now)
                self.received[name, data] += 1
                stack.stream_send(event.socket_id, data, now)

        return on_event


class Client:
    """Collects each stream's echo and how it ended."""

    def __init__(self) -> None:
        self.echo: dict[int, bytes] = {}
        self.ended: dict[int, str] = {}

    def __call__(self, stack: HostStack, event: object, now: float) -> None:
        if not isinstance(event, StreamEventFor):
            return
        if isinstance(event.event, DataReceived) and event.socket_id in stack.flows:
            self.echo[event.socket_id] = self.echo.get(event.socket_id, b"") + stack.stream_read(
                event.socket_id, -1, now
            )
        elif isinstance(event.event, ConnectionTerminated):
            self.ended[event.socket_id] = event.event.reason


def network(replicas: tuple[str, ...], seed: int = 3) -> tuple[SimNetwork, Echo, Client]:
    net = SimNetwork(default_topology(), seed=seed)
    net.start()
    net.settle()
    echo = Echo()
    for name in replicas:
        net.act(name, lambda core, now: core.bind(WEB, 1, "web"))
        net.on_event(name, echo.handler(name))
    client = Client()
    net.on_event(CLIENT, client)
    net.run(0.1)
    return net, echo, client


def choice(switch: ObjectSwitch, flow: int) -> tuple[int, int]:
    """The (DC ID, Host ID) ``switch`` picks for the first packet of ``flow`` to web."""
    picked = switch.resolve(WEB.raw, flow)
    assert picked is not None
    return picked


def open_stream(net: SimNetwork, data: bytes) -> Flow:
    """The client opens a stream to web with ``data`` on its SYN."""

    def act(core: HostStack, now: float) -> Flow:
        return core.open_stream(WEB, now, data=data)

    flow: Flow = net.act(CLIENT, act)
    return flow


def test_data_on_syn_reaches_a_surviving_replica_when_the_first_dies_before_answering() -> None:
    net, echo, client = network(("east-h1", "east-h2"))
    east_os = net.switch("east-os")
    assert isinstance(east_os, ObjectSwitch)
    dead_id = net.host("east-h1").host_id
    net.kill("east-h1")  # silent from now on: SYNs sent to it are never answered
    flows = {}
    for i in range(16):
        flow = open_stream(net, b"request-%d" % i)
        flows[flow.socket_id] = flow
    # Before the controller notices, the tables still send some of these SYNs to the dead one.
    first_choice = [choice(east_os, f.flow) for f in flows.values()]
    assert any(host == dead_id for _, host in first_choice if host)
    assert net.run_while(lambda: len(client.echo) < len(flows), timeout=10)
    for socket_id in flows:
        assert client.echo[socket_id] == b"request-%d" % list(flows).index(socket_id)
    # Every request reached the survivor exactly once; the dead replica saw nothing.
    assert sum(echo.received.values()) == len(flows)
    assert {name for name, _ in echo.received} == {"east-h2"}


def test_data_on_syn_with_no_replica_left_ends_in_a_clean_error() -> None:
    net, echo, client = network(("east-h1",))
    net.kill("east-h1")
    flow = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now, data=b"anyone?"))
    assert net.run_while(lambda: flow.socket_id not in client.ended, timeout=10)
    assert client.ended[flow.socket_id] == "object-not-found"
    assert not echo.received and flow.socket_id not in client.echo


def test_under_load_a_syn_gets_state_only_with_the_retry_token_and_keeps_its_data() -> None:
    net, echo, client = network(("east-h1",))
    server = net.host("east-h1")
    server.retry_above = 0  # as if flooded: every SYN must prove its source first
    flows = [open_stream(net, b"data-%d" % i) for i in range(5)]
    assert net.run_while(lambda: len(client.echo) < 5, timeout=5)
    assert server.counters["syn-retry"] == 5
    assert sorted(client.echo.values()) == sorted(b"data-%d" % i for i in range(5))
    assert sum(echo.received.values()) == 5  # each taken once, after the token
    assert all(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in flows)


def test_a_syn_to_a_host_whose_listener_just_closed_reaches_the_other_replica_in_milliseconds() -> None:
    """The replica on east-h1 is withdrawn: its listener closes at once, but the object
    switches learn it only when the controller's tables arrive (here 0.1 s later). The SYNs
    they send to east-h1 meanwhile are answered NOT_HERE, not dropped until the client's
    1 s retransmission timeout."""
    net, echo, client = network(("east-h1", "east-h2"))
    net.control_delay = 0.05  # host -> controller -> object switches: 0.1 s of stale tables
    east_os = net.switch("east-os")
    assert isinstance(east_os, ObjectSwitch)
    gone = net.host("east-h1")
    net.act("east-h1", lambda core, now: core.unbind(WEB))
    start = net.now
    flows = {}
    for i in range(16):
        flow = open_stream(net, b"request-%d" % i)
        flows[flow.socket_id] = (flow, b"request-%d" % i)
    stale = sum(choice(east_os, f.flow)[1] == gone.host_id for f, _ in flows.values())
    assert stale  # some SYNs go to the host that has no listener any more
    assert net.run_while(lambda: len(client.echo) < len(flows), timeout=5)
    assert net.now - start < 0.5  # without the answer: 1 s, the SYN's retransmission timeout
    for socket_id, (_, request) in flows.items():
        assert client.echo[socket_id] == request
    assert {name for name, _ in echo.received} == {"east-h2"}
    assert sum(echo.received.values()) == len(flows)  # each request taken once
    assert gone.counters["no-listener-answered"] >= stale
    assert not gone.drops.get("no-listener") and not net.host(CLIENT).drops
    assert not any(f.proto is Proto.STREAM for f in gone.flows.values())  # it kept no state


def not_here_answer(net: SimNetwork, host: str, syn: bytes) -> list[bytes]:
    """What ``host`` sends, at once, for ``syn``."""
    stack = net.host(host)
    stack.receive_datagram(syn, stack.gateway, net.now)
    return [bytes(data) for _, data in stack.datagrams_to_send(net.now)]


def test_not_here_is_stateless_no_larger_than_its_syn_and_carries_its_nonce() -> None:
    net, _, _ = network(("east-h1",))
    rng = random.Random(5)
    syn = forged_syn(net, "east-h2", "west-h3", rng)  # east-h2 has no listener for web
    (answer,) = not_here_answer(net, "east-h2", syn)
    h, body = wire_header.parse(answer), wire_stream.parse(answer[HEADER_LEN:])
    asked = wire_header.parse(syn)
    assert body == StreamSegment(StreamType.NOT_HERE, wire_stream.parse(syn[HEADER_LEN:]).nonce)
    assert len(answer) <= len(syn)  # no amplification
    assert h.flags == Flags.TO_CLIENT and (h.flow, h.obj) == (asked.flow, asked.obj)
    assert (h.dst_dc, h.dst_host, h.dst_socket) == (asked.src_dc, asked.src_host, asked.src_socket)
    stack = net.host("east-h2")
    assert stack.counters["no-listener-answered"] == 1 and not stack.flows
    # Anything else for no listener is dropped silently, as before: not a SYN, no source.
    raw = bytearray(syn)
    raw[HEADER_LEN] = StreamType.DATA
    assert not_here_answer(net, "east-h2", bytes(raw)) == []
    sourceless = wire_header.encode(
        Header(Proto.STREAM, 9, WEB.raw, dst_dc=stack.dc_id, dst_host=stack.host_id),
        syn[HEADER_LEN:],
    )
    assert not_here_answer(net, "east-h2", sourceless) == []
    assert stack.drops["no-listener"] == 2 and stack.counters["no-listener-answered"] == 1


def test_not_here_answers_are_rate_limited_and_resume_as_the_bucket_refills() -> None:
    """NOT_HERE goes to a source nothing verified (a forged SYN's victim): at most
    ``not_here_burst`` at once and ``not_here_rate`` a second; a SYN beyond is dropped,
    counted, with no answer and no state."""
    net, _, _ = network(("east-h1",))
    stack = net.host("east-h2")  # no listener for web
    stack.not_here_budget = TokenBucket(100.0, 20)
    rng = random.Random(11)
    syns = [forged_syn(net, "east-h2", "west-h3", rng) for _ in range(60)]
    now = net.now
    answers = 0
    for syn in syns:  # 60 at the same instant: the burst only
        stack.receive_datagram(syn, stack.gateway, now)
        answers += len(stack.datagrams_to_send(now))
    assert answers == 20 and stack.counters["no-listener-answered"] == 20
    assert stack.drops["not-here-rate-limited"] == 40 and not stack.flows
    # 0.105 s later, 10.5 more tokens (100 a second): 10 more answers of 20 SYNs.
    answers = 0
    for syn in syns[:20]:
        stack.receive_datagram(syn, stack.gateway, now + 0.105)
        answers += len(stack.datagrams_to_send(now + 0.105))
    assert answers == 10 and stack.drops["not-here-rate-limited"] == 50


def test_a_token_bucket_refuses_a_bad_rate_and_never_holds_more_than_its_burst() -> None:
    with pytest.raises(UsageError):
        TokenBucket(-1.0, 5)
    with pytest.raises(UsageError):
        TokenBucket(float("nan"), 5)
    with pytest.raises(UsageError):
        TokenBucket(10.0, 0)
    bucket = TokenBucket(10.0, 3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at 3
    assert not bucket.take(99.0)  # time going back refills nothing
    assert [bucket.take(100.25) for _ in range(3)] == [True, True, False]  # 0.25 s: 2.5 tokens


def test_a_not_here_with_the_wrong_nonce_does_not_hurry_the_client() -> None:
    net, _, _ = network(("east-h1",))
    server = net.host("east-h1")
    net.kill("east-h1")  # the SYN goes unanswered: only what we inject comes back
    start = net.now
    flow = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now))
    stack = net.host(CLIENT)
    h = Header(
        Proto.STREAM,
        flow.flow,
        WEB.raw,
        dst_dc=stack.dc_id,
        dst_host=stack.host_id,
        dst_socket=flow.socket_id,
        src_dc=server.dc_id,
        src_host=server.host_id,
        flags=Flags.TO_CLIENT,
    )
    net.run(0.1)
    forged = StreamSegment(StreamType.NOT_HERE, flow.nonce ^ 1)  # an off-path guess
    net.inject(stack.gateway, wire_header.encode(h, wire_stream.encode(forged)))
    net.run(0.1)
    assert stack.drops["bad-nonce"] == 1 and flow.peer_host == 0
    assert flow.transport is not None and flow.transport.state is StreamState.SYN_SENT
    assert flow.transport.get_timer() == pytest.approx(start + 1.0)  # the RTO, unchanged
    # The client's own answer (its nonce) would have hurried it.
    genuine = StreamSegment(StreamType.NOT_HERE, flow.nonce)
    net.inject(stack.gateway, wire_header.encode(h, wire_stream.encode(genuine)))
    net.run(0.001)
    assert flow.transport.get_timer() == pytest.approx(start + 0.2 + 0.015)
    assert flow.peer_host == 0  # it names no peer: the SYN is re-resolved


def test_a_host_that_answers_not_here_forever_ends_the_connect_in_its_usual_time() -> None:
    net, _, client = network(("east-h1",))
    server = net.host("east-h1")
    server.listeners.pop(WEB.raw)  # gone, but the tables will never learn it
    start = net.now
    flow = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now, data=b"hello?"))
    assert net.run_while(lambda: flow.socket_id not in client.ended, timeout=60)
    assert client.ended[flow.socket_id] == "handshake-timeout"
    assert 39.0 < net.now - start < 40.0  # as without any answer: 39 s, and a half
    # The first SYN, five fast retries, then the RTO's ten: each answered once.
    assert server.counters["no-listener-answered"] == 16
    assert flow.transport is not None and flow.transport.drops == {"not-here-ignored": 11}


def forged_syn(net: SimNetwork, server: str, victim: str, rng: random.Random) -> bytes:
    """A SYN for ``web`` at ``server``, claiming to come from ``victim``."""
    target, source = net.host(server), net.host(victim)
    h = Header(
        Proto.STREAM,
        rng.getrandbits(64) or 1,
        WEB.raw,
        dst_dc=target.dc_id,
        dst_host=target.host_id,
        src_dc=source.dc_id,
        src_host=source.host_id,
        src_socket=rng.randrange(1, 2**32),
    )
    syn = StreamSegment(StreamType.SYN, rng.getrandbits(64), window=65536)
    return wire_header.encode(h, wire_stream.encode(syn))


def test_forged_syns_cost_their_victim_at_most_three_packets_each_and_no_lasting_state() -> None:
    net, _, _ = network(("east-h1",))
    server = net.host("east-h1")
    server.retry_above = 40  # the first 40 half-open get state; the rest a RETRY
    rng = random.Random(7)
    for _ in range(200):
        net.inject("east-fs1", forged_syn(net, "east-h1", "west-h3", rng))
    net.run(0.5)
    assert server.counters["syn-retry"] == 160
    assert sum(server._half_open.values()) == 40
    net.run(10.0)  # SYN-ACK at 0, 1, 3 s; the handshake gives up at 7 s
    victim = net.host("west-h3")
    answers = victim.drops["unknown-socket"]
    assert answers == 40 * 3 + 160  # three SYN-ACKs per half-open SYN, one RETRY for the others
    assert not server._half_open and not any(f.proto is Proto.STREAM for f in server.flows.values())


def forged_signal(
    net: SimNetwork, host: str, socket_id: int, flow: int, kind: wire_signal.SignalType
) -> bytes:
    target = net.host(host)
    h = Header(
        Proto.SIGNAL,
        flow,
        WEB.raw,
        dst_dc=target.dc_id,
        dst_host=target.host_id,
        dst_socket=socket_id,
        src_dc=1,
    )
    return wire_header.encode(h, wire_signal.encode(wire_signal.Signal(kind)))


def test_forged_signals_do_not_end_an_established_stream() -> None:
    net, _, client = network(("east-h1",))
    flow = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now, data=b"one"))
    assert net.run_while(lambda: flow.socket_id not in client.echo, timeout=5)
    stack = net.host(CLIENT)
    for kind in (wire_signal.SignalType.OBJECT_NOT_FOUND, wire_signal.SignalType.UNREACHABLE):
        net.inject(stack.gateway, forged_signal(net, CLIENT, flow.socket_id, flow.flow, kind))
        net.run(1.0)  # longer than the verification: the peer's answer refuted it
    assert stack.counters["signal-verify"] == 2
    assert flow.transport is not None and flow.transport.state is StreamState.ESTABLISHED
    net.act(CLIENT, lambda core, now: core.stream_send(flow.socket_id, b"two", now))
    assert net.run_while(lambda: client.echo[flow.socket_id] != b"onetwo", timeout=5)
    assert flow.socket_id not in client.ended
