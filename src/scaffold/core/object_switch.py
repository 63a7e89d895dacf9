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

The wide-area choice follows the object's policy (docs/protocol.md §3.5, ``core/locality.py``):
under ``nearest`` (the default) the cost table ``dc_costs`` narrows the DCs to the nearest ones
from the packet's source DC, with spill-over by the accept fractions of ``spill``; under
``weighted`` every source shares one table by weight. For the objects that have a ``spill``
entry (their replicas declare a capacity) it counts first packets per source DC and reports
them to the controller about once a second (``Demand``), so the spill-over plan follows the
measured load.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import MalformedPacket, UsageError
from ..ids import OBJECT_ID_BYTES
from ..wire import control
from ..wire import header as wire_header
from ..wire import signal as wire_signal
from ..wire.control import DEMAND_OBJECTS, Replicas, SwitchTables, TableKeys
from ..wire.header import DST_LOCATOR, DST_OFFSET, TTL_OFFSET, Flags, Header, Proto
from .events import Packet, TraceHop
from .locality import Policy, Spill, TierCache, choose
from .metrics import MetricKind, Sample, define
from .ratelimit import TokenBucket
from .replicas import TABLE_SIZE, PrefixTable, ReplicaSet
from .switch import Switch

__all__ = ["DEMAND_INTERVAL", "LOCAL_SHIFT", "RESOLUTIONS", "WIDE_SHIFT", "Entry", "ObjectSwitch"]

RESOLUTIONS = define(
    "resolutions_total",
    MetricKind.COUNTER,
    "Packets an object switch refined (first packets and re-resolutions, docs/protocol.md §3.2).",
)

#: how often an object switch reports the demand for objects that may spill (seconds, §3.5)
DEMAND_INTERVAL = 1.0

#: How far the Flow ID is shifted before the Maglev index at each level (docs/protocol.md
#: §3.2): the wide-area pick uses the whole ID modulo the table size, the in-DC pick only its
#: upper 32 bits, so for random Flow IDs the two picks are uncorrelated.
WIDE_SHIFT = 0
LOCAL_SHIFT = 32
assert TABLE_SIZE == 2053 and LOCAL_SHIFT == 32  # written as literals on the hot path


#: an entry: (wide table, local table, wide members, local members, locality). A table is the
#: Maglev tuple of ``ReplicaSet.table``; None means "no exact entry: ask the prefix rules";
#: ``False`` means "no live replica" (an empty exact entry, which no prefix rule overrides).
#: locality is None under ``weighted``, else the accept fractions of ``nearest`` (§3.5).
Entry = tuple[
    tuple[int, ...] | bool | None,
    tuple[int, ...] | bool | None,
    Replicas | None,
    Replicas | None,
    Spill | None,
]
_NEAREST: Spill = ()
_POLICIES = frozenset(p.value for p in Policy)
_ABSENT: Entry = (None, None, None, None, _NEAREST)
#: distinct replica sets and entries kept interned before the caches are rebuilt from use
_INTERN_LIMIT = 65_536


