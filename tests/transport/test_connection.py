"""What StreamConnection adds over its parts: the O(1) timer, lazily held memory, a
runtime MSS, and the public surface (scaffold.transport)."""

from __future__ import annotations

import heapq
import random

import pytest

import scaffold.transport
from scaffold.errors import UsageError
from scaffold.transport import StreamConnection, StreamOptions, StreamState
from scaffold.transport.machine import StreamMachine
from scaffold.wire import stream as wire

NONCE = 0xFEED


def state(conn: StreamConnection) -> StreamState:
    """``conn.state`` read through a call, for an assert that more steps follow: mypy would
    hold the attribute at the asserted value across the calls that change it."""
    return conn.state


class Link:
    """Two connections, a one-way delay, seeded loss; explicit virtual time."""

    def __init__(self, loss: float = 0.0, seed: int = 1, options: StreamOptions | None = None) -> None:
        options = StreamOptions() if options is None else options
        self.ends = [
            StreamConnection("client", NONCE, 0.0, options),
            StreamConnection("server", NONCE, 0.0, options),
        ]
        self.ends[0].connect(0.0)
        self.loss = loss
        self.random = random.Random(seed)
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.now = 0.0
        self.count = 0
        self.sent: list[list[bytes]] = [[], []]
        self.deaf: set[int] = set()  # ends that receive nothing

    def step(self) -> None:
        for index, conn in enumerate(self.ends):
            while conn.next_event() is not None:
                pass
            conn.read()
            for segment in conn.segments_to_send(self.now):
                self.sent[index].append(segment)
                if self.random.random() >= self.loss:
                    self.count += 1
                    heapq.heappush(self.queue, (self.now + 0.005, self.count, 1 - index, segment))
        times = [self.queue[0][0]] if self.queue else []
        times += [t for conn in self.ends if (t := conn.get_timer()) is not None]
        self.now = max(self.now, min(times))
        while self.queue and self.queue[0][0] <= self.now:
            _, _, to, segment = heapq.heappop(self.queue)
            if to not in self.deaf:
                self.ends[to].receive_segment(segment, self.now)
        for conn in self.ends:
            timer = conn.get_timer()
            if timer is not None and timer <= self.now:
                conn.handle_timer(self.now)


def test_get_timer_is_cached_until_the_connection_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    original = StreamMachine._next_deadlines

    def counting(self: StreamMachine) -> tuple[float | None, float | None]:
        computed.append(1)
        return original(self)

    monkeypatch.setattr(StreamMachine, "_next_deadlines", counting)
    conn = StreamConnection("client", NONCE, 0.0)
    conn.connect(0.0)
    conn.segments_to_send(0.0)
    timers = {conn.get_timer() for _ in range(1000)}
    assert timers == {1.0} and len(computed) == 1  # the SYN's RTO, computed once


def test_cached_timer_always_equals_a_fresh_computation() -> None:
    link = Link(loss=0.05, seed=4)
    client, server = link.ends
    client.send(random.Random(2).randbytes(300_000))
    client.shutdown(0.0)
    server.send(b"answer" * 5000)
    while any(conn.state is not StreamState.CLOSED for conn in link.ends):
        link.step()
        for conn in link.ends:
            exact, coarse = conn._next_deadlines()
            assert conn.deadlines() == (exact, coarse)
            assert conn.get_timer() == min((d for d in (exact, coarse) if d is not None), default=None)
        if server.state is StreamState.CLOSE_WAIT and not server.buffered:
            server.shutdown(link.now)
        assert link.now < 60


def test_an_idle_connection_holds_no_buffers() -> None:
    link = Link()
    client, server = link.ends
    while server.state is not StreamState.ESTABLISHED:
        link.step()
    client.send(b"request" * 1000)
    server.send(b"response" * 3000)
    for _ in range(50):
        link.step()
    assert client.outstanding == server.outstanding == 0
    for conn in (client, server):
        sender, receiver = conn._sender, conn._receiver
        assert sender.stream.data is None  # all acknowledged: released
        assert sender.recovery.segments is None
        assert receiver.stream.data is None and receiver.stream.out_of_order is None
        assert conn._events._events is None
        assert not hasattr(conn, "__dict__")


def test_mss_can_change_mid_stream() -> None:
    link = Link(options=StreamOptions(send_buffer=4_000_000))
    client, _ = link.ends
    assert client.mss == 1200

    def payload_sizes_while(run: int) -> list[int]:
        start = len(link.sent[0])
        for _ in range(run):
            link.step()
        return [len(wire.parse(segment).payload) for segment in link.sent[0][start:]]

    client.send(bytes(2_000_000))
    assert max(payload_sizes_while(5)) == 1200
    client.set_mss(500)  # a smaller path MTU: the next segments are cut smaller
    assert max(payload_sizes_while(5)) == 500
    client.set_mss(1400)
    assert max(payload_sizes_while(5)) == 1400
    for bad in (0, 70_000, 1.5):
        with pytest.raises(UsageError):
            client.set_mss(bad)  # type: ignore[arg-type]


def test_public_surface() -> None:
    assert sorted(scaffold.transport.__all__) == [
        "Connected",
        "ConnectionTerminated",
        "DataReceived",
        "EndOfStream",
        "Reset",
        "Resumed",
        "Role",
        "SNAPSHOT_VERSION",
        "SendSpaceAvailable",
        "StreamConnection",
        "StreamEvent",
        "StreamOptions",
        "StreamSnapshot",
        "StreamState",
        "StreamStats",
        "TerminationReason",
    ]
    for name in scaffold.transport.__all__:
        assert getattr(scaffold.transport, name) is not None


def test_a_closing_stream_whose_fin_alone_goes_unacknowledged_ends_closed() -> None:
    # All data went both ways; the server took the client's FIN and forgot the stream after
    # TIME_WAIT, and every acknowledgment it sent back was lost (a congested path).
    link = Link()
    client, server = link.ends
    for _ in range(200):
        if client.state is StreamState.ESTABLISHED and server.state is StreamState.ESTABLISHED:
            break
        link.step()
    client.send(b"request")
    server.send(b"x" * 5000)
    server.shutdown(link.now)
    for _ in range(2000):
        if client.state is StreamState.CLOSE_WAIT and client.stats.bytes_acked == len(b"request"):
            break
        link.step()
    assert state(client) is StreamState.CLOSE_WAIT
    client.shutdown(link.now)
    link.deaf.add(0)
    for _ in range(2000):
        if client.state is StreamState.CLOSED:
            break
        link.step()
    assert server.state in (StreamState.TIME_WAIT, StreamState.CLOSED)  # it had everything
    assert client.state is StreamState.CLOSED
    assert client.error is None
    assert client.drops.get("fin-unacknowledged") == 1
