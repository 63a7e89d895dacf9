"""The host's timers: a deadline heap, and work per event that does not grow with open streams."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import WEB, echo_streams, stream_network
from scaffold.core.host import HostStack
from scaffold.core.host.base import BUNDLES, HEARTBEAT, LIVENESS_TICK, SWEEP, WATCHES
from scaffold.core.host.flows import Flow
from scaffold.core.host.timers import DeadlineHeap, TimerWheel
from scaffold.core.topology import make_topology
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import StreamConnection, StreamState

SERVER = "east-h1"
CLIENT = "north-h1"


# -- the heap on its own ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_deadline_heap_agrees_with_a_plain_dict(seed: int) -> None:
    """Random arms (earlier, later, equal), disarms and expiries against a dict scanned in full."""
    rng = random.Random(seed)
    heap, model = DeadlineHeap(), dict[int, float]()
    now = 0.0
    for _ in range(20_000):
        op = rng.random()
        key = rng.randrange(100)
        if op < 0.7:
            at = now + rng.choice([rng.random(), rng.random() * 10, model.get(key, now)])
            heap.arm(key, at)
            model[key] = at
        elif op < 0.8:
            heap.arm(key, None)
            model.pop(key, None)
        else:
            now += rng.random() * 0.5
            due = sorted((at, k) for k, at in model.items() if at <= now)
            assert heap.pop_due(now) == [k for _, k in due]
            for _, k in due:
                del model[k]
        assert heap.next() == min(model.values(), default=None)
        assert len(heap) == len(model)
        assert all(heap.get(k) == at for k, at in model.items())
        # Stale entries are bounded: without rebuilding they would number in the thousands.
        assert heap.entries <= 2 * len(model) + 100


@pytest.mark.parametrize("seed", range(5))
def test_timer_wheel_fires_each_key_at_its_tick_never_earlier(seed: int) -> None:
    """Random arms (earlier, later), disarms and expiries, some in limited batches, against a
    dict of each key's tick."""
    rng = random.Random(seed)
    wheel, model = TimerWheel(0.05), dict[int, int]()
    now = 0.0
    for _ in range(5_000):
        op = rng.random()
        key = rng.randrange(200)
        if op < 0.7:
            at = now + rng.choice([rng.random(), rng.random() * 20])
            wheel.arm(key, at)
            model[key] = math.ceil(at / 0.05)
        elif op < 0.8:
            wheel.arm(key, None)
            model.pop(key, None)
        else:
            now += rng.random() * 0.5
            due = {k for k, t in model.items() if t * 0.05 <= now}
            popped: list[int] = []
            while batch := wheel.pop_due(now, limit=rng.choice([None, 1, 7])):
                popped += batch
            assert sorted(popped) == sorted(due)
            for k in due:
                del model[k]
        assert len(wheel) == len(model)
        assert all(wheel.get(k) == pytest.approx(t * 0.05) for k, t in model.items())
        first = wheel.next()
        assert (first is None) == (not model)
        if model:
            assert first is not None and first <= min(model.values()) * 0.05 + 1e-9


def test_a_deadline_moving_later_costs_no_heap_entry() -> None:
    heap = DeadlineHeap()
    heap.arm(1, 1.0)
    for i in range(1000):
        heap.arm(1, 1.0 + i * 0.001)  # an acknowledgement pushes the retransmission timer out
    assert heap.entries == 1
    assert heap.next() == pytest.approx(1.999)
    assert heap.pop_due(1.5) == []
    assert heap.pop_due(2.0) == [1]
    assert heap.next() is None and len(heap) == 0


# -- the host ---------------------------------------------------------------------------------------


def network() -> SimNetwork:
    return stream_network(SERVER, CLIENT, seed=5)


def client_send(net: SimNetwork, flow: Flow, data: bytes) -> None:
    """The client writes ``data`` on its stream ``flow``."""

    def act(core: HostStack, now: float) -> None:
        core.stream_send(flow.socket_id, data, now)

    net.act(CLIENT, act)


def check_timers(stack: HostStack) -> None:
    """The host's deadlines against the slow way: every stream's transport, asked directly.

    Exact deadlines (the heap) match exactly; each coarse one (the wheel) is filed at its tick,
    rounded up; the wheel may wake the host early (a deadline that moved later is refiled
    when its old tick comes), never late.
    """
    exact = [stack._timers.get(key) for key in (HEARTBEAT, SWEEP, BUNDLES, WATCHES)]
    ticks = []
    tick = stack._wheel.tick
    for flow in stack.flows.values():
        if flow.transport is not None:
            at, coarse = flow.transport.deadlines()
            exact.append(at)
            if coarse is not None:
                ticks.append(math.ceil(coarse / tick) * tick)
                assert stack._wheel.get(flow.socket_id) == pytest.approx(ticks[-1])
    assert stack._timers.next() == min((d for d in exact if d is not None), default=None)
    if ticks:
        wheel = stack._wheel.next()
        assert wheel is not None and wheel <= min(ticks) + 1e-9
        timer = stack.get_timer()
        assert timer is not None and timer <= min(ticks) + 1e-9


