"""Where a controller runtime keeps what its core declares durable (docs/protocol.md §6.4).

The controller core emits ``StateChange`` rows; a ``Store`` commits them (``commit``, durable
when it returns, all of one call or none) and hands the whole state back to a starting core
(``load``). ``MemoryStore`` lives as long as the process (the embedded default;
``EmbeddedNetwork`` keeps one across controller restarts); ``SqliteStore``
(``sqlite_store.py``) keeps one row per record on disk, for a controller that may be killed;
``runtime/etcd/`` keeps them in etcd for replicated controllers. A store whose ``commit``
waits for a disk or a cluster says so (``blocking``): the aio runtime commits it from a
thread, grouping the changes made meanwhile.

The rule both runtimes follow, through ``controller_outputs``: commit the core's state
changes first, then send its records. A ``Welcome`` carrying a new Host ID therefore never
leaves before that Host ID is durable, nor a ``Drain`` before the drain is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from ..core.controller import Controller, ControllerState, StateChange, StateRows
from ..wire.control import ControlMessage

__all__ = ["MemoryStore", "Store", "controller_outputs"]


class Store(Protocol):
    #: ``commit`` waits for I/O (a disk, a cluster): call it off the event loop
    blocking: ClassVar[bool]

    def load(self) -> ControllerState | None:
        """Everything committed so far; None if nothing ever was."""
        ...

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Make ``changes`` durable, all of them or none, before returning."""
        ...


class MemoryStore:
    """Keeps the committed rows in memory."""

    blocking: ClassVar[bool] = False

    def __init__(self) -> None:
        self.rows = StateRows()

    def load(self) -> ControllerState | None:
        return self.rows.snapshot()

    def commit(self, changes: Sequence[StateChange]) -> None:
        self.rows.apply(changes)


def controller_outputs(core: Controller, store: Store) -> list[tuple[str, ControlMessage]]:
    """Commit the state changes ``core`` emitted to ``store``, then return the records it
    queued, for the runtime to send: in this order, so that no record leaves before the
    state it depends on is durable.

    Raises:
        OSError: the store cannot write. Nothing is returned to send: the records stay queued
            in the core and the rows are emitted again, for the next call to retry.
    """
    changes = core.state_changes()
    if changes:
        try:
            store.commit(changes)
        except BaseException:
            core.state_not_committed(changes)
            raise
    return core.messages_to_send()
