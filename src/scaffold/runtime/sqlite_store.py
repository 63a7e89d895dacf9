"""``SqliteStore``: the controller's durable rows in SQLite, the embedded default
(docs/protocol.md §6.4).

Two tables, each row a durable record as MessagePack: ``log(seq, kind, key, record)``, where
every commit *appends* its changes (``record`` NULL: the row is deleted), and ``rows(kind,
key, record)``, the base the log is folded into. A commit appends to the end of the log, so
it writes a few pages whatever the number of rows; an upsert into a table keyed by Object ID
would write one page per row at a random place -- its cost grows with the table (measured:
27 ms per 1,000 rows at 20,000 rows, 100 ms at 100,000). Once the log holds as many rows as
the base (and at least ``COMPACT_MIN``), the next commit folds it in, keys sorted, in one
transaction: with the base doubling between folds, each row is folded a bounded number of
times, so a registration's cost does not depend on how many there are. ``load`` reads the base
and replays the log over it.

WAL mode, ``synchronous=FULL``: a commit (and a fold) is durable when it returns, on disk
and not only in the operating system's cache, all of it or none. The aio controller runtime
calls ``commit`` from a thread of its own and gathers every change made meanwhile into the
next one (a *group commit*), so the event loop never waits for the disk and one fsync
serves all the registrations in it (``runtime/aio/controller.py``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from ..core.controller import ControllerState, StateChange
from ..core.controller.state import StateRecord, decode_row, encode_row
from ..errors import ConfigError

__all__ = ["COMPACT_MIN", "SqliteStore"]

#: the log is folded into the base once it holds this many rows and as many as the base
COMPACT_MIN = 50_000
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rows (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        record BLOB
    )""",
)
#: the log's last change of each row (SQLite takes a bare column from the row of max(seq))
_LAST = "SELECT kind, key, record, max(seq) FROM log GROUP BY kind, key"
_FOLD = (
    f"INSERT OR REPLACE INTO rows SELECT kind, key, record FROM ({_LAST}) WHERE record IS NOT NULL",
    f"DELETE FROM rows WHERE (kind, key) IN (SELECT kind, key FROM ({_LAST}) WHERE record IS NULL)",
    # Dropped and made anew: a DELETE would rewrite every page of the log.
    "DROP TABLE log",
    _SCHEMA[1],
)
Row = tuple[str, str, bytes | None]


class SqliteStore:
    """The controller's rows in a SQLite database file (WAL mode, an append-only log of
    changes folded into a base table)."""

    #: ``commit`` waits for the disk: runtimes call it off their event loop
    blocking: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str], *, compact_min: int = COMPACT_MIN) -> None:
        self.path = Path(path)
        self.compact_min = compact_min
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        #: rows in the log and in the base (counted when the file is opened)
        self._log_rows = 0
        self._base_rows = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                # A fold sorts the log (GROUP BY) and rewrites the base: in memory, with a
                # 64 MiB page cache, it takes a third of the time it takes on disk.
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cache_size=-65536")
                for statement in _SCHEMA:
                    conn.execute(statement)
                self._log_rows = conn.execute("SELECT count(*) FROM log").fetchone()[0]
                self._base_rows = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
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
                conn = self._connection()
                # One read transaction: the base and the log as of one moment.
                conn.execute("BEGIN")
                try:
                    latest: dict[tuple[str, str], bytes | None] = {
                        (kind, key): blob
                        for kind, key, blob in conn.execute("SELECT kind, key, record FROM rows")
                    }
                    for kind, key, blob in conn.execute("SELECT kind, key, record FROM log ORDER BY seq"):
                        latest[(kind, key)] = blob
                finally:
                    conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{self.path}: not a controller store: {exc}") from None
        records: list[StateRecord] = []
        for (kind, _key), blob in latest.items():
            if blob is None:
                continue
            try:
                records.append(decode_row(kind, blob))
            except ValueError as exc:
                raise ConfigError(f"{self.path}: {exc}") from None
        return ControllerState.of(records) if records else None

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Append ``changes`` to the log in one transaction, durable when this returns; fold
        the log into the base first if it has grown as large as the base.

        Raises:
            OSError: the database cannot be opened or written (``sqlite3.Error`` is raised
                as ``OSError``, so runtimes handle every store alike).
        """
        if not changes:
            return
        last = {(c.kind, c.key): c for c in changes}  # a group commit may touch a row twice
        rows: list[Row] = [
            (c.kind, c.key, None if c.record is None else encode_row(c.record)) for c in last.values()
        ]
        with self._lock:
            try:
                conn = self._connection()
                _transaction(conn, "INSERT INTO log (kind, key, record) VALUES (?, ?, ?)", rows)
                self._log_rows += len(rows)
                if self._log_rows >= max(self.compact_min, self._base_rows):
                    self._fold(conn)
            except sqlite3.Error as exc:
                raise OSError(f"{self.path}: {exc}") from exc

    def _fold(self, conn: sqlite3.Connection) -> None:
        """Fold the log into the base -- the last change of each row, in key order, so each
        page of the base is written once -- and empty it; one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _FOLD:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._log_rows = 0
        self._base_rows = conn.execute("SELECT count(*) FROM rows").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _transaction(conn: sqlite3.Connection, statement: str, rows: Iterable[Row]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(statement, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