def test_a_stream_deadline_moving_earlier_and_later_many_times() -> None:
    net = network()
    client = net.host(CLIENT)
    flow = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now))
    net.run(0.5)
    assert flow.transport is not None
    deadlines = []
    rng = random.Random(3)
    for i in range(300):
        # Data in flight arms the retransmission timer (earlier); its acknowledgement clears it
        # and the keepalive is next (later); sometimes several sends before the echo returns.
        for _ in range(rng.randrange(1, 3)):
            client_send(net, flow, b"x" * (1 + i % 500))
            deadlines.append(flow.transport.get_timer())
            check_timers(client)
        net.run(rng.choice([0.001, 0.005, 0.05, 0.2]))
        deadlines.append(flow.transport.get_timer())
        for name in (CLIENT, SERVER):
            check_timers(net.host(name))
    moves = [b - a for a, b in itertools.pairwise(deadlines) if a is not None and b is not None]
    assert sum(m < 0 for m in moves) >= 50 and sum(m > 0 for m in moves) >= 50
    assert client._timers.entries <= 2 * len(client._timers) + 64  # stale entries stay bounded
    assert flow.socket_id in client.flows  # and it never fired a timer it should not have


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts calls of the real transport's timer methods (the methods still run)."""
    yield count_calls(monkeypatch, "get_timer", "deadlines", "handle_timer", "handle_liveness")


def count_calls(monkeypatch: pytest.MonkeyPatch, *names: str) -> Counter[str]:
    """Calls of ``StreamConnection``'s methods ``names`` from now on, counted by name (the
    real methods still run)."""
    calls: Counter[str] = Counter()
    for name in names:
        real = getattr(StreamConnection, name)

        def counting(
            self: StreamConnection, *args: Any, _real: Any = real, _name: str = name, **kw: Any
        ) -> Any:
            calls[_name] += 1
            return _real(self, *args, **kw)

        monkeypatch.setattr(StreamConnection, name, counting)
    return calls


def work_per_event(idle_streams: int, calls: Counter[str]) -> tuple[Counter[str], int]:
    """Transport timer calls and packets delivered while one stream talks and
    ``idle_streams`` others between the same two hosts stay open and silent."""
    net = network()
    active = net.act(CLIENT, lambda core, now: core.open_stream(WEB, now))
    for _ in range(idle_streams):
        net.act(CLIENT, lambda core, now: core.open_stream(WEB, now))
    net.run(1.0)  # every handshake done, every delayed ACK sent
    assert sum(f.transport is not None for f in net.host(SERVER).flows.values()) == idle_streams + 1
    calls.clear()
    delivered = net.delivered
    for i in range(50):
        client_send(net, active, b"y" * (100 + i))
        net.run(0.2)
    return Counter(calls), net.delivered - delivered


def test_timer_work_per_packet_does_not_grow_with_open_streams(counted: Counter[str]) -> None:
    few, packets_few = work_per_event(1, counted)
    many, packets_many = work_per_event(400, counted)
    assert packets_few == packets_many > 0
    assert few["handle_timer"] > 0  # delayed ACKs fired: the timers are exercised
    # The same exchange costs the same transport timer calls, however many streams are idle
    # (a scan of every stream per flush would cost ~400x more).
    assert many == few, (few, many, packets_few)


@pytest.mark.slow
def test_a_keepalive_fires_on_time_among_ten_thousand_idle_streams() -> None:
    """10,000 idle streams between two hosts: every keepalive goes out within a tick of its
    deadline, in bundles (a few packets, not one per stream), and no stream idles out."""
    net = SimNetwork(make_topology(1, 2), seed=9)
    net.start()
    net.settle()
    server, client = net.host("dc1-h1"), net.host("dc1-h2")
    net.act("dc1-h1", lambda core, now: core.bind(WEB, 1, "web"))
    net.run(0.05)
    flows = []
    for _ in range(20):  # 500 at a time, as a busy client would
        flows += [net.act("dc1-h2", lambda core, now: core.open_stream(WEB, now)) for _ in range(500)]
        net.run(0.01)
    net.run(1.0)
    assert all(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in flows)
    watched = flows[-1]
    assert watched.transport is not None
    due = watched.transport.deadlines()[1]  # its keepalive: 15 s after it last heard anything
    assert due is not None and due < net.now + 16
    peer = next(f for f in server.flows.values() if f.flow == watched.flow)
    assert peer.transport is not None
    delivered = net.delivered
    net.run(due + 2 * LIVENESS_TICK - net.now)
    # The peer heard the keepalive (in a bundle) within one tick of the deadline.
    assert due <= peer.transport.last_received <= due + LIVENESS_TICK + 0.01
    # Every stream's keepalive went out, bundled: ~10,000 / 90 packets each way, not 20,000.
    assert client.counters["keepalives-bundled"] + server.counters["keepalives-bundled"] >= 10_000
    assert net.delivered - delivered < 1_000
    net.run(61.0)  # past the idle timeout: every stream kept alive by its keepalives
    alive = sum(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in flows)
    assert alive == 10_000 and len(server.flows) == 10_000
    assert client.counters["keepalive-alone"] == server.counters["keepalive-alone"] == 0


