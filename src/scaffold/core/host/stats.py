"""A host's metrics: flows by state, listeners, and its streams' transport counters summed.

Each stream transport counts for itself (``StreamConnection.stats``); the host adds them up
only when a snapshot is asked for, over its live streams plus the totals of the streams it
no longer holds, so the sums never go down (docs/protocol.md §7). ``FLOW_PAUSE`` is the one
latency a host measures itself: how long a flow heard nothing from its peer before the peer
changed (a failover or an object migration: another host; a VM migration or a move: the
same host in another datacenter).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...transport import StreamConnection
from ...wire.header import Proto
from ..metrics import LATENCY_BUCKETS, MetricKind, Sample, define

if TYPE_CHECKING:
    from .flows import Flow

__all__ = ["FLOWS", "FLOW_PAUSE", "LISTENERS", "StreamTotals", "snapshot"]

FLOWS = define(
    "flows",
    MetricKind.GAUGE,
    "Flows a host holds, by transport (datagram, stream) and state (a stream's transport state; "
    "datagram flows are open).",
    labels=("proto", "state"),
)
LISTENERS = define("listeners", MetricKind.GAUGE, "Objects a host listens on (replicas it serves).")
FLOW_PAUSE = define(
    "flow_pause_seconds",
    MetricKind.HISTOGRAM,
    "How long a flow had heard nothing from its peer when the peer changed: change=host is a "
    "failover or an object migration (another replica answers), change=dc a VM migration or a "
    "move (the same host in another datacenter).",
    unit="seconds",
    labels=("change",),
    buckets=LATENCY_BUCKETS,
)
STREAM_DROPS = define(
    "stream_drops_total",
    MetricKind.COUNTER,
    "Stream segments the transports of a host's flows refused, by reason (docs/protocol.md §7).",
    labels=("reason",),
)
SMOOTHED_RTT = define(
    "stream_smoothed_rtt_seconds",
    MetricKind.GAUGE,
    "Mean smoothed round-trip time over a host's streams that have measured one.",
    unit="seconds",
)
MIN_RTT = define(
    "stream_min_rtt_seconds",
    MetricKind.GAUGE,
    "Lowest round-trip time any of a host's live streams measured.",
    unit="seconds",
)
#: ``StreamStats`` counter field -> the host metric that sums it
_STREAM_COUNTERS = {
    field: define(name, MetricKind.COUNTER, help, unit=unit)
    for field, name, unit, help in (
        ("bytes_sent", "stream_sent_bytes_total", "bytes", "Stream bytes sent for the first time."),
        ("bytes_retransmitted", "stream_retransmitted_bytes_total", "bytes", "Stream bytes sent again."),
        ("bytes_acked", "stream_acked_bytes_total", "bytes", "Stream bytes the peers acknowledged."),
        ("bytes_received", "stream_received_bytes_total", "bytes", "Stream bytes received in order."),
        ("segments_sent", "stream_sent_segments_total", "segments", "Stream segments sent."),
        ("segments_received", "stream_received_segments_total", "segments", "Stream segments received."),
        (
            "duplicate_segments",
            "stream_duplicate_segments_total",
            "segments",
            "Stream segments received that carried nothing new.",
        ),
        (
            "retransmit_timeouts",
            "stream_retransmit_timeouts_total",
            "",
            "Retransmission timeouts that fired.",
        ),
        (
            "loss_episodes",
            "stream_loss_episodes_total",
            "",
            "Losses detected by acknowledgements (fast recovery).",
        ),
    )
}


class StreamTotals:
    """Transport counters and drops summed over streams."""

    def __init__(self) -> None:
        self.counters = dict.fromkeys(_STREAM_COUNTERS, 0)
        self.drops: Counter[str] = Counter()

    @classmethod
    def of(cls, transport: StreamConnection) -> StreamTotals:
        """One stream's counters now."""
        totals = cls()
        totals.add(transport, None)
        return totals

    def add(self, transport: StreamConnection, base: StreamTotals | None) -> None:
        """Add one stream's counters; ``base``: what it had counted when it arrived here
        (an imported flow), which other hosts counted already."""
        stats = transport.stats
        for name in self.counters:
            self.counters[name] += getattr(stats, name) - (base.counters[name] if base is not None else 0)
        self.drops.update(transport.drops)
        if base is not None:
            self.drops.subtract(base.drops)


def snapshot(flows: Iterable[Flow], listeners: int, ended: StreamTotals) -> list[Sample]:
    """The host's metrics over its live ``flows`` plus the streams that ``ended`` here."""
    by_state: Counter[tuple[str, str]] = Counter()
    live = StreamTotals()
    rtts: list[float] = []
    min_rtts: list[float] = []
    for flow in flows:
        transport = flow.transport
        if transport is None:
            by_state["datagram" if flow.proto == Proto.DATAGRAM else "stream", "open"] += 1
            continue
        by_state["stream", transport.state.value] += 1
        live.add(transport, flow.stats_base)
        stats = transport.stats
        if stats.srtt is not None:
            rtts.append(stats.srtt)
        if stats.min_rtt is not None:
            min_rtts.append(stats.min_rtt)
    samples = [FLOWS.sample(n, proto=proto, state=state) for (proto, state), n in sorted(by_state.items())]
    samples.append(LISTENERS.sample(listeners))
    samples += [
        metric.sample(live.counters[name] + ended.counters[name]) for name, metric in _STREAM_COUNTERS.items()
    ]
    drops = live.drops + ended.drops
    samples += STREAM_DROPS.by(drops)
    if rtts:
        samples.append(SMOOTHED_RTT.sample(sum(rtts) / len(rtts)))
    if min_rtts:
        samples.append(MIN_RTT.sample(min(min_rtts)))
    return samples