class ObjectSwitch(Switch):
    """Sans-IO object switch. Feed ``receive_datagram``; drain ``datagrams_to_send``.

    Its Object ID tables are compact (docs/protocol.md §3.2): one dict from the raw 32-byte
    Object ID to an interned entry holding both the wide-area and the local Maglev table,
    so a million objects on a few replica sets cost the dict and the keys, and a resolution
    is one dict lookup. Owner-prefix rules (``prefixes``, ``local_prefixes``) answer for IDs
    without an exact entry.
    """

    role: ClassVar[str] = "object-switch"

    def __init__(
        self, name: str, dc: str, *, not_found_rate: float = 200.0, not_found_burst: int = 50
    ) -> None:
        """An object switch of datacenter ``dc``; it answers at most ``not_found_rate``
        ``OBJECT_NOT_FOUND`` signals a second, ``not_found_burst`` at once.

        Raises:
            UsageError: the rate is negative or the burst below 1.
        """
        #: the OBJECT_NOT_FOUND answers' budget (``not_found_rate``, ``not_found_burst``)
        self.not_found_budget = TokenBucket(not_found_rate, not_found_burst)
        super().__init__(name, dc)
        self.resolutions = 0
        self._exact: dict[bytes, Entry] = {}
        self.wide_rules = PrefixTable()
        self.local_rules = PrefixTable()
        # Interned: a million objects on the same replicas share one table and one entry.
        self._sets: dict[Replicas, ReplicaSet] = {}
        self._entries: dict[tuple[Replicas | None, Replicas | None, Spill | None], Entry] = {}
        #: exact entries with a wide part, with a local part
        self._counts = [0, 0]
        #: source DC ID -> destination DC ID -> route cost (µs), for ``nearest`` (§3.5)
        self.dc_costs: dict[int, dict[int, int]] = {}
        #: objects under ``weighted``; accept fractions of objects that spill (§3.5)
        self._weighted: dict[bytes, None] = {}
        self._spill: dict[bytes, Spill] = {}
        self._tiers = TierCache()
        #: first packets resolved at the wide-area level since the last report, per object
        #: with a spill entry and source DC ID (``Demand``, §3.5); the window's start; when
        #: the next report is due (None: nothing to report); whether the last one had flows
        self._demand: dict[bytes, dict[int, int]] = {}
        self._window = 0.0
        self._report_at: float | None = None
        self._reported = False

    # -- tables --------------------------------------------------------------------------

    def _objects_synced(self, parts: list[SwitchTables]) -> None:
        # Built aside and swapped in: packets meanwhile were resolved on the old tables.
        old = self._exact, self.wide_rules, self.local_rules, self.dc_costs, self._weighted, self._spill
        counts = list(self._counts)
        self._exact, self.wide_rules, self.local_rules = {}, PrefixTable(), PrefixTable()
        self.dc_costs, self._weighted, self._spill = {}, {}, {}
        self._tiers.clear()
        self._sets, self._entries, self._counts = {}, {}, [0, 0]
        try:
            self._objects_changed([(part, TableKeys()) for part in parts])
        except BaseException:
            self._exact, self.wide_rules, self.local_rules, self.dc_costs, self._weighted, self._spill = old
            self._counts = counts
            raise

    def _objects_changed(self, parts: list[tuple[SwitchTables, TableKeys]]) -> set[str]:
        changed: set[str] = set()
        for upsert, remove in parts:
            if self._locality_changed(upsert, remove):
                changed.add("locality")
            for level, (exact, rules) in enumerate(
                ((upsert.wide, upsert.prefixes), (upsert.local, upsert.local_prefixes))
            ):
                gone_exact = remove.local if level else remove.wide
                gone_rules = remove.local_prefixes if level else remove.prefixes
                for key in gone_exact:
                    self._set_exact(key, level, None)
                for key, members in exact.items():
                    self._set_exact(key, level, members)
                for key in gone_rules:
                    self._set_rule(key, level, None)
                for key, members in rules.items():
                    self._set_rule(key, level, members)
                if exact or gone_exact or rules or gone_rules:
                    changed.add("local" if level else "wide")
        if len(self._sets) > _INTERN_LIMIT or len(self._entries) > _INTERN_LIMIT:
            self._reintern()
        return changed

    def _locality_changed(self, upsert: SwitchTables, remove: TableKeys) -> bool:
        """Apply the cost table, policies and spill fractions of one part (§3.5)."""
        if remove.dc_costs or upsert.dc_costs:
            for src in remove.dc_costs:
                self.dc_costs.pop(src, None)
            self.dc_costs.update(upsert.dc_costs)
            self._tiers.clear()  # cascades were built on the old costs
        touched: set[bytes] = set()
        for key in (*remove.policies, *upsert.policies):
            raw = self._object_key(key)
            policy = upsert.policies.get(key, Policy.NEAREST.value)
            if raw is None or policy not in _POLICIES:
                self.drops["bad-table-entry"] += 1
            elif policy == Policy.WEIGHTED:
                self._weighted[raw] = None
                touched.add(raw)
            else:
                self._weighted.pop(raw, None)
                touched.add(raw)
        for key in (*remove.spill, *upsert.spill):
            raw = self._object_key(key)
            if raw is None:
                self.drops["bad-table-entry"] += 1
                continue
            fractions = upsert.spill.get(key)
            if fractions is not None:
                # an entry, even empty: the object's replicas declare a capacity, so its
                # demand is counted and reported (``Demand``)
                self._spill[raw] = tuple(sorted((int(d), int(src), int(f)) for d, src, f in fractions))
            else:
                self._spill.pop(raw, None)
                self._demand.pop(raw, None)
            touched.add(raw)
        for raw in touched:
            entry = self._exact.get(raw)
            if entry is not None:
                self._exact[raw] = self._entry(entry[2], entry[3], self._locality(raw))
        return bool(touched or remove.dc_costs or upsert.dc_costs)

    @staticmethod
    def _object_key(key: str) -> bytes | None:
        """The raw Object ID of a table key, or None if it is not 64 hex digits."""
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return None
        return raw if len(raw) == OBJECT_ID_BYTES else None

    def _locality(self, raw: bytes) -> Spill | None:
        """None under ``weighted``, else the object's accept fractions (§3.5)."""
        if raw in self._weighted:
            return None
        return self._spill.get(raw, _NEAREST)

    def _set_exact(self, key: str, level: int, members: Replicas | None) -> None:
        try:
            raw = bytes.fromhex(key)
            if len(raw) != OBJECT_ID_BYTES:
                raise ValueError(key)
            before = self._members(raw)
            wide, local = before
            if level:
                local = None if members is None else tuple(members)
            else:
                wide = None if members is None else tuple(members)
            after = (wide, local)
            for k in (0, 1):
                self._counts[k] += (after[k] is not None) - (before[k] is not None)
            if wide is None and local is None:
                self._exact.pop(raw, None)
            else:
                self._exact[raw] = self._entry(wide, local, self._locality(raw))
        except (ValueError, TypeError, UsageError):
            self.drops["bad-table-entry"] += 1

    def _set_rule(self, key: str, level: int, members: Replicas | None) -> None:
        rules = self.local_rules if level else self.wide_rules
        try:
            text, bits = str(key).split("/")
            prefix, length = int(text, 16), int(bits)
            if members is None:
                rules.remove_prefix(prefix, length)
            else:
                rules.set_prefix(prefix, length, self._set(tuple(members)))
        except (ValueError, TypeError, UsageError):
            self.drops["bad-table-entry"] += 1

    def _members(self, raw: bytes) -> tuple[Replicas | None, Replicas | None]:
        entry = self._exact.get(raw, _ABSENT)
        return entry[2], entry[3]

    def _entry(self, wide: Replicas | None, local: Replicas | None, locality: Spill | None) -> Entry:
        key = (wide, local, locality)
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = (self._table(wide), self._table(local), wide, local, locality)
        return found

    def _table(self, members: Replicas | None) -> tuple[int, ...] | bool | None:
        if members is None:
            return None
        if not members:
            return False
        return self._set(members).table

    def _set(self, members: Replicas) -> ReplicaSet:
        key = tuple((int(t), int(w)) for t, w in members)
        found = self._sets.get(key)
        if found is None:
            found = self._sets[key] = ReplicaSet(key)
        return found

    def _reintern(self) -> None:
        """Drop interned sets and entries that no table uses any more (a bound on both)."""
        live = set(self._exact.values())
        self._entries = {(e[2], e[3], e[4]): e for e in live}
        members = {m for e in live for m in (e[2], e[3]) if m}
        members |= {rs.members for rs in self.wide_rules.values()}
        members |= {rs.members for rs in self.local_rules.values()}
        self._sets = {m: rs for m, rs in self._sets.items() if m in members}

    def table_sizes(self) -> dict[str, int]:
        # What the switch holds: exact entries by level, and prefix rules.
        return {
            "wide": self._counts[0] + len(self.wide_rules),
            "local": self._counts[1] + len(self.local_rules),
            "peers": len(self.tables["peers"]),
        }

    def snapshot(self) -> SwitchTables:
        """The current tables as a record (for status output and tests)."""
        base = super().snapshot()
        wide = {k.hex(): e[2] for k, e in self._exact.items() if e[2] is not None}
        local = {k.hex(): e[3] for k, e in self._exact.items() if e[3] is not None}
        return SwitchTables(
            dc_routes=base.dc_routes,
            host_routes=base.host_routes,
            moved_hosts=base.moved_hosts,
            object_switch=base.object_switch,
            gateway=base.gateway,
            peers=base.peers,
            presence_timeout=base.presence_timeout,
            wide=wide,
            local=local,
            prefixes=self.wide_rules.as_wire(),
            local_prefixes=self.local_rules.as_wire(),
            dc_costs=self.dc_costs,
            policies={k.hex(): Policy.WEIGHTED.value for k in self._weighted},
            spill={k.hex(): v for k, v in self._spill.items()},
        )

    def metrics(self) -> list[Sample]:
        return [*super().metrics(), RESOLUTIONS.sample(self.resolutions)]

    # -- resolution ----------------------------------------------------------------------

    def resolve(self, obj: bytes, flow: int, src_dc: int = 0) -> tuple[int, int] | None:
        """(DC ID, Host ID) for the first packet of ``flow`` from DC ``src_dc`` to ``obj``;
        Host ID 0 when the chosen DC is another one (its own object switch fills it). None:
        nobody serves it.

        The hot path of an object switch: one dict lookup (the prefix rules only for IDs
        without an exact entry), one modulo and one tuple index per level
        (docs/protocol.md §3.2); under ``nearest`` with a cost row for ``src_dc``, the
        wide level is the cached cascade of §3.5 instead. 2053 is ``TABLE_SIZE`` and 32
        ``LOCAL_SHIFT``, as literals.
        """
        entry = self._exact.get(obj)
        if entry is None or entry[0] is None:
            entry = self._by_rules(obj, entry or _ABSENT)
        wide = entry[0]
        if not wide:
            return None
        locality = entry[4]
        if locality is not None and src_dc in self.dc_costs:
            cascade = self._tiers.get((entry[2], src_dc, locality))  # type: ignore[arg-type]
            if cascade is None:
                cascade = self._tiers.cascade(entry[2], src_dc, self.dc_costs, locality)  # type: ignore[arg-type]
            nearest, accept = cascade[0]
            # the common case: the nearest tier takes every flow (one Maglev index, as weighted)
            dc = choose(flow, cascade) if accept else nearest.table[flow % 2053]
        else:
            dc = wide[flow % 2053]  # type: ignore[index]  # WIDE_SHIFT is 0: the whole Flow ID
        if dc != self.dc_id:
            return dc, 0
        local = entry[1]
        if local is None:
            local = self.local_table(obj)
        if not local:
            return None  # the tables disagree for a moment: wide lists this DC, local not yet
        return dc, local[(flow >> 32) % 2053]  # type: ignore[index]

    def _by_rules(self, obj: bytes, entry: Entry) -> Entry:
        """``entry`` with its wide level from the owner-prefix rules (no exact one)."""
        rule = self.wide_rules.lookup(obj)
        if rule is None:
            return (None, entry[1], entry[2], entry[3], entry[4])
        locality = entry[4] if obj in self._exact else self._locality(obj)
        return (rule.table, entry[1], rule.members, entry[3], locality)

    def local_table(self, obj: bytes) -> tuple[int, ...] | None:
        """This DC's Maglev table of hosts for ``obj`` (None: no live replica here)."""
        local = self._exact.get(obj, _ABSENT)[1]
        if local is None:
            rule = self.local_rules.lookup(obj)
            return rule.table if rule is not None else None
        return local or None  # type: ignore[return-value]

    def refine(self, obj: bytes, flow: int, dc: int, host: int, src_dc: int = 0) -> tuple[int, int] | None:
        """Fill what is missing of a destination (docs/protocol.md §3.2).

        A DC ID of this DC without a Host ID is resolved locally; if this DC has no replica
        left, or there is no DC ID, the wide-area table picks a DC (and, if it is this one,
        the local table a host). None when no replica is registered.
        """
        if dc == self.dc_id and not host:
            local = self.local_table(obj)
            if local is not None:
                return dc, local[(flow >> LOCAL_SHIFT) % TABLE_SIZE]
            dc = 0  # no replica left in this DC: resolve at the wide-area level again
        if dc:
            return dc, host
        return self.resolve(obj, flow, src_dc)

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
        refined = self.refine(h.obj, h.flow, h.dst_dc, h.dst_host, h.src_dc)
        if refined is None:
            if self.not_found_budget.take(now):
                self.drops["object-not-found"] += 1
                self._not_found(h)
            else:
                self.drops["not-found-rate-limited"] += 1  # dropped without an answer
            return
        dc, host = refined
        self.resolutions += 1
        if not h.dst_dc and h.obj in self._spill:
            self._count(h.obj, h.src_dc, now)
        buf = bytearray(data)
        buf[TTL_OFFSET] = h.ttl - 1
        DST_LOCATOR.pack_into(buf, DST_OFFSET, dc, host, 0)
        if h.flags & Flags.TRACE:
            self.trace.append(TraceHop(self.name, self.role, h.flow, h.obj, dc, host, 0, h.ttl - 1, now))
        self._out.append((self.gateway or port, buf))

    # -- demand (docs/protocol.md §3.5) ---------------------------------------------------

    def _count(self, obj: bytes, src_dc: int, now: float) -> None:
        """Count a new flow to ``obj`` from ``src_dc``. Bounded: known source DCs only (the
        cost table's), at most ``DEMAND_OBJECTS`` objects per report."""
        if src_dc not in self.dc_costs:
            return
        counts = self._demand.get(obj)
        if counts is None:
            if len(self._demand) >= DEMAND_OBJECTS:
                return
            counts = self._demand[obj] = {}
            if self._report_at is None:
                self._window, self._report_at = now, now + DEMAND_INTERVAL
        counts[src_dc] = counts.get(src_dc, 0) + 1

    def get_timer(self) -> float | None:
        return self._report_at

    def handle_timer(self, now: float) -> None:
        """Report the demand counted since the last report (``Demand``); one empty report
        after the flows stop, then silence until the next one."""
        if self._report_at is None or now < self._report_at:
            return
        flows = {raw.hex(): counts for raw, counts in self._demand.items()}
        self._demand = {}
        if flows or self._reported:
            interval = max(now - self._window, 1e-3)
            self._control_out.append(control.Demand(node=self.name, interval=interval, flows=flows))
        self._reported = bool(flows)
        self._window = now
        self._report_at = now + DEMAND_INTERVAL if flows else None

    def _not_found(self, h: Header) -> None:
        if not h.src_dc or not h.src_host:
            return
        signal = wire_signal.Signal(wire_signal.SignalType.OBJECT_NOT_FOUND)
        reply = h.reply(Proto.SIGNAL, self.dc_id)
        self._out.append((self.gateway, wire_header.encode(reply, wire_signal.encode(signal))))