def held_streams(net: SimNetwork, count: int) -> list[Flow]:
    """``count`` streams from the client that sent a request, got its echo and are held (no
    FIN): each is in an exchange, stall-probing (docs/protocol.md §5.1)."""
    flows = [net.act(CLIENT, lambda core, now: core.open_stream(WEB, now)) for _ in range(count)]
    net.run(0.5)
    for flow in flows:
        client_send(net, flow, b"hello")
    net.run(0.2)  # every echo back
    return flows


def test_held_streams_hand_their_stall_probes_to_one_watch_of_the_peer_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """400 held streams over 15 s of silence: each sends its first stall probe (0.25 s) and
    hands the later ones (0.75, 1.75, 3.75, 7.75 s) to the watch of its peer host, one entry
    per probe for all of them (§4.4) -- about 400 entries and wake-ups, not 2,000 (the work
    that grew with the streams held while a busy client opens more). Each wake-up computes
    its liveness deadline once (``deadlines()`` reads the cache)."""
    calls = count_calls(monkeypatch, "handle_liveness", "_next_coarse", "_keepalive_deadline")
    net = network()
    client, server = net.host(CLIENT), net.host(SERVER)
    flows = held_streams(net, 400)
    calls.clear()
    bundled, served = client.counters["keepalives-bundled"], dict(server.drops)
    net.run(15.0)
    entries = client.counters["keepalives-bundled"] - bundled
    assert client.counters["peer-watch-probes"] == 4  # 0.75, 1.75, 3.75 and 7.75 s
    assert entries == len(flows) + 4, entries  # was 5 x 400: every stream's own probes
    assert calls["handle_liveness"] == len(flows)  # one wake-up per stream, none wasted
    assert calls["_next_coarse"] == 0, calls
    assert calls["_keepalive_deadline"] == len(flows), calls
    assert client.counters["keepalive-alone"] == 0 and dict(server.drops) == served
    assert all(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in flows)
    # Then each stream's own keepalive, 15 s after its first probe (but the watch's entry,
    # answered at 7.75 s: 15 s after that).
    net.run(1.0)
    assert client.counters["keepalives-bundled"] - bundled == 2 * len(flows) + 4 - 1
    check_timers(client)


def test_held_streams_reach_a_survivor_when_their_watched_peer_host_dies() -> None:
    """Held streams of two replicas; one's host dies 3 s into the silence, after the streams
    handed their stall probes to the watch: the watch's next probe (3.75 s) is re-resolved to
    the survivor, whose answer sends every stream of the dead host to probe alone -- reset
    (the listener is not resumable, §5.1) no later than its own stall probe would have found
    it; the survivor's streams stay."""
    net = network()
    net.act("west-h1", lambda core, now: core.bind(WEB, 1, "web"))
    net.on_event("west-h1", echo_streams)
    net.run(0.5)
    client = net.host(CLIENT)
    flows = held_streams(net, 100)
    quiet = net.now - 0.1  # about when the echoes came
    victim = net.host(SERVER).host_id
    lost = [f for f in flows if f.peer_host == victim]
    kept = [f for f in flows if f.peer_host != victim]
    assert lost and kept
    net.run(3.0)
    assert client.counters["keepalives-bundled"] < 2 * len(flows)  # the watch probes, not each
    net.kill(SERVER)
    net.run(quiet + 3.75 + 1.0 - net.now)  # its next probe; the controller knew at once
    assert all(f.socket_id not in client.flows for f in lost)  # reset by the survivor
    assert all(f.transport is not None and f.transport.state is StreamState.ESTABLISHED for f in kept)
    assert client.counters["peer-watch-lost"] == 1


def test_a_watch_unanswered_three_times_sends_its_streams_to_probe_alone() -> None:
    """The peer host dies with no controller to remove it: the watch's probes are lost, not
    re-resolved. Each is tried again when its answer is overdue (0.5 s); after 3 misses every
    stream with that host probes alone (§4.4), as the streams of an unanswered bundle do."""
    net = network()
    client = net.host(CLIENT)
    flows = held_streams(net, 50)
    quiet = net.now - 0.1
    net.run(1.0)  # the first stall probes went, the watch took over
    net.stop_controller()
    net.kill(SERVER)
    net.run(quiet + 1.75 - net.now)  # the watch's probe: lost
    assert client.counters["keepalive-alone"] == 0
    net.run(3 * 0.5 + 0.1)  # two more, each after the last was overdue
    assert client.counters["peer-watch-lost"] == 1
    assert client.counters["keepalive-alone"] >= len(flows)
