"""What flow and object switches share: control-plane table state and drop counters.

A switch keeps forwarding on its last tables when the controller is gone (docs/protocol.md
§6.3): nothing here expires tables; only a ``TableSync`` replaces them.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from ..wire import control
from ..wire.control import ControlMessage, SwitchTables, TableDelta, TableSync
from .events import Datagram, TraceHop

__all__ = ["Switch"]

_TABLE_NAMES = ("dc_routes", "host_routes", "moved_hosts", "wide", "local", "prefixes", "peers")


class Switch:
    """Base of ``FlowSwitch`` and ``ObjectSwitch``: tables from the controller, counters."""

    role: ClassVar[str] = "switch"

    def __init__(self, name: str, dc: str) -> None:
        self.name = name
        self.dc = dc
        self.dc_id = 0
        self.version = 0
        self.synced = False
        self.tables: dict[str, dict[object, object]] = {n: {} for n in _TABLE_NAMES}
        self.object_switch = ""
        self.gateway = ""
        #: packets dropped, by reason
        self.drops: Counter[str] = Counter()
        #: notable things done to packets that were not dropped (redirects, corrections)
        self.counters: Counter[str] = Counter()
        self.forwarded = 0
        self.trace: list[TraceHop] = []
        self._out: list[Datagram] = []
        self._control_out: list[ControlMessage] = []

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
        else:
            self.drops["unexpected-control"] += 1

    def tables_changed(self, names: set[str] | None) -> None:
        """Hook: rebuild derived structures after tables changed (None = everything)."""

    def control_to_send(self) -> list[ControlMessage]:
        out, self._control_out = self._control_out, []
        return out

    # -- data plane ----------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def peer_address(self, name: str) -> tuple[str, int] | None:
        """The UDP address the controller gave for neighbour ``name``."""
        address = self.tables["peers"].get(name)
        return address if isinstance(address, tuple) else None

    def table_entries(self) -> int:
        """Entries in all forwarding tables (flow-independent by design)."""
        return sum(len(t) for t in self.tables.values())

    def snapshot(self) -> SwitchTables:
        """The current tables as a record (for status output and tests)."""
        return SwitchTables(
            **{n: dict(self.tables[n]) for n in _TABLE_NAMES},  # type: ignore[arg-type]
            object_switch=self.object_switch,
            gateway=self.gateway,
        )
