"""``SqliteStore``: the controller's durable rows in SQLite, the embedded default
(docs/protocol.md §6.4).

One table, one row per durable record -- ``rows(kind, key, record)``, the record as
MessagePack -- in WAL mode, so a commit appends to the log instead of rewriting the
database, and readers never block the writer. ``commit`` applies a batch of ``StateChange``s
in one transaction: durable when it returns (``synchronous=FULL``), all of it or none. The
aio controller runtime calls it from a thread of its own and gathers every change made
meanwhile into the next commit (a *group commit*), so the event loop never waits for the
disk and the cost of a commit is shared by all the registrations in it
(``runtime/aio/controller.py``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from ..core.controller import ControllerState, StateChange
from ..core.controller.state import StateRecord, decode_row, encode_row
from ..errors import ConfigError

__all__ = ["SqliteStore"]

_UPSERT = "INSERT OR REPLACE INTO rows (kind, key, record) VALUES (?, ?, ?)"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID
"""


class SqliteStore:
    """The controller's rows in a SQLite database file (WAL mode, one row per record)."""

    #: ``commit`` waits for the disk: runtimes call it off their event loop
    blocking: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def load(self) -> ControllerState | None:
        """Every committed row as one state; None if nothing was ever committed.

        Raises:
            ConfigError: the file is not a SQLite database of controller rows.
            OSError: the file or its directory cannot be made or read.
        """
        with self._lock:
            try:
                rows = self._connection().execute("SELECT kind, key, record FROM rows").fetchall()
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{self.path}: not a controller store: {exc}") from None
        records: list[StateRecord] = []
        for kind, _key, blob in rows:
            try:
                records.append(decode_row(kind, blob))
            except ValueError as exc:
                raise ConfigError(f"{self.path}: {exc}") from None
        return ControllerState.of(records) if records else None

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Apply ``changes`` in one transaction, durable when this returns.

        Raises:
            OSError: the database cannot be opened or written (``sqlite3.Error`` is raised
                as ``OSError``, so runtimes handle every store alike).
        """
        if not changes:
            return
        last = {(c.kind, c.key): c for c in changes}  # a group commit may touch a row twice
        upserts = [(c.kind, c.key, encode_row(c.record)) for c in last.values() if c.record is not None]
        deletes = [(c.kind, c.key) for c in last.values() if c.record is None]
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("DELETE FROM rows WHERE kind = ? AND key = ?", deletes)
                    conn.executemany(
                        "INSERT OR REPLACE INTO rows (kind, key, record) VALUES (?, ?, ?)", upserts
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OSError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
