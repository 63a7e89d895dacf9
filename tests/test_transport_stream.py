"""The sans-IO stream state machine (scaffold.transport, docs/protocol.md §4.2).

Two connections are wired together by :class:`Network`, a deterministic in-memory link driven
by explicit virtual time: a priority queue of (deliver time, sequence, destination, bytes),
a one-way delay, an optional line rate, and seeded loss, reordering and duplication.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import pytest

from scaffold.errors import BrokenPathError, MalformedPacket, UsageError
from scaffold.transport import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Reset,
    Resumed,
    SendSpaceAvailable,
    StreamConnection,
    StreamEvent,
    StreamOptions,
    StreamSnapshot,
    StreamState,
)
from scaffold.wire import stream as wire
from scaffold.wire.stream import StreamFlags, StreamSegment, StreamType

NONCE = 0x5CAF_F01D_0000_0001
MIB = 1024 * 1024


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Endpoint:
    """A connection plus a tiny application: writes ``to_send``, reads into ``received``."""

    conn: StreamConnection
    to_send: bytes = b""
    sent: int = 0
    #: write again only after a SendSpaceAvailable event once a send() came up short.
    writable: bool = True
    shutdown_when_sent: bool = False
    reading: bool = True
    received: bytearray = field(default_factory=bytearray)
    events: list[StreamEvent] = field(default_factory=list)

    def step(self, now: float) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, SendSpaceAvailable):
                self.writable = True
        if conn.state is StreamState.CLOSED:
            if self.reading:
                self.received += conn.read()
            return
        if self.writable and self.sent < len(self.to_send):
            chunk = self.to_send[self.sent : self.sent + 1024 * 1024]
            accepted = conn.send(chunk)
            self.sent += accepted
            self.writable = accepted == len(chunk)
        if (
            self.shutdown_when_sent
            and self.sent == len(self.to_send)
            and conn.state in (StreamState.ESTABLISHED, StreamState.CLOSE_WAIT)
        ):
            conn.shutdown(now)
        if self.reading:
            self.received += conn.read()

    def has(self, kind: type) -> bool:
        return any(isinstance(event, kind) for event in self.events)


class Network:
    def __init__(
        self,
        client: StreamConnection,
        server: StreamConnection,
        *,
        delay: float = 0.005,
        rate: float | None = 100e6,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.ends = [Endpoint(client), Endpoint(server)]
        self.now = 0.0
        self.delay = delay
        self.rate = rate
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.random = random.Random(seed)
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.counter = 0
        self.busy_until = [0.0, 0.0]
        self.cut = False
        self.segments = [0, 0]
        #: when set, per-direction counts of segment types (costs a parse per segment).
        self.trace: list[Counter[StreamType]] | None = None
        self.checks: list[Callable[[Network], None]] = []

    @property
    def client(self) -> Endpoint:
        return self.ends[0]

    @property
    def server(self) -> Endpoint:
        return self.ends[1]

    def transmit(self, source: int, data: bytes) -> None:
        self.segments[source] += 1
        if self.trace is not None:
            self.trace[source][wire.parse(data).type] += 1
        if self.cut or self.random.random() < self.loss:
            return
        at = self.now
        if self.rate:
            serialization = len(data) * 8 / self.rate
            at = self.busy_until[source] = max(at, self.busy_until[source]) + serialization
        at += self.delay
        if self.random.random() < self.reorder:
            at += self.random.uniform(0.0, 2 * self.delay)
        self.push(at, 1 - source, data)
        if self.random.random() < self.duplicate:
            self.push(at + self.random.uniform(0.0, self.delay), 1 - source, data)

    def push(self, at: float, destination: int, data: bytes) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, destination, data))

    def step_apps(self) -> None:
        for end in self.ends:
            end.step(self.now)
        for index, end in enumerate(self.ends):
            for data in end.conn.segments_to_send(self.now):
                self.transmit(index, data)
        for check in self.checks:
            check(self)

    def run(
        self,
        until: Callable[[], bool],
        *,
        max_time: float = 60.0,
        max_steps: int = 500_000,
    ) -> None:
        for _ in range(max_steps):
            self.step_apps()
            if until():
                return
            candidates = [self.queue[0][0]] if self.queue else []
            candidates += [t for end in self.ends if (t := end.conn.get_timer()) is not None]
            assert candidates, "deadlock: nothing in flight and no timer armed"
            self.now = max(self.now, min(candidates))
            assert self.now <= max_time, f"not done by virtual time {max_time}"
            while self.queue and self.queue[0][0] <= self.now:
                _, _, destination, data = heapq.heappop(self.queue)
                self.ends[destination].conn.receive_segment(data, self.now)
            for end in self.ends:
                timer = end.conn.get_timer()
                if timer is not None and timer <= self.now:
                    end.conn.handle_timer(self.now)
        raise AssertionError(f"not done after {max_steps} steps")


def pair(options: StreamOptions | None = None) -> tuple[StreamConnection, StreamConnection]:
    options = StreamOptions() if options is None else options
    client = StreamConnection("client", NONCE, 0.0, options)
    server = StreamConnection("server", NONCE, 0.0, options)
    client.connect(0.0)
    return client, server


class Conditions(TypedDict, total=False):
    """The path's conditions: ``Network``'s keyword arguments."""

    delay: float
    rate: float | None
    loss: float
    duplicate: float
    reorder: float
    seed: int


def connected_network(**conditions: Unpack[Conditions]) -> Network:
    client, server = pair()
    net = Network(client, server, **conditions)
    net.run(lambda: net.client.has(Connected) and net.server.has(Connected))
    return net


def both_closed(net: Network) -> Callable[[], bool]:
    return lambda: all(end.conn.state is StreamState.CLOSED for end in net.ends)


def check_flow_control(net: Network) -> None:
    """Sender memory bounded by its send buffer; never more outstanding than the window."""
    for index, end in enumerate(net.ends):
        conn, peer = end.conn, net.ends[1 - index].conn
        assert conn.buffered <= conn.options.send_buffer
        # Never beyond the right edge the peer advertised (+1: a FIN may sit on the edge),
        # and that edge never beyond the free space of the peer's receive buffer.
        assert conn.outstanding <= conn.stats.peer_window + 1
        assert conn.peer_window_edge <= peer.receive_offset + peer.options.recv_buffer + 1
        assert peer.readable <= peer.options.recv_buffer


# -- handshake -------------------------------------------------------------------------------------


def test_handshake() -> None:
    net = connected_network()
    client, server = net.client.conn, net.server.conn
    assert client.state is StreamState.ESTABLISHED
    assert server.state is StreamState.ESTABLISHED
    assert net.client.events[0] == Connected()
    assert net.server.events[0] == Connected()
    assert client.stats.srtt == pytest.approx(0.010, abs=0.001)
    assert net.now == pytest.approx(0.015, abs=0.001)  # SYN, SYN-ACK, ACK
    assert client.drops == server.drops == {}


def test_handshake_survives_lost_syn_and_syn_ack() -> None:
    client, server = pair()
    net = Network(client, server)
    net.cut = True
    net.step_apps()  # the SYN is lost
    net.cut = False
    net.run(lambda: server.state is StreamState.SYN_RECEIVED)
    net.cut = True
    net.step_apps()  # the SYN-ACK is lost
    net.cut = False
    net.run(lambda: net.client.has(Connected) and net.server.has(Connected), max_time=5.0)
    assert net.now > 1.0  # the initial RTO


def test_connect_twice_is_usage_error() -> None:
    client, server = pair()
    with pytest.raises(UsageError):
        client.connect(0.0)
    with pytest.raises(UsageError):
        server.connect(0.0)


# -- bulk transfer ---------------------------------------------------------------------------------


def start_transfer(net: Network, up: bytes, down: bytes) -> None:
    """Client sends ``up``, server sends ``down``, both shut down when done."""
    net.client.to_send, net.server.to_send = up, down
    net.client.shutdown_when_sent = net.server.shutdown_when_sent = True
    net.checks.append(check_flow_control)


def all_received(net: Network) -> Callable[[], bool]:
    up, down = net.client.to_send, net.server.to_send
    return lambda: len(net.server.received) == len(up) and len(net.client.received) == len(down)


def finish_transfer(net: Network, *, max_time: float = 60.0) -> None:
    net.run(both_closed(net), max_time=max_time)
    assert bytes(net.client.received) == net.server.to_send
    assert bytes(net.server.received) == net.client.to_send
    for end in net.ends:
        reasons = [e.reason for e in end.events if isinstance(e, ConnectionTerminated)]
        assert reasons == ["closed"]
        assert end.has(EndOfStream)
        assert end.conn.error is None


def transfer(net: Network, up: bytes, down: bytes, *, max_time: float = 60.0) -> None:
    start_transfer(net, up, down)
    finish_transfer(net, max_time=max_time)


def test_bulk_4mib_both_directions_lossless() -> None:
    net = connected_network()
    start = net.now
    start_transfer(net, pattern(4 * MIB, 1), pattern(4 * MIB, 2))
    net.run(all_received(net))
    # Each direction has its own 100 Mbit/s (12.5 MB/s) line: 4 MiB is 0.34 s of
    # serialization plus slow start; expect well over half the line rate.
    assert 4 * MIB / (net.now - start) > 7e6
    finish_transfer(net)
    client = net.client.conn
    assert client.stats.bytes_retransmitted == 0
    assert client.stats.retransmit_timeouts == 0
    assert client.drops == {} and net.server.conn.drops == {}


def test_delayed_acks_halve_ack_traffic() -> None:
    net = connected_network()
    net.trace = [Counter(), Counter()]
    transfer(net, pattern(1 * MIB, 3), b"")
    data_segments = net.trace[0][StreamType.DATA] + net.trace[0][StreamType.FIN]
    acks = net.trace[1][StreamType.DATA]
    assert data_segments >= MIB // 1200
    assert acks < 0.6 * data_segments


def test_bulk_with_loss_reordering_and_duplication() -> None:
    net = connected_network(loss=0.05, duplicate=0.02, reorder=0.05, seed=7)
    up, down = pattern(4 * MIB, 3), pattern(1 * MIB, 4)
    transfer(net, up, down, max_time=120.0)
    stats = net.client.conn.stats
    assert stats.bytes_retransmitted > 0
    assert stats.loss_episodes > 0
    assert net.server.conn.stats.duplicate_segments > 0


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_small_transfers_under_heavy_loss(seed: int) -> None:
    client, server = pair(StreamOptions(recv_buffer=16 * 1024, send_buffer=8 * 1024))
    net = Network(client, server, loss=0.2, duplicate=0.1, reorder=0.2, seed=seed)
    transfer(net, pattern(200_000, seed), pattern(50_000, seed + 1), max_time=300.0)


# -- half-close and reset --------------------------------------------------------------------------


def test_half_close() -> None:
    net = connected_network()
    client, server = net.client.conn, net.server.conn
    client.send(b"GET /object")
    client.shutdown(net.now)
    assert client.state is StreamState.FIN_WAIT
    with pytest.raises(UsageError):
        client.send(b"more")
    net.run(lambda: net.server.has(EndOfStream))
    assert bytes(net.server.received) == b"GET /object"
    assert server.state is StreamState.CLOSE_WAIT
    # The server can still answer on its half, and the client still reads.
    reply = pattern(300_000, 5)
    net.server.to_send = reply
    net.server.shutdown_when_sent = True
    net.run(both_closed(net))
    assert bytes(net.client.received) == reply
    # The client closed first, so it lingered in TIME_WAIT; the server closed last.
    assert net.client.events[-1] == ConnectionTerminated("closed")
    assert net.server.events[-1] == ConnectionTerminated("closed")


def test_close_discards_incoming_data_but_finishes() -> None:
    net = connected_network()
    client = net.client.conn
    client.close(net.now)
    with pytest.raises(UsageError):
        client.read()
    net.server.to_send = pattern(100_000, 6)
    net.server.shutdown_when_sent = True
    net.client.reading = False
    net.run(both_closed(net))
    assert net.server.events[-1] == ConnectionTerminated("closed")


def test_reset() -> None:
    net = connected_network()
    net.server.to_send = pattern(1 * MIB, 7)
    net.run(lambda: len(net.client.received) > 100_000)
    net.client.conn.abort(net.now)
    net.run(both_closed(net))
    assert net.client.events[-1] == ConnectionTerminated("aborted")
    assert net.client.conn.error is None
    assert net.server.has(Reset)
    assert net.server.events[-1] == ConnectionTerminated("reset")
    assert isinstance(net.server.conn.error, BrokenPathError)
    with pytest.raises(UsageError):
        net.server.conn.send(b"x")


# -- flow control ----------------------------------------------------------------------------------


def test_stalled_reader_bounds_sender_and_resumes() -> None:
    client, server = pair(StreamOptions(recv_buffer=64 * 1024, send_buffer=32 * 1024))
    net = Network(client, server)
    net.checks.append(check_flow_control)
    data = pattern(1 * MIB, 8)
    net.client.to_send = data
    net.client.shutdown_when_sent = True
    net.run(lambda: net.server.has(Connected))
    net.server.reading = False
    net.trace = [Counter(), Counter()]
    stall = net.now
    net.run(lambda: net.now >= stall + 2.0)
    # The receiver holds exactly a full window, all acknowledged; the sender keeps the rest
    # (no more than its send buffer) and sends nothing beyond the closed window.
    assert server.readable == 64 * 1024
    assert client.outstanding == 0
    assert 0 < client.buffered <= 32 * 1024
    assert net.client.sent == len(net.server.received) + 64 * 1024 + client.buffered
    assert not net.client.writable  # its last send() came up short
    # Zero-window probes on the persist timer, backing off to 1 s: a handful, not a flood.
    assert net.trace is not None
    assert 1 <= net.trace[0][StreamType.KEEPALIVE] <= 6
    assert server.drops == {}
    net.server.reading = True
    net.server.shutdown_when_sent = True
    net.run(both_closed(net))
    assert bytes(net.server.received) == data
    assert net.client.has(SendSpaceAvailable)
    assert server.drops == {}


def test_zero_window_probe_recovers_lost_window_update() -> None:
    client, server = pair(StreamOptions(recv_buffer=8 * 1024))
    net = Network(client, server)
    net.client.to_send = pattern(100_000, 9)
    net.run(lambda: net.server.has(Connected))
    net.server.reading = False
    net.run(lambda: server.readable == 8 * 1024 and not net.queue)
    net.server.reading = True
    net.cut = True
    net.step_apps()  # the window update is lost: only the persist probe can restart us
    net.cut = False
    net.run(lambda: len(net.server.received) == 100_000, max_time=10.0)
    assert bytes(net.server.received) == net.client.to_send


# -- migration: export / restore -------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_export_and_restore_mid_transfer(which: int) -> None:
    net = connected_network(loss=0.03, reorder=0.05, seed=21)
    up, down = pattern(2 * MIB, 10), pattern(2 * MIB, 11)
    net.client.to_send, net.server.to_send = up, down
    net.client.shutdown_when_sent = net.server.shutdown_when_sent = True
    net.run(lambda: len(net.ends[which].received) > MIB)
    end = net.ends[which]
    end.step(net.now)  # drain events, as the host stack does before exporting
    blob = end.conn.export_state()
    assert isinstance(blob, bytes)
    old = end.conn
    restored = StreamConnection.from_state(blob, net.now + 0.05)
    assert restored.snapshot() == StreamConnection.from_state(old.snapshot(), 0.0).snapshot()
    assert restored.state is old.state and restored.stats.bytes_acked == old.stats.bytes_acked
    end.conn = restored
    net.now += 0.05  # the move takes 50 ms; packets for the old host keep arriving
    net.run(both_closed(net), max_time=120.0)
    assert bytes(net.client.received) == down
    assert bytes(net.server.received) == up


def test_restore_rejects_garbage() -> None:
    with pytest.raises(MalformedPacket):
        StreamConnection.from_state(b"\x01\x02garbage", 0.0)


# -- untrusted input -------------------------------------------------------------------------------


def segment_for(
    conn: StreamConnection,
    *,
    type: StreamType = StreamType.DATA,
    nonce: int = NONCE,
    flags: int = StreamFlags.ACK,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
) -> bytes:
    segment = StreamSegment(type, nonce, seq=seq, ack=ack, window=65536, flags=flags, payload=payload)
    return wire.encode(segment)


def test_bad_nonce_out_of_window_and_malformed_are_dropped() -> None:
    net = connected_network()
    server = net.server.conn
    before = server.stats.bytes_received
    server.receive_segment(segment_for(server, nonce=NONCE ^ 1, payload=b"evil"), net.now)
    assert server.drops == {"bad-nonce": 1}
    far = server.receive_offset + server.options.recv_buffer + 10
    server.receive_segment(segment_for(server, seq=far, payload=b"evil"), net.now)
    assert server.drops["out-of-window"] == 1
    # Like TCP, an unacceptable segment is answered with an ACK of the current state.
    replies = [wire.parse(data) for data in server.segments_to_send(net.now)]
    assert [(r.type, r.ack, len(r.payload)) for r in replies] == [(StreamType.DATA, 0, 0)]
    server.receive_segment(segment_for(server, ack=10**9), net.now)  # acks unsent data
    assert server.drops["bad-ack"] == 1
    server.receive_segment(b"\x03\x01", net.now)
    server.receive_segment(b"\x63" + bytes(60), net.now)
    assert server.drops["truncated"] == 1 and server.drops["bad-stream-type"] == 1
    assert server.stats.bytes_received == before
    assert server.state is StreamState.ESTABLISHED
    # The flow is unharmed.
    net.client.to_send = b"after the noise"
    net.run(lambda: bytes(net.server.received) == b"after the noise")


def test_random_garbage_never_raises() -> None:
    net = connected_network()
    rng = random.Random(5)
    valid = segment_for(net.server.conn, payload=b"x" * 20)
    for _ in range(2000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        net.server.conn.receive_segment(bytes(data), net.now)
        net.server.conn.receive_segment(rng.randbytes(rng.randint(0, 80)), net.now)


# -- liveness --------------------------------------------------------------------------------------


def test_retry_limit_when_peer_disappears() -> None:
    net = connected_network()
    net.client.to_send = pattern(1 * MIB, 12)
    net.run(lambda: len(net.server.received) > 200_000)
    cut_at = net.now
    net.cut = True
    client = net.client.conn
    net.run(lambda: client.state is StreamState.CLOSED, max_time=cut_at + 45)
    assert net.client.events[-1] == ConnectionTerminated("retry-limit")
    assert isinstance(client.error, BrokenPathError)
    # 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 6 x 4 s: the default min RTO, backoff capped at
    # max_rto = 4 s, and max_retries = 10.
    assert net.now - cut_at == pytest.approx(30.2, abs=0.5)


def test_retry_limit_is_configurable() -> None:
    client, server = pair(StreamOptions(min_rto=0.05, max_retries=2))
    net = Network(client, server)
    net.run(lambda: net.server.has(Connected))
    net.client.to_send = b"x" * 10_000
    net.cut = True
    cut_at = net.now
    net.run(lambda: client.state is StreamState.CLOSED, max_time=10)
    assert net.client.events[-1] == ConnectionTerminated("retry-limit")
    assert net.now - cut_at == pytest.approx(0.05 + 0.1 + 0.2, abs=0.03)


def test_handshake_timeout() -> None:
    client = StreamConnection("client", NONCE, 0.0, StreamOptions(max_retries=2))
    client.connect(0.0)
    now = 0.0
    syns = 0
    while client.state is not StreamState.CLOSED:
        syns += len(client.segments_to_send(now))
        timer = client.get_timer()
        assert timer is not None
        now = timer
        client.handle_timer(now)
    assert syns == 3
    assert now == pytest.approx(1 + 2 + 4)
    assert client.next_event() == ConnectionTerminated("handshake-timeout")
    assert isinstance(client.error, BrokenPathError)


def test_keepalive_and_idle_timeout() -> None:
    client, server = pair(StreamOptions(keepalive=5.0, idle_timeout=12.0))
    net = Network(client, server)
    net.run(lambda: net.server.has(Connected))
    sent = list(net.segments)
    net.run(lambda: net.now >= 30.0)
    # Keepalives kept the idle flow alive and cost a couple of segments per period.
    assert client.state is server.state is StreamState.ESTABLISHED
    assert 2 <= net.segments[0] - sent[0] <= 14
    net.cut = True
    net.run(both_closed(net), max_time=50.0)
    assert net.client.events[-1] == ConnectionTerminated("idle-timeout")
    assert isinstance(server.error, BrokenPathError)


@pytest.mark.parametrize("in_syn", [True, False])
def test_a_client_probes_soon_when_its_acknowledged_request_gets_no_answer(in_syn: bool) -> None:
    """The server's host dies after acknowledging a request, before answering it: the client
    stall-probes (0.25 s, 0.75 s, ...), as it would mid-response, so the network can re-resolve
    the flow (§5.1) -- not a 15 s keepalive later. Whether the request rode in the SYN or not."""
    client = StreamConnection("client", NONCE, 0.0, StreamOptions())
    server = StreamConnection("server", NONCE, 0.0, StreamOptions())
    if in_syn:
        client.send(b"GET /slow")  # data on SYN (§4.2.7), as the HTTP ingress sends
    client.connect(0.0)
    net = Network(client, server)
    if not in_syn:
        net.run(lambda: net.client.has(Connected))
        net.client.to_send = b"GET /slow"
    net.run(lambda: net.server.received == b"GET /slow" and client.deadlines()[0] is None)
    acked = net.now  # nothing of the client's is outstanding; the server stays silent
    net.trace = [Counter(), Counter()]
    net.run(lambda: net.now >= acked + 2.0)
    assert net.trace[0][StreamType.KEEPALIVE] >= 2  # 0.25 s, 0.75 s (1.75 s) after the ACK
    # An answer, then its FIN: the exchange is over, a plain keepalive (15 s) follows.
    net.server.to_send, net.server.shutdown_when_sent = b"200 OK", True
    net.run(lambda: net.client.received == b"200 OK" and client.state is StreamState.CLOSE_WAIT)
    assert client.deadlines()[1] == pytest.approx(net.now + 15.0, abs=0.1)


# -- RESUME ----------------------------------------------------------------------------------------


def test_resume_on_a_new_host() -> None:
    """Server A dies mid-flow; the network delivers the flow to B, which knows nothing."""
    content = pattern(1 * MIB, 13)  # what any replica serves: a deterministic object
    net = connected_network(loss=0.02, seed=3)
    net.client.to_send = b"request:" + b"r" * 50_000
    net.server.to_send = content
    net.run(lambda: len(net.client.received) > 300_000 and net.server.sent > 400_000)
    client = net.client.conn
    # A vanishes with its state; its in-flight packets are lost. B gets the next packet.
    net.queue = [item for item in net.queue if item[2] == 0]
    replacement = StreamConnection.resume(NONCE, net.now)
    assert replacement.state is StreamState.RESUMING
    net.ends[1] = Endpoint(replacement)
    net.run(lambda: net.ends[1].has(Resumed))
    resumed = next(e for e in net.ends[1].events if isinstance(e, Resumed))
    # B continues the object from the first byte the client has not received, and expects
    # the client's bytes from the first one A had not acknowledged.
    assert resumed.send_offset == len(net.client.received) == client.receive_offset
    assert resumed.receive_offset <= len(net.client.to_send)
    assert replacement.send_offset == resumed.send_offset
    assert replacement.receive_offset == resumed.receive_offset
    assert any(isinstance(e, Resumed) for e in net.client.events)
    b = net.ends[1]
    b.to_send, b.sent = content, resumed.send_offset
    b.shutdown_when_sent = net.client.shutdown_when_sent = True
    net.run(both_closed(net), max_time=60.0)
    assert bytes(net.client.received) == content
    expected_tail = net.client.to_send[resumed.receive_offset :]
    assert bytes(b.received) == expected_tail


def test_resume_unanswered_times_out() -> None:
    conn = StreamConnection.resume(NONCE, 0.0, options=StreamOptions(max_retries=1))
    now = 0.0
    assert wire.parse(conn.segments_to_send(now)[0]).type is StreamType.RESUME
    while conn.state is not StreamState.CLOSED:
        timer = conn.get_timer()
        assert timer is not None
        now = timer
        conn.handle_timer(now)
        conn.segments_to_send(now)
    assert conn.next_event() == ConnectionTerminated("handshake-timeout")


def test_resume_for_unknown_flow_is_dropped_by_idle_server() -> None:
    server = StreamConnection("server", NONCE, 0.0)
    server.receive_segment(segment_for(server, type=StreamType.RESUME, flags=0), 0.0)
    assert server.drops == {"unexpected": 1}


# -- API surface -----------------------------------------------------------------------------------


def test_events_are_frozen_and_coalesced() -> None:
    net = connected_network()
    net.client.conn.send(b"a" * 5000)
    net.server.reading = False
    net.run(lambda: net.server.conn.readable == 5000)
    received = [e for e in net.server.events if isinstance(e, DataReceived)]
    assert sum(e.length for e in received) == 5000
    with pytest.raises(AttributeError):
        received[0].length = 1  # type: ignore[misc]


def test_send_returns_what_fits() -> None:
    client = StreamConnection("client", NONCE, 0.0, StreamOptions(send_buffer=1000))
    assert client.send(b"x" * 600) == 600
    assert client.send(b"y" * 600) == 400
    assert client.send(b"z") == 0
    assert client.send_buffer_space() == 0


def test_invalid_options() -> None:
    with pytest.raises(UsageError):
        StreamConnection("peer", NONCE, 0.0)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        StreamConnection("client", 2**64, 0.0)
    with pytest.raises(UsageError):
        StreamConnection("client", NONCE, 0.0, StreamOptions(mss=0))


def test_snapshot_is_a_typed_record() -> None:
    net = connected_network()
    snapshot = net.client.conn.snapshot()
    assert isinstance(snapshot, StreamSnapshot)
    assert snapshot.nonce == NONCE and snapshot.state == "established"
