"""``EtcdStore``: the leading controller replica's durable rows in etcd (docs/protocol.md §6.4,
§6.8).

A commit is one etcd transaction per ``TXN_OPS`` rows (etcd's default limit is 128 operations
per transaction), each guarded by compares: the leader key must still name this replica (a
replica that lost its lease can never write again: *fencing*), and the first transaction of
a commit that changes the Host ID counter swaps it from the value this replica last stored
(*compare-and-swap*), so no Host ID is ever handed out twice, whatever two replicas believe.
A failed compare raises ``OSError``, like a disk that cannot write: the runtime holds the
records back (commit, then send) and the replica steps down.

``commit`` blocks (``blocking``): the runtime calls it from its commit thread, and the etcd
calls run on the replica's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from ...core.controller import ControllerState, StateChange, StateRows
from ...core.controller.state import HostIdCounter, encode_row
from .client import Etcd, EtcdError, Keys

__all__ = ["TXN_OPS", "EtcdStore"]

#: row writes per etcd transaction (etcd's default --max-txn-ops is 128)
TXN_OPS = 120


class EtcdStore:
    """The rows of network ``keys`` in etcd, written only while ``name`` holds the leader key."""

    blocking: ClassVar[bool] = True

    def __init__(
        self, etcd: Etcd, keys: Keys, name: str, loop: asyncio.AbstractEventLoop, rows: StateRows
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.name = name
        self.loop = loop
        #: the replica's mirror of the rows, kept by its watch (which sees this store's writes
        #: too): ``load`` returns them
        self.rows = rows
        counter = rows.rows.get((HostIdCounter.kind, ""))
        self._counter: bytes | None = encode_row(counter) if counter is not None else None

    def load(self) -> ControllerState | None:
        return self.rows.snapshot()

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Write ``changes`` (from the commit thread), durable in etcd when this returns.

        Raises:
            OSError: etcd cannot be reached, or this replica does not lead any more.
        """
        future = asyncio.run_coroutine_threadsafe(self.commit_async(changes), self.loop)
        future.result()

    async def commit_async(self, changes: Sequence[StateChange]) -> None:
        """``commit`` on the event loop.

        Raises:
            OSError: as ``commit``.
        """
        last = {(c.kind, c.key): c for c in changes}
        ordered = sorted(last.values(), key=lambda c: c.kind != HostIdCounter.kind)  # the counter first
        counter_row = last.get((HostIdCounter.kind, ""))
        for start in range(0, len(ordered), TXN_OPS):
            await self._transaction(ordered[start : start + TXN_OPS], counter_row if start == 0 else None)

    async def _transaction(self, changes: Sequence[StateChange], counter: StateChange | None) -> None:
        def txn(client: Any) -> Any:
            t = client.transactions
            compare = [t.value(self.keys.leader) == self.name.encode()]
            if counter is not None:
                key = self.keys.row(HostIdCounter.kind, "")
                # Swap the counter from what we stored last (or create it): never two owners.
                compare.append(
                    t.value(key) == self._counter if self._counter is not None else t.version(key) == 0
                )
            ops = [
                t.put(self.keys.row(c.kind, c.key), encode_row(c.record))
                if c.record is not None
                else t.delete(self.keys.row(c.kind, c.key))
                for c in changes
            ]
            return client.transaction(compare=compare, success=ops, failure=[])

        try:
            succeeded, _ = await self.etcd.call(txn)
        except EtcdError as exc:
            raise OSError(str(exc)) from exc
        if not succeeded:
            raise OSError(
                f"{self.name} does not lead any more (or the Host ID counter moved): commit refused"
            )
        if counter is not None and counter.record is not None:
            self._counter = encode_row(counter.record)
