"""Where a controller runtime keeps what its core declares durable (docs/protocol.md §6.4).

The controller core emits ``StateChange`` rows; a ``Store`` commits them (``commit``, durable
when it returns, all of one call or none) and hands the whole state back to a starting core
(``load``). ``MemoryStore`` lives as long as the process (the embedded default;
``EmbeddedNetwork`` keeps one across controller restarts); ``FileStore`` keeps a JSON file,
rewritten atomically once per commit, for a controller daemon that may be killed.

The rule both runtimes follow, through ``controller_outputs``: commit the core's state
changes first, then send its records. A ``Welcome`` carrying a new Host ID therefore never
leaves before that Host ID is durable, nor a ``Drain`` before the drain is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from ..core.controller import Controller, ControllerState, StateChange, StateRows
from ..errors import ConfigError
from ..wire.control import ControlMessage
from .atomic_file import write_atomic

__all__ = ["FileStore", "MemoryStore", "Store", "controller_outputs"]


class Store(Protocol):
    def load(self) -> ControllerState | None:
        """Everything committed so far; None if nothing ever was."""
        ...

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Make ``changes`` durable, all of them or none, before returning."""
        ...


class MemoryStore:
    """Keeps the committed rows in memory."""

    def __init__(self) -> None:
        self.rows = StateRows()

    def load(self) -> ControllerState | None:
        return self.rows.snapshot()

    def commit(self, changes: Sequence[StateChange]) -> None:
        self.rows.apply(changes)


class FileStore:
    """Keeps the rows in a JSON file (a ``ControllerState``), rewritten whole and atomically
    at each commit: one write per runtime flush however many rows changed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: StateRows | None = None

    def load(self) -> ControllerState | None:
        """The saved state, or None if there is none yet.

        Raises:
            ConfigError: the file exists but is not a controller state.
            OSError: it cannot be read.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            state = None
        else:
            try:
                state = msgspec.json.decode(data, type=ControllerState)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ConfigError(f"{self.path}: not a controller state file: {exc}") from None
        self._rows = StateRows(state)
        return state

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Apply ``changes`` and rewrite the file.

        Raises:
            ConfigError: the file holds no controller state (on the first commit).
            OSError: the file cannot be read or written.
        """
        if self._rows is None:
            self.load()
        assert self._rows is not None
        self._rows.apply(changes)
        state = self._rows.snapshot()
        if state is not None:
            write_atomic(self.path, msgspec.json.encode(state))


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
