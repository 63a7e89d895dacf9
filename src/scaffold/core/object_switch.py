"""The object switch: resolves Object IDs to replicas by Flow ID hash (docs/protocol.md §3.2).

One object switch serves each DC and holds two tables pushed by the controller:

* ``wide``:  Object ID -> weighted set of DC IDs (wide-area level; every object switch
  holds the same one, so any of them answers alike);
* ``local``: Object ID -> weighted set of Host IDs in its own DC.

A packet with no DC ID is resolved at the wide-area level; if the chosen DC is this one, the
Host ID is resolved at once, otherwise the packet goes on towards that DC, whose own object
switch fills the Host ID. A packet naming this DC without a Host ID (a first packet, or an
orphan whose host is gone) is resolved locally; if this DC has no replica left, its DC ID is
cleared and it is resolved at the wide-area level again. An object nobody serves is answered
with an explicit ``OBJECT_NOT_FOUND`` signal to the source -- at most ``not_found_rate`` a
second (a token bucket of ``not_found_burst``): the source address of a first packet is not
proven, so the answers must not become a flood aimed at someone else (docs/protocol.md §3.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..errors import MalformedPacket, UsageError
from ..wire import header as wire_header
from ..wire import signal as wire_signal
from ..wire.header import DST_LOCATOR, DST_OFFSET, TTL_OFFSET, Flags, Header, Proto
from .events import Packet, TraceHop
from .metrics import MetricKind, Sample, define
from .replicas import TABLE_SIZE, PrefixTable, ReplicaSet
from .switch import Switch

__all__ = ["LOCAL_SHIFT", "RESOLUTIONS", "WIDE_SHIFT", "ObjectSwitch"]

RESOLUTIONS = define(
    "resolutions_total",
    MetricKind.COUNTER,
    "Packets an object switch refined (first packets and re-resolutions, docs/protocol.md §3.2).",
)

#: How far the Flow ID is shifted before the Maglev index at each level (docs/protocol.md
#: §3.2): the wide-area pick uses the whole ID modulo the table size, the in-DC pick only its
#: upper 32 bits, so for random Flow IDs the two picks are uncorrelated.
WIDE_SHIFT = 0
LOCAL_SHIFT = 32


class ObjectSwitch(Switch):
    """Sans-IO object switch. Feed ``receive_datagram``; drain ``datagrams_to_send``."""

    role: ClassVar[str] = "object-switch"

    def __init__(
        self, name: str, dc: str, *, not_found_rate: float = 200.0, not_found_burst: int = 50
    ) -> None:
        """An object switch of datacenter ``dc``; it answers at most ``not_found_rate``
        ``OBJECT_NOT_FOUND`` signals a second, ``not_found_burst`` at once.

        Raises:
            UsageError: the rate is negative or the burst below 1.
        """
        if not not_found_rate >= 0 or not_found_burst < 1:
            raise UsageError("not_found_rate must be >= 0 and not_found_burst >= 1")
        super().__init__(name, dc)
        self.not_found_rate = not_found_rate
        self.not_found_burst = not_found_burst
        self._not_found_tokens = float(not_found_burst)
        self._not_found_at = 0.0
        self.wide = PrefixTable()
        self.local = PrefixTable()
        self.resolutions = 0
        self._wide_exact: Mapping[bytes, ReplicaSet] = {}
        self._local_exact: Mapping[bytes, ReplicaSet] = {}
        # Replica sets are interned: a million objects on the same replicas share one table.
        self._interned: dict[tuple[tuple[tuple[int, int], ...], int], ReplicaSet] = {}

    # -- tables --------------------------------------------------------------------------

    def tables_changed(self, names: set[str] | None) -> None:
        if names is None or "wide" in names or "prefixes" in names:
            self.wide = self._build(self.tables["wide"], self.tables["prefixes"], WIDE_SHIFT)
        if names is None or "local" in names:
            self.local = self._build(self.tables["local"], {}, LOCAL_SHIFT)
        self._wide_exact = self.wide.exact_items()
        self._local_exact = self.local.exact_items()
        live = {rs.members for rs in self.wide.exact_items().values()}
        live |= {rs.members for rs in self.local.exact_items().values()}
        self._interned = {k: v for k, v in self._interned.items() if k[0] in live}

    def _build(self, exact: dict[object, object], prefixes: dict[object, object], shift: int) -> PrefixTable:
        table = PrefixTable()
        for key, members in exact.items():
            try:
                table.set_exact(bytes.fromhex(str(key)), self.replica_set(members, shift))  # type: ignore[arg-type]
            except (ValueError, UsageError):
                self.drops["bad-table-entry"] += 1
        for key, members in prefixes.items():
            try:
                text, bits = str(key).split("/")
                table.set_prefix(int(text, 16), int(bits), self.replica_set(members, shift))  # type: ignore[arg-type]
            except (ValueError, UsageError):
                self.drops["bad-table-entry"] += 1
        return table

    def replica_set(self, members: list[tuple[int, int]], shift: int) -> ReplicaSet:
        key = (tuple(sorted((int(t), int(w)) for t, w in members if w > 0)), shift)
        found = self._interned.get(key)
        if found is None:
            found = self._interned[key] = ReplicaSet(key[0], shift)
        return found

    def table_sizes(self) -> dict[str, int]:
        # What the switch holds after tables_changed: its prefix tables (exact entries and
        # prefix rules), not the raw records they were built from.
        return {"wide": len(self.wide), "local": len(self.local), "peers": len(self.tables["peers"])}

    def metrics(self) -> list[Sample]:
        return [*super().metrics(), RESOLUTIONS.sample(self.resolutions)]

    # -- resolution ----------------------------------------------------------------------

    def resolve(self, obj: bytes, flow: int) -> tuple[int, int] | None:
        """(DC ID, Host ID) for the first packet of ``flow`` to ``obj``; Host ID 0 when the
        chosen DC is another one (its own object switch fills it). None: nobody serves it.

        The hot path of an object switch: an exact-match dict first, then the prefix rules;
        one modulo and one tuple index per level (docs/protocol.md §3.2).
        """
        wide = self._wide_exact.get(obj) or self.wide.lookup(obj)
        if wide is None:
            return None
        dc = wide.table[flow % TABLE_SIZE]  # WIDE_SHIFT is 0: the whole Flow ID
        if dc != self.dc_id:
            return dc, 0
        local = self._local_exact.get(obj) or self.local.lookup(obj)
        if local is None:
            return None  # the tables disagree for a moment: wide lists this DC, local not yet
        return dc, local.table[(flow >> LOCAL_SHIFT) % TABLE_SIZE]

    def refine(self, obj: bytes, flow: int, dc: int, host: int) -> tuple[int, int] | None:
        """Fill what is missing of a destination (docs/protocol.md §3.2).

        A DC ID of this DC without a Host ID is resolved locally; if this DC has no replica
        left, or there is no DC ID, the wide-area table picks a DC (and, if it is this one,
        the local table a host). None when no replica is registered.
        """
        if dc == self.dc_id and not host:
            local = self._local_exact.get(obj) or self.local.lookup(obj)
            if local is not None:
                return dc, local.table[(flow >> LOCAL_SHIFT) % TABLE_SIZE]
            dc = 0  # no replica left in this DC: resolve at the wide-area level again
        if dc:
            return dc, host
        return self.resolve(obj, flow)

    def receive_datagram(self, data: Packet, port: str, now: float) -> None:
        """Refine one packet (fill DC ID and/or Host ID) and send it back. Never raises."""
        try:
            h = wire_header.parse(bytes(data))
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        if h.ttl <= 1:
            self.drops["ttl-expired"] += 1
            return
        if not self.synced:
            self.drops["no-tables"] += 1
            return
        if h.proto == Proto.SIGNAL:
            self.drops["signal-to-object-switch"] += 1
            return
        refined = self.refine(h.obj, h.flow, h.dst_dc, h.dst_host)
        if refined is None:
            if self._take_not_found_token(now):
                self.drops["object-not-found"] += 1
                self._not_found(h)
            else:
                self.drops["not-found-rate-limited"] += 1  # dropped without an answer
            return
        dc, host = refined
        self.resolutions += 1
        buf = bytearray(data)
        buf[TTL_OFFSET] = h.ttl - 1
        DST_LOCATOR.pack_into(buf, DST_OFFSET, dc, host, 0)
        if h.flags & Flags.TRACE:
            self.trace.append(TraceHop(self.name, self.role, h.flow, h.obj, dc, host, 0, h.ttl - 1, now))
        self._out.append((self.gateway or port, buf))

    def _take_not_found_token(self, now: float) -> bool:
        """The token bucket of OBJECT_NOT_FOUND answers: refilled at ``not_found_rate``."""
        elapsed = max(0.0, now - self._not_found_at)
        self._not_found_at = now
        tokens = min(float(self.not_found_burst), self._not_found_tokens + elapsed * self.not_found_rate)
        if tokens < 1.0:
            self._not_found_tokens = tokens
            return False
        self._not_found_tokens = tokens - 1.0
        return True

    def _not_found(self, h: Header) -> None:
        if not h.src_dc or not h.src_host:
            return
        signal = wire_signal.Signal(wire_signal.SignalType.OBJECT_NOT_FOUND)
        reply = h.reply(Proto.SIGNAL, self.dc_id)
        self._out.append((self.gateway, wire_header.encode(reply, wire_signal.encode(signal))))
