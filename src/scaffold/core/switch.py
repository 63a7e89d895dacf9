"""What flow and object switches share: control-plane table state, events and metrics.

A switch keeps forwarding on its last tables when the controller is gone (docs/protocol.md
§6.3): nothing here expires tables; only a ``TableSync`` replaces them. Switches have no
timers; their events tell the runtime about new tables and neighbours' addresses.
"""

from __future__ import annotations

from collections import deque

from ..wire import control
from ..wire.control import ControlMessage, SwitchTables, TableDelta, TableSync
from .engine import NodeCore
from .events import Address, NeighboursLearned, TablesApplied
from .metrics import MetricKind, Sample, define

__all__ = ["TABLE_ENTRIES", "TABLE_VERSION", "Switch", "SwitchEvent"]

_TABLE_NAMES = ("dc_routes", "host_routes", "moved_hosts", "wide", "local", "prefixes", "peers")

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
        self.tables: dict[str, dict[object, object]] = {n: {} for n in _TABLE_NAMES}
        self.object_switch = ""
        self.gateway = ""

    @property
    def ready(self) -> bool:
        return self.synced

    # -- control plane -------------------------------------------------------------------

    def hello(self, address: tuple[str, int] | None = None) -> None:
        """Queue the ``Hello`` that opens a (re)connection to the controller."""
        self._control_out.append(control.Hello(node=self.name, role=self.role, dc=self.dc, address=address))

    def receive_control(self, message: ControlMessage, now: float) -> None:
        """Apply a record from the controller; a gap in versions asks for a full sync."""
        if isinstance(message, TableSync):
            self.dc_id = message.dc_id
            for name in _TABLE_NAMES:
                self.tables[name] = dict(getattr(message.tables, name))
            self.object_switch = message.tables.object_switch
            self.gateway = message.tables.gateway
            self.version = message.version
            self.synced = True
            self.tables_changed(None)
            self._applied(peers_changed=True)
        elif isinstance(message, TableDelta):
            if not self.synced or message.version != self.version + 1:
                self.drops["stale-table-delta"] += 1
                self._control_out.append(control.SyncRequest(node=self.name, have_version=self.version))
                return
            changed: set[str] = set()
            for name in _TABLE_NAMES:
                table = self.tables[name]
                for key in getattr(message.remove, name):
                    table.pop(key, None)
                    changed.add(name)
                upsert = getattr(message.upsert, name)
                if upsert:
                    table.update(upsert)
                    changed.add(name)
            if message.upsert.object_switch:
                self.object_switch = message.upsert.object_switch
            if message.upsert.gateway:
                self.gateway = message.upsert.gateway
            self.version = message.version
            self.tables_changed(changed)
            self._applied(peers_changed="peers" in changed)
        else:
            self.drops["unexpected-control"] += 1

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
            **{n: dict(self.tables[n]) for n in _TABLE_NAMES},  # type: ignore[arg-type]
            object_switch=self.object_switch,
            gateway=self.gateway,
        )
