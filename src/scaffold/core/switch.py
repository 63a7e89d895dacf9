"""What flow and object switches share: control-plane table state, events and metrics.

A switch keeps forwarding on its last tables when the controller is gone (docs/protocol.md
§6.3): nothing here expires tables; only a ``TableSync`` replaces them. A sync or a delta may
come in parts (``more``, §6.2): the parts are held until the last one arrives and then
applied at once, so the switch forwards on its old tables until the new version is complete.
Events tell the runtime about new tables and neighbours' addresses.

The tables of routes and addresses (``ROUTE_TABLES``) are kept here as dicts; an object
switch keeps its Object ID tables in its own compact form (``_objects_synced``,
``_objects_changed``).
"""

from __future__ import annotations

from collections import deque

from ..wire import control
from ..wire.control import ControlMessage, SwitchTables, TableDelta, TableSync
from .engine import NodeCore
from .events import Address, NeighboursLearned, TablesApplied
from .metrics import MetricKind, Sample, define

__all__ = ["MAX_STAGED_PARTS", "ROUTE_TABLES", "TABLE_ENTRIES", "TABLE_VERSION", "Switch", "SwitchEvent"]

#: the tables every switch keeps as plain dicts (object tables: ``ObjectSwitch``)
ROUTE_TABLES = ("dc_routes", "host_routes", "moved_hosts", "attached", "peers")
#: parts of one sync or delta a switch holds before it gives up and asks for a sync
MAX_STAGED_PARTS = 4096

SwitchEvent = TablesApplied | NeighboursLearned

TABLE_ENTRIES = define(
    "table_entries",
    MetricKind.GAUGE,
    "Entries in a switch's forwarding tables, by table; they never grow with flows.",
    labels=("table",),
)
TABLE_VERSION = define(
    "table_version", MetricKind.GAUGE, "Version of the tables a switch applied last (0: none yet)."
)


