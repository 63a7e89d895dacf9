"""A host's metrics: flows by state, listeners, and its streams' transport counters summed.

Each stream transport counts for itself (``StreamConnection.stats``); the host keeps the sums
over its live streams as they change (``FlowTotals``: a snapshot recounts only the streams
touched since the last one), plus the totals of the streams it no longer holds, so the sums
never go down (docs/protocol.md §7). ``FLOW_PAUSE`` is the one
latency a host measures itself: how long a flow heard nothing from its peer before the peer
changed (a failover or an object migration: another host; a VM migration or a move: the
same host in another datacenter).
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...transport import StreamConnection
from ...wire.header import Proto
from ..metrics import LATENCY_BUCKETS, MetricKind, Sample, define

if TYPE_CHECKING:
    from .flows import Flow

__all__ = ["FLOWS", "FLOW_PAUSE", "LISTENERS", "FlowTotals", "StreamTotals"]

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
_FIELDS = tuple(_STREAM_COUNTERS)
_ZEROS = (0,) * len(_FIELDS)


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


#: a double times 2**1074 is an integer: the smoothed RTTs are summed exactly, as integers
_EXACT = 1074


def _exact(value: float) -> int:
    numerator, denominator = value.as_integer_ratio()  # the denominator: a power of two
    return numerator * ((1 << _EXACT) // denominator)


#: what one flow adds to the totals, kept per flow held (so packed: ~120 bytes a flow): its
#: state's index (``FlowTotals._keys``), its counters, its smoothed and lowest RTT (NaN: none)
_HELD = struct.Struct(f"<H{len(_FIELDS)}qdd")
_NONE = math.nan
#: the state of a flow without a stream transport
_DATAGRAM_OPEN = ("datagram", "open")
_STREAM_OPEN = ("stream", "open")


class FlowTotals:
    """The host's metrics over its flows, kept as the flows change (docs/protocol.md §7).

    A host may hold 50,000 streams, most of them idle, and reports its metrics every second:
    a snapshot must not visit them all. A flow is counted when it is added and recounted
    when its transport was touched (the stack files it in ``touched`` then, and at each
    ``_pump``), and taken out when it goes (``closed``), its final counters then added to
    ``ended`` so the sums never go down. ``snapshot`` recounts only the flows touched since the previous
    one: its cost follows the flows that were busy, the states and the drop reasons, never the
    flows held. The mean smoothed RTT is summed exactly (as integers), so it does not depend
    on the order flows came and went; the lowest RTT is the top of a heap of the live ones.
    """

    def __init__(self) -> None:
        #: flows whose transport may have changed since they were last counted (socket ID ->
        #: flow); ``HostStackBase._pump`` fills it
        self.touched: dict[int, Flow] = {}
        #: transport counters of streams this host no longer holds
        self.ended = StreamTotals()
        #: what each flow counted adds (``_HELD``), and its drops if it has any
        self._held: dict[int, bytes] = {}
        self._held_drops: dict[int, Counter[str]] = {}
        #: flows by (proto, state): the keys, each one's index, how many hold each
        self._keys: list[tuple[str, str]] = []
        self._key_index: dict[object, int] = {}
        self._counts: list[int] = []
        self._live = StreamTotals()
        self._srtt_sum = 0
        self._srtt_count = 0
        #: the live streams' lowest RTTs: how many hold each, and a heap of them (a value
        #: no stream holds any more stays in both, counted 0, until the top is pruned)
        self._min_rtt_count: dict[float, int] = {}
        self._min_rtts: list[float] = []

    def closed(self, flow: Flow, *, ended: bool) -> None:
        """``flow`` is no longer the host's; ``ended``: its stream ended here (not exported),
        so its counters stay in the sums."""
        socket_id = flow.socket_id
        self.touched.pop(socket_id, None)
        held = self._held.pop(socket_id, None)
        if held is not None:
            self._take_back(socket_id, held)
        if ended and flow.transport is not None:
            self.ended.add(flow.transport, flow.stats_base)

    def snapshot(
        self, flows: Mapping[int, Flow], listeners: int, pending: Mapping[int, Flow]
    ) -> list[Sample]:
        """The host's metrics: ``flows`` it holds (socket ID -> flow), of which those in
        ``touched`` or ``pending`` (received on, not pumped yet) are recounted first."""
        for touched in (self.touched, pending):
            for socket_id, flow in touched.items():
                if flows.get(socket_id) is flow:
                    held = self._held.get(socket_id)
                    if held is not None:
                        self._take_back(socket_id, held)
                    self._held[socket_id] = self._count(socket_id, flow)
        self.touched.clear()
        live, ended = self._live, self.ended
        counts = sorted((key, n) for key, n in zip(self._keys, self._counts, strict=True) if n)
        samples = [FLOWS.sample(n, proto=proto, state=state) for (proto, state), n in counts]
        samples.append(LISTENERS.sample(listeners))
        samples += [
            metric.sample(live.counters[n] + ended.counters[n]) for n, metric in _STREAM_COUNTERS.items()
        ]
        samples += STREAM_DROPS.by(live.drops + ended.drops)
        if self._srtt_count:
            # int / int is rounded once: the exact mean, whatever order the flows came in
            samples.append(SMOOTHED_RTT.sample(self._srtt_sum / (self._srtt_count << _EXACT)))
        heap, min_counts = self._min_rtts, self._min_rtt_count
        while heap and not min_counts[heap[0]]:
            del min_counts[heapq.heappop(heap)]
        if heap:
            samples.append(MIN_RTT.sample(heap[0]))
        return samples

    def _index(self, state: object, key: tuple[str, str]) -> int:
        index = self._key_index.get(state)
        if index is None:
            index = self._key_index[state] = len(self._keys)
            self._keys.append(key)
            self._counts.append(0)
        return index

    def _count(self, socket_id: int, flow: Flow) -> bytes:
        transport = flow.transport
        if transport is None:
            key = _DATAGRAM_OPEN if flow.proto == Proto.DATAGRAM else _STREAM_OPEN
            index = self._index(key, key)
            self._counts[index] += 1
            return _HELD.pack(index, *_ZEROS, _NONE, _NONE)
        index = self._index(transport.state, ("stream", transport.state.value))
        self._counts[index] += 1
        stats, base, live = transport.stats, flow.stats_base, self._live.counters
        counters = [
            getattr(stats, name) - (base.counters[name] if base is not None else 0) for name in _FIELDS
        ]
        for name, value in zip(_FIELDS, counters, strict=True):
            live[name] += value
        if transport.drops or (base is not None and base.drops):
            drops = self._held_drops[socket_id] = Counter(transport.drops)
            if base is not None:
                drops.subtract(base.drops)
            self._live.drops.update(drops)
        srtt, min_rtt = stats.srtt, stats.min_rtt
        if srtt is not None:
            self._srtt_sum += _exact(srtt)
            self._srtt_count += 1
        if min_rtt is not None:
            min_counts = self._min_rtt_count
            if min_rtt not in min_counts:
                min_counts[min_rtt] = 0
                heapq.heappush(self._min_rtts, min_rtt)
            min_counts[min_rtt] += 1
        return _HELD.pack(
            index, *counters, _NONE if srtt is None else srtt, _NONE if min_rtt is None else min_rtt
        )

    def _take_back(self, socket_id: int, held: bytes) -> None:
        index, *counters, srtt, min_rtt = _HELD.unpack(held)
        self._counts[index] -= 1
        live = self._live.counters
        for name, value in zip(_FIELDS, counters, strict=True):
            live[name] -= value
        drops = self._held_drops.pop(socket_id, None)
        if drops is not None:
            self._live.drops.subtract(drops)
        if not math.isnan(srtt):
            self._srtt_sum -= _exact(srtt)
            self._srtt_count -= 1
        if not math.isnan(min_rtt):
            self._min_rtt_count[min_rtt] -= 1
            if len(self._min_rtts) > 2 * len(self._held) + 64:
                self._compact_min_rtts()

    def _compact_min_rtts(self) -> None:
        """Drop the values no stream holds: the heap stays within twice the flows held."""
        counts = {value: n for value, n in self._min_rtt_count.items() if n}
        self._min_rtt_count = counts
        self._min_rtts = list(counts)
        heapq.heapify(self._min_rtts)
