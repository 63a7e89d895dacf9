"""A host's metrics (core/host/stats.py): the sums kept as flows open, close and carry data
equal a recount over every flow; a snapshot's work follows the flows that were busy, not the
flows held (docs/protocol.md §7)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import WEB, count_calls, echo, echo_streams, stream_network
from scaffold.core.host import DatagramReceived, HostEvent, HostStack
from scaffold.core.host.stats import _STREAM_COUNTERS, FLOWS, LISTENERS, MIN_RTT, SMOOTHED_RTT, STREAM_DROPS
from scaffold.core.metrics import Sample
from scaffold.runtime.sim import SimNetwork
from scaffold.wire.header import Proto

SERVER = "east-h1"
CLIENT = "north-h1"
NAMES = {FLOWS.name, LISTENERS.name, MIN_RTT.name, SMOOTHED_RTT.name, STREAM_DROPS.name} | {
    metric.name for metric in _STREAM_COUNTERS.values()
}


def recount(stack: HostStack) -> list[Sample]:
    """The host's stats metrics the slow way: every flow it holds, visited."""
    states: Counter[tuple[str, str]] = Counter()
    counters = dict(stack._totals.ended.counters)
    drops = Counter(stack._totals.ended.drops)
    live_drops: Counter[str] = Counter()
    rtts: list[float] = []
    min_rtts: list[float] = []
    for flow in stack.flows.values():
        transport = flow.transport
        if transport is None:
            states["datagram" if flow.proto == Proto.DATAGRAM else "stream", "open"] += 1
            continue
        states["stream", transport.state.value] += 1
        stats, base = transport.stats, flow.stats_base
        for name in counters:
            counters[name] += getattr(stats, name) - (base.counters[name] if base is not None else 0)
        live_drops.update(transport.drops)
        if base is not None:
            live_drops.subtract(base.drops)
        if stats.srtt is not None:
            rtts.append(stats.srtt)
        if stats.min_rtt is not None:
            min_rtts.append(stats.min_rtt)
    samples = [FLOWS.sample(n, proto=proto, state=state) for (proto, state), n in sorted(states.items())]
    samples.append(LISTENERS.sample(len(stack.listeners)))
    samples += [metric.sample(counters[name]) for name, metric in _STREAM_COUNTERS.items()]
    samples += STREAM_DROPS.by(live_drops + drops)
    if rtts:
        samples.append(SMOOTHED_RTT.sample(float(sum(map(Fraction, rtts)) / len(rtts))))
    if min_rtts:
        samples.append(MIN_RTT.sample(min(min_rtts)))
    return samples


def reported(stack: HostStack) -> list[Sample]:
    return [sample for sample in stack.metrics() if sample.name in NAMES]


def serve(stack: HostStack, event: HostEvent, now: float) -> None:
    """Server: echo datagrams and what a stream brings."""
    if isinstance(event, DatagramReceived):
        echo(stack, event, now)
    else:
        echo_streams(stack, event, now)


def network() -> SimNetwork:
    return stream_network(SERVER, CLIENT, seed=7, serve=serve)


def on_client(net: SimNetwork, method: Callable[[HostStack, int, float], object], socket_id: int) -> None:
    """``method(stack, socket_id, now)`` on the client's stack, as an application call."""
    net.act(CLIENT, lambda core, now: method(core, socket_id, now))


OPS = ("stream", "datagram", "send", "send", "close", "abort", "close-datagram", "run", "run", "loss")


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000)), min_size=1, max_size=30))
def test_the_kept_sums_equal_a_recount_after_any_opens_closes_and_data(steps: list[tuple[str, int]]) -> None:
    net = network()
    client, server = net.host(CLIENT), net.host(SERVER)
    closed: set[int] = set()  # streams the client closed: no more sends
    for op, n in steps:
        streams = [s for s, f in client.flows.items() if f.transport is not None and s not in closed]
        datagrams = [f.socket_id for f in client.flows.values() if f.transport is None]
        if op == "stream":
            net.act(CLIENT, lambda core, now: core.open_stream(WEB, now, data=b"hello"))
        elif op == "datagram":
            flow = net.act(CLIENT, lambda core, now: core.open_flow(WEB, now))

            def ping(core: HostStack, now: float, s: int = flow.socket_id) -> None:
                core.send_datagram(s, b"ping", now)

            net.act(CLIENT, ping)
        elif op == "send" and streams:
            sid = streams[n % len(streams)]
            data = b"x" * (1 + n * 7)

            def send(core: HostStack, now: float, s: int = sid, d: bytes = data) -> None:
                core.stream_send(s, d, now, force=True)

            net.act(CLIENT, send)
        elif op in ("close", "abort") and streams:
            sid = streams[n % len(streams)]
            closed.add(sid)
            if op == "close":
                on_client(net, HostStack.stream_close, sid)
            else:
                on_client(net, HostStack.stream_abort, sid)
        elif op == "close-datagram" and datagrams:
            sid = datagrams[n % len(datagrams)]
            on_client(net, HostStack.close_flow, sid)
        elif op == "run":
            # from one round trip to several retransmission timeouts
            net.run((0.002, 0.05, 0.5, 3.0)[n % 4])
        elif op == "loss":
            net.set_all_links(loss=(0.0, 0.1, 0.3)[n % 3])  # retransmissions, timeouts, drops
        for stack in (client, server):
            assert reported(stack) == recount(stack)
    net.set_all_links(loss=0.0)
    net.run(3.0)
    for stack in (client, server):
        assert reported(stack) == recount(stack)


def test_a_snapshot_costs_the_busy_flows_not_the_flows_held() -> None:
    # Calls counted, not timed: a snapshot after a few streams sent data, at 100 and at
    # 10,000 streams held. A visit of every flow would show here.
    def snapshot_calls(held: int) -> int:
        net = network()
        client = net.host(CLIENT)
        flows = net.act(CLIENT, lambda core, now: [core.open_stream(WEB, now) for _ in range(held)])
        reported(client)  # the first one counts every stream
        for flow in flows[:5]:

            def send(core: HostStack, now: float, s: int = flow.socket_id) -> None:
                core.stream_send(s, b"data", now, force=True)

            net.act(CLIENT, send)
        samples: list[Sample] = []
        counted = count_calls(lambda: samples.extend(reported(client)))
        assert samples == recount(client)
        return counted

    small, large = snapshot_calls(100), snapshot_calls(10_000)
    assert small == large, (small, large)