class Switch(NodeCore[SwitchEvent]):
    """Base of ``FlowSwitch`` and ``ObjectSwitch``: tables from the controller, counters."""

    def __init__(self, name: str, dc: str) -> None:
        super().__init__(name)
        self.dc = dc
        self.dc_id = 0
        self.version = 0
        self.synced = False
        self.tables: dict[str, dict[object, object]] = {n: {} for n in ROUTE_TABLES}
        #: parts of a sync or delta received so far (applied when the last one is in)
        self._staged: list[TableSync | TableDelta] = []
        self.object_switch = ""
        self.gateway = ""
        #: silence after which an attached host is reported down (flow switches; 0: never)
        self.presence_timeout = 0.0
        #: the time of the control record being applied (for hooks that start a clock)
        self._now = 0.0

    @property
    def ready(self) -> bool:
        return self.synced

    # -- control plane -------------------------------------------------------------------

    def hello(self, address: tuple[str, int] | None = None) -> None:
        """Queue the ``Hello`` that opens a (re)connection to the controller."""
        self._control_out.append(control.Hello(node=self.name, role=self.role, dc=self.dc, address=address))

    def receive_control(self, message: ControlMessage, now: float) -> None:
        """Apply a record from the controller; a gap in versions asks for a full sync."""
        self._now = now
        if isinstance(message, TableSync | TableDelta):
            self._receive_part(message)
        else:
            self.drops["unexpected-control"] += 1

    def _receive_part(self, message: TableSync | TableDelta) -> None:
        staged = self._staged
        if staged and (type(staged[0]) is not type(message) or staged[0].version != message.version):
            # A sync supersedes parts of anything else; other interleavings are out of order.
            staged.clear()
            if isinstance(message, TableDelta):
                self._stale()
                return
        if (
            not staged
            and isinstance(message, TableDelta)
            and (not self.synced or message.version != self.version + 1)
        ):
            self._stale()
            return
        if len(staged) >= MAX_STAGED_PARTS:
            staged.clear()
            self._stale()
            return
        staged.append(message)
        if message.more:
            return  # forward on the old tables until the last part is in
        self._staged = []
        if isinstance(message, TableSync):
            self._apply_sync([p for p in staged if isinstance(p, TableSync)])
        else:
            self._apply_delta([p for p in staged if isinstance(p, TableDelta)])

    def _stale(self) -> None:
        self.drops["stale-table-delta"] += 1
        self._control_out.append(control.SyncRequest(node=self.name, have_version=self.version))

    def _apply_sync(self, parts: list[TableSync]) -> None:
        tables: dict[str, dict[object, object]] = {n: {} for n in ROUTE_TABLES}
        for part in parts:
            for name in ROUTE_TABLES:
                tables[name].update(getattr(part.tables, name))
            self.object_switch = part.tables.object_switch or self.object_switch
            self.gateway = part.tables.gateway or self.gateway
            self.presence_timeout = part.tables.presence_timeout or self.presence_timeout
        self._objects_synced([p.tables for p in parts])
        self.tables = tables
        self.dc_id = parts[-1].dc_id
        self.version = parts[-1].version
        self.synced = True
        self.tables_changed(None)
        self._applied(peers_changed=True)

    def _apply_delta(self, parts: list[TableDelta]) -> None:
        changed: set[str] = set()
        for part in parts:
            for name in ROUTE_TABLES:
                table = self.tables[name]
                for key in getattr(part.remove, name):
                    table.pop(key, None)
                    changed.add(name)
                upsert = getattr(part.upsert, name)
                if upsert:
                    table.update(upsert)
                    changed.add(name)
            if part.upsert.object_switch:
                self.object_switch = part.upsert.object_switch
            if part.upsert.gateway:
                self.gateway = part.upsert.gateway
        changed |= self._objects_changed([(p.upsert, p.remove) for p in parts])
        self.version = parts[-1].version
        self.tables_changed(changed)
        self._applied(peers_changed="peers" in changed)

    def _objects_synced(self, parts: list[SwitchTables]) -> None:
        """Hook: replace the Object ID tables with those of a complete sync."""

    def _objects_changed(self, parts: list[tuple[SwitchTables, control.TableKeys]]) -> set[str]:
        """Hook: apply a complete delta to the Object ID tables; the names of those changed."""
        return set()

    def tables_changed(self, names: set[str] | None) -> None:
        """Hook: rebuild derived structures after tables changed (None = everything)."""

    def _applied(self, *, peers_changed: bool) -> None:
        # Each event supersedes a queued one of its kind (it carries the whole state), so
        # the queue stays bounded even if nobody drains it.
        events: list[SwitchEvent] = [TablesApplied(self.version)]
        if peers_changed:
            events.insert(0, NeighboursLearned(self._peer_addresses()))
        kinds = {type(e) for e in events}
        self._events = deque(e for e in self._events if type(e) not in kinds)
        self._events.extend(events)

    def _peer_addresses(self) -> dict[str, Address]:
        out: dict[str, Address] = {}
        for name, address in self.tables["peers"].items():
            if isinstance(address, list | tuple) and len(address) == 2:
                out[str(name)] = (str(address[0]), int(address[1]))
        return out

    # -- metrics -------------------------------------------------------------------------

    def table_sizes(self) -> dict[str, int]:
        """Entries per forwarding table (flow-independent by design)."""
        return {name: len(table) for name, table in self.tables.items()}

    def metrics(self) -> list[Sample]:
        return [
            *super().metrics(),
            *TABLE_ENTRIES.by(self.table_sizes()),
            TABLE_VERSION.sample(self.version),
        ]

    def snapshot(self) -> SwitchTables:
        """The current tables as a record (for status output and tests)."""
        return SwitchTables(
            **{n: dict(self.tables[n]) for n in ROUTE_TABLES},  # type: ignore[arg-type]
            object_switch=self.object_switch,
            gateway=self.gateway,
            presence_timeout=self.presence_timeout,
        )
