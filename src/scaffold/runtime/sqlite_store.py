"""``SqliteStore``: the controller's durable rows in SQLite, the embedded default
(docs/protocol.md §6.4).

Each durable record is a row of MessagePack, in two SQLite files. The store's file holds
``log(seq, kind, key, record)``, where every commit *appends* its changes (``record`` NULL:
the row is deleted); the file beside it (``…-base``) holds ``rows(kind, key, record)``, the
base the log is folded into. A commit appends to the end of the log, so it writes a few pages
whatever the number of rows -- an upsert into a table keyed by Object ID writes a page per row
at a random place, and its cost grows with the table (measured: 27 ms per 1,000 rows at
20,000 rows, 100 ms at 100,000). ``load`` reads the base and replays the log over it.

**Folds, off the commit path.** Once the log holds as many rows as the base (and at least
``COMPACT_MIN``), a thread of the store writes a new base file -- the old base with the log's
last change of each row up to the latest ``seq`` applied, in key order -- and renames it over
the old one; the next commit then drops the folded part of the log. Commits go on meanwhile:
the fold reads the log from a snapshot of its own (WAL readers never block the writer) and
writes another file. Replaying a folded part of the log over a base that holds it changes
nothing, so a crash at any point loads the same rows -- and so the folded part is dropped a
little at a time: each commit deletes at most ``DROP_CHUNK`` of its rows (deleting 400,000 at
once stalled that commit 1.2 s, most of it writing and fsyncing the freed pages). With the base
doubling between folds, a row is folded a bounded number of times: a registration's cost does
not depend on how many there are. The fold's thread runs at the lowest CPU priority
(``FOLD_NICE``): its seconds of CPU (3-4 per 400,000 rows) would otherwise be taken from the
core's thread beside it whenever the machine is busy -- the threads of a process share one
scheduling group -- and the registrations of those seconds would wait.

**Many rows per statement.** A commit inserts its rows ``INSERT_ROWS`` to a statement, not one
statement per row: SQLite runs without the GIL, so each statement hands it back and forth, and
a thread committing while the event loop is busy waits up to the interpreter's switch interval
(5 ms) for it each time -- one row per hand-off made a 1,000-row commit take 0.3-0.6 s beside
a busy thread (2 ms alone; in chunks, 20 ms), and the daemon's group commits grew to tens of
thousands of rows behind it (``bench/control_plane.py``).

WAL mode, ``synchronous=FULL``: a commit is durable when it returns, on disk and not only in
the operating system's cache, all of it or none (a new base is fsynced before its rename).
The aio controller runtime calls ``commit`` from a thread of its own and gathers every change
made meanwhile into the next one (a *group commit*), so the event loop never waits for the
disk and one fsync serves all the registrations in it (``runtime/aio/controller.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from ..core.controller import ControllerState, StateChange
from ..core.controller.state import StateRecord, decode_row, encode_row
from ..errors import ConfigError

__all__ = ["COMPACT_MIN", "DROP_CHUNK", "FOLD_NICE", "INSERT_ROWS", "SqliteStore"]

#: the log is folded into the base once it holds this many rows and as many as the base
COMPACT_MIN = 50_000
#: at most this many folded rows are dropped from the log per commit (more than a commit
#: usually appends, so the log shrinks between folds)
DROP_CHUNK = 5_000
#: the nice value a fold's thread runs at (the lowest priority): it yields the CPU to the core
FOLD_NICE = 19
#: rows appended per ``INSERT`` statement (3 variables each: SQLite before 3.32 allowed 999)
INSERT_ROWS = 1_000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 333
_ROWS = """CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID"""
_LOG = """CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    record BLOB
)"""
#: a new base: the old one (``old``), then the log's last change of each row up to ``?``
#: (SQLite takes the bare column ``record`` from the row of ``max(seq)``)
_FOLD = (
    _ROWS,
    "CREATE TEMP TABLE last (kind TEXT, key TEXT, record BLOB, PRIMARY KEY (kind, key)) WITHOUT ROWID",
    "INSERT INTO last SELECT kind, key, record FROM "
    "(SELECT kind, key, record, max(seq) FROM cur.log WHERE seq <= :upto GROUP BY kind, key)",
    "INSERT INTO rows SELECT kind, key, record FROM old.rows",
    "INSERT OR REPLACE INTO rows SELECT kind, key, record FROM last WHERE record IS NOT NULL",
    "DELETE FROM rows WHERE (kind, key) IN (SELECT kind, key FROM last WHERE record IS NULL)",
)


class SqliteStore:
    """The controller's rows in a SQLite database file (WAL mode, an append-only log of
    changes) and a base file beside it that the log is folded into."""

    #: ``commit`` waits for the disk: runtimes call it off their event loop
    blocking: ClassVar[bool] = True

    def __init__(
        self, path: str | os.PathLike[str], *, compact_min: int = COMPACT_MIN, drop_chunk: int = DROP_CHUNK
    ) -> None:
        self.path = Path(path)
        self.base_path = self.path.with_name(self.path.name + "-base")
        self.compact_min = compact_min
        self.drop_chunk = drop_chunk
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        #: rows in the log and in the base (counted when the files are opened)
        self._log_rows = 0
        self._base_rows = 0
        #: the fold under way, and what a finished one folded: (up to seq, log rows, base rows)
        self._fold: threading.Thread | None = None
        self._folded: tuple[int, int, int] | None = None
        #: the log's rows up to this seq are in the base: dropped ``drop_chunk`` per commit
        self._drop_upto = 0
        #: after a failed fold, the next waits until the log is this long (no retry storm)
        self._fold_at = 0
        self.fold_error: BaseException | None = None
        #: folds finished so far, and the nice value the last one ran at (for reports)
        self.folds = 0
        self.fold_nice: int | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(_LOG)
                self._log_rows = conn.execute("SELECT count(*) FROM log").fetchone()[0]
                with self._base(conn):
                    self._base_rows = conn.execute("SELECT count(*) FROM base.rows").fetchone()[0]
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _base(self, conn: sqlite3.Connection) -> Iterator[None]:
        """The base file attached as ``base`` (made empty if there is none yet) in this block
        only: a commit's transaction never holds a lock on it (a fold reads it meanwhile, and
        renames another file over it)."""
        conn.execute("ATTACH DATABASE ? AS base", (str(self.base_path),))
        try:
            conn.execute(_ROWS.replace("EXISTS rows", "EXISTS base.rows"))
            yield
        finally:
            conn.execute("DETACH DATABASE base")

    def load(self) -> ControllerState | None:
        """Every committed row as one state; None if nothing was ever committed.

        Raises:
            ConfigError: the files are not SQLite databases of controller rows.
            OSError: the files or their directory cannot be made or read.
        """
        with self._lock:
            try:
                conn = self._connection()
                # One read transaction: the base and the log as of one moment.
                with self._base(conn):
                    conn.execute("BEGIN")
                    try:
                        latest: dict[tuple[str, str], bytes | None] = {
                            (kind, key): blob
                            for kind, key, blob in conn.execute("SELECT kind, key, record FROM base.rows")
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
        """Append ``changes`` to the log in one transaction, durable when this returns (and
        drop up to ``drop_chunk`` rows of the part of the log a finished fold holds; start a
        fold when the log is as large as the base and the last fold's part is gone).

        Raises:
            OSError: the database cannot be opened or written (``sqlite3.Error`` is raised
                as ``OSError``, so runtimes handle every store alike).
        """
        if not changes:
            return
        last = {(c.kind, c.key): c for c in changes}  # a group commit may touch a row twice
        rows = [(c.kind, c.key, None if c.record is None else encode_row(c.record)) for c in last.values()]
        with self._lock:
            try:
                conn = self._connection()
                folded = self._folded
                if folded is not None:  # the base file was replaced: its part of the log goes
                    self._folded = None
                    self._drop_upto, self._base_rows = folded[0], folded[2]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    dropped, upto = 0, 0
                    if self._drop_upto:
                        first = conn.execute("SELECT min(seq) FROM log").fetchone()[0] or 0
                        upto = min(self._drop_upto, first + self.drop_chunk - 1)
                        dropped = conn.execute("DELETE FROM log WHERE seq <= ?", (upto,)).rowcount
                    for start in range(0, len(rows), INSERT_ROWS):
                        chunk = rows[start : start + INSERT_ROWS]
                        conn.execute(_insert_statement(len(chunk)), [v for row in chunk for v in row])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OSError(f"{self.path}: {exc}") from exc
            self._log_rows += len(rows) - dropped
            if upto == self._drop_upto:
                self._drop_upto = 0  # all of the folded part is gone
            due = max(self.compact_min, self._base_rows, self._fold_at)
            if self._fold is None and self._folded is None and not self._drop_upto and self._log_rows >= due:
                upto, count = conn.execute("SELECT max(seq), count(*) FROM log").fetchone()
                self._fold = threading.Thread(
                    target=self._fold_base, args=(upto, count), name="sqlite-fold", daemon=True
                )
                self._fold.start()

    def _fold_base(self, upto: int, count: int) -> None:
        """(A thread.) Write the old base with the log up to ``upto`` folded in to a new
        file, fsync it and rename it over the base; the next commit drops that part of the
        log. A failure leaves the base and the log as they were (``fold_error``)."""
        fresh = self.base_path.with_name(self.base_path.name + ".new")
        self.fold_nice = _yield_cpu()
        try:
            fresh.unlink(missing_ok=True)
            conn = sqlite3.connect(fresh, isolation_level=None)
            try:
                # A file nobody reads until it is renamed: no journal; sorts in memory.
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cache_size=-65536")
                conn.execute("ATTACH DATABASE ? AS old", (str(self.base_path),))
                conn.execute("ATTACH DATABASE ? AS cur", (str(self.path),))
                conn.execute(_ROWS.replace("EXISTS rows", "EXISTS old.rows"))
                conn.execute("BEGIN")
                for statement in _FOLD:
                    conn.execute(statement, {"upto": upto} if ":upto" in statement else {})
                conn.execute("COMMIT")
                base_rows = conn.execute("SELECT count(*) FROM main.rows").fetchone()[0]
            finally:
                conn.close()
            with open(fresh, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(fresh, self.base_path)
            _fsync_directory(self.base_path.parent)
            self._folded = (upto, count, base_rows)
            self.folds += 1
        except (sqlite3.Error, OSError) as exc:
            self.fold_error = exc
            self._fold_at = 2 * count
            with contextlib.suppress(OSError):
                fresh.unlink(missing_ok=True)
        finally:
            self._fold = None

    @property
    def folding(self) -> bool:
        """A fold is under way (in its thread)."""
        return self._fold is not None

    def wait_fold(self, timeout: float | None = None) -> None:
        """Wait until the fold under way (if any) is done (for tests and ``close``)."""
        fold = self._fold
        if fold is not None:
            fold.join(timeout)

    def close(self) -> None:
        self.wait_fold()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


@functools.lru_cache(maxsize=8)
def _insert_statement(rows: int) -> str:
    """An ``INSERT`` of ``rows`` rows into the log, in one statement."""
    return "INSERT INTO log (kind, key, record) VALUES " + ", ".join(["(?, ?, ?)"] * rows)


def _yield_cpu() -> int | None:
    """Run the calling thread (a fold) at the lowest CPU priority, ``FOLD_NICE``, and return
    its nice value now (None where threads have none). Linux keeps a nice value per thread,
    so the rest of the process keeps its own; if the system refuses, the fold runs as it is."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, FOLD_NICE)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except (AttributeError, OSError):
        return None


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
