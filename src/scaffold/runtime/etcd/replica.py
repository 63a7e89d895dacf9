"""``ControllerReplica``: one of several controller processes sharing a network through etcd
(docs/protocol.md §6.8, docs/deployment.md §7).

Each replica holds an etcd lease (``LEASE_TTL``, kept alive every third of it) and registers
itself under ``replicas/NAME`` with its address and pid. One replica **leads**: the one whose
transaction created the ``leader`` key, attached to its lease. The others are **hot
standbys**: one watch over the network's keys keeps a mirror of every durable row, and tells
them when the leader key goes -- its holder stopped, or died and its lease expired -- so they
campaign again. The winner waits until its mirror has seen its own leader key (so it holds
every row written before), builds its controller core from the mirror, and serves: the
nodes, which know every replica, reconnect to it (a standby answers them ``NotLeader``).
While leading it writes through ``EtcdStore``, fenced by the leader key; if its lease is
lost, it stops serving at once and campaigns again.

A leader whose process died would lead on until its lease expires (``LEASE_TTL``, plus up to
half a second before etcd checks it). So each standby also knocks at the leader's control port
every ``PROBE_INTERVAL``: a refused connection means no process listens there any more, and the
standby revokes the leader's lease at once. Nothing else counts -- a timeout, a reset, an
accepted connection: a leader that hangs or is cut off is left to its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Callable
from typing import Any

import aetcd.exceptions
import msgspec

from ...core.controller import Controller, ControllerState, StateRows
from ...core.controller.state import StateChange, decode_row
from ...core.topology import Topology
from ..aio.collector import paused_collector
from ..aio.controller import ControllerRuntime
from ..aio.links import Address
from ..store import MemoryStore
from ..tls import Credentials
from .client import Etcd, EtcdError, Keys
from .store import EtcdStore

__all__ = ["LEASE_TTL", "PROBE_INTERVAL", "ControllerReplica", "ReplicaInfo"]

#: seconds a replica's lease lives without a keep-alive: how long a dead leader leads
LEASE_TTL = 1
#: seconds between two probes of the leader's control port by a standby (``_probe_leader``)
PROBE_INTERVAL = 0.1


class ReplicaInfo(msgspec.Struct, frozen=True):
    """What a replica registers about itself (``replicas/NAME``)."""

    name: str
    address: Address
    pid: int


class ControllerReplica:
    """A controller that leads or stands by, through the etcd cluster at ``endpoints``."""

    def __init__(
        self,
        name: str,
        topology: Topology,
        etcd: Etcd,
        *,
        network: str,
        bind: Address = ("127.0.0.1", 0),
        advertise: str | None = None,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        on_log: Callable[[str, dict[str, Any]], None] | None = None,
        credentials: Credentials | None = None,
        crl: str | None = None,
    ) -> None:
        self.name = name
        self.topology = topology
        self.etcd = etcd
        self.keys = Keys(network)
        self.advertise = advertise
        self.heartbeat_interval, self.dead_after = heartbeat_interval, dead_after
        self.runtime = ControllerRuntime(
            self._core(None), bind, MemoryStore(), credentials=credentials, crl=crl
        )
        self.runtime.leading = False
        self.runtime.extra_status = self._status
        self.on_log = on_log
        #: the mirror of every durable row, and the revision it has seen up to
        self.rows = StateRows()
        self.revision = 0
        self.leader: str | None = None
        #: the lease the leader key is attached to (0: none known)
        self.leader_lease = 0
        self.replicas: dict[str, ReplicaInfo] = {}
        self.leading = False
        self._seen = asyncio.Event()  # a watch event arrived (revision moved)
        self._leader_gone = asyncio.Event()
        self._lease_lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: how many times this replica took the lead
        self.terms = 0

    def _core(self, saved: ControllerState | None) -> Controller:
        return Controller(
            self.topology, heartbeat_interval=self.heartbeat_interval, dead_after=self.dead_after, saved=saved
        )

    @property
    def address(self) -> Address:
        host, port = self.runtime.address
        return (self.advertise or host, port)

    def _log(self, what: str, **fields: Any) -> None:
        if self.on_log is not None:
            self.on_log(what, fields)

    async def start(self) -> None:
        """Listen (as a standby) and start campaigning.

        Raises:
            OSError: the listen address cannot be bound.
        """
        await self.runtime.start()
        self._task = asyncio.create_task(self._run(), name=f"replica:{self.name}")

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runtime.close()
        await self.etcd.close()

    # -- the replica's life ----------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._session()
            except EtcdError as exc:
                self._log("etcd-unreachable", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a replica never dies of one bad answer: it starts over
                self._log("replica-error", error=f"{type(exc).__name__}: {exc}")
            self._step_down()
            if not self._stopping.is_set():
                await asyncio.sleep(0.1)

    async def _session(self) -> None:
        """One lease: register, mirror, campaign, lead or stand by -- until the lease is lost."""
        self._lease_lost.clear()
        lease = await self.etcd.call(lambda c: c.lease(LEASE_TTL))
        tasks = [asyncio.create_task(self._keep_alive(lease.id))]
        try:
            info = msgspec.json.encode(ReplicaInfo(self.name, self.address, os.getpid()))
            await self.etcd.call(lambda c: c.put(self.keys.replica(self.name), info, lease=lease))
            await self._load()
            tasks.append(asyncio.create_task(self._watch()))
            tasks.append(asyncio.create_task(self._probe_leader()))
            while not self._lease_lost.is_set() and not self._stopping.is_set():
                won, revision = await self._campaign(lease)
                if won:
                    await self._lead(revision)
                else:
                    await self._wait_any(self._leader_gone, self._lease_lost, self._stopping)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, EtcdError):
                    await task

    async def _keep_alive(self, lease_id: int) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            try:
                reply = await self.etcd.call(lambda c: c.refresh_lease(lease_id))
            except EtcdError:
                reply = None
            now = loop.time()
            if reply is not None and reply.TTL > 0:
                last = now
            elif reply is not None or now - last >= LEASE_TTL:
                self._log("lease-lost")
                self._lease_lost.set()
                return

    async def _load(self) -> None:
        """Read every key of the network (rows, leader, replicas) at one revision."""
        result = await self.etcd.call(lambda c: c.get_prefix(self.keys.root))
        self.rows = StateRows()
        self.replicas.clear()
        self.leader = None
        with paused_collector():
            for kv in result:
                self._apply(kv.key, kv.value, kv.lease)
        self.revision = result.header.revision

    async def _watch(self) -> None:
        """Follow every change of the network's keys from the loaded revision on, moving to
        another member (from the last revision seen) when one fails."""
        while True:
            try:
                watch = await self.etcd.call(self._open_watch)
                async for event in watch:
                    kv = event.kv
                    self._apply(kv.key, None if event.kind == "DELETE" else kv.value, kv.lease)
                    self.revision = max(self.revision, kv.mod_revision)
                    self._seen.set()
            except EtcdError:
                pass
            except Exception as exc:  # a broken watch stream: watch again elsewhere
                self._log("watch-broken", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    await self.etcd._next_member()
            await asyncio.sleep(0.05)

    def _point_to_leader(self) -> None:
        """A standby sends nodes to the leader's address (once it knows both)."""
        leader = self.replicas.get(self.leader or "")
        self.runtime.leader_address = leader.address if leader is not None and not self.leading else None

    def _open_watch(self, client: Any) -> Any:
        return client.watch_prefix(self.keys.root, start_revision=self.revision + 1)

    async def _probe_leader(self) -> None:
        """(While standing by.) Revoke the lease of a leader whose control port refuses
        connections: its process is gone, and waiting for the lease to expire would leave the
        network without a leader for up to 1.5 s."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            leader, lease = self.leader, self.leader_lease
            info = self.replicas.get(leader or "")
            if self.leading or info is None or not lease or leader == self.name:
                continue
            if _unspecified(info.address[0]):
                continue  # 0.0.0.0 names no machine: a refusal here would say nothing of it
            try:
                async with asyncio.timeout(5 * PROBE_INTERVAL):
                    _, writer = await asyncio.open_connection(*info.address)
            except ConnectionRefusedError:
                if (self.leader, self.leader_lease) == (leader, lease):
                    self._log("leader-gone", leader=leader)
                    await self._revoke(lease)
                continue
            except (OSError, TimeoutError):
                continue  # proves nothing: the lease decides
            writer.close()

    async def _revoke(self, lease: int) -> None:
        """Revoke ``lease``; one that expired meanwhile (etcd: not found) is as good."""
        with contextlib.suppress(EtcdError, aetcd.exceptions.ClientError):
            await self.etcd.call(lambda c: c.revoke_lease(lease))

    def _apply(self, key: bytes, value: bytes | None, lease: int = 0) -> None:
        if key == self.keys.leader:
            self.leader = value.decode() if value is not None else None
            self.leader_lease = lease if value is not None else 0
            if value is None:
                self._leader_gone.set()
            self._point_to_leader()
            return
        if key.startswith(self.keys.replicas):
            name = key[len(self.keys.replicas) :].decode()
            if value is None:
                self.replicas.pop(name, None)
            else:
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    self.replicas[name] = msgspec.json.decode(value, type=ReplicaInfo)
            self._point_to_leader()
            return
        row = self.keys.parse_row(key)
        if row is None:
            return
        kind, row_key = row
        try:
            record = None if value is None else decode_row(kind, value)
        except ValueError as exc:
            self._log("bad-row", key=key.decode(errors="replace"), error=str(exc))
            return
        self.rows.apply([StateChange(kind, row_key, record)])

    async def _campaign(self, lease: Any) -> tuple[bool, int]:
        """Try to create the leader key on our lease; (won, the transaction's revision)."""
        self._leader_gone.clear()

        def txn(client: Any) -> Any:
            t = client.transactions
            return client.transaction(
                compare=[t.version(self.keys.leader) == 0],
                success=[t.put(self.keys.leader, self.name.encode(), lease=lease)],
                failure=[t.get(self.keys.leader)],
            )

        won, responses = await self.etcd.call(txn)
        if won:
            return True, int(responses[0].response_put.header.revision)
        if not responses or not responses[0]:
            self._leader_gone.set()  # it went between our compare and our read: again
        return False, 0

    async def _lead(self, revision: int) -> None:
        # Every row written before our leader key is in the mirror once the watch shows it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while self.revision < revision and loop.time() < deadline and not self._lease_lost.is_set():
            self._seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), 0.1)
        if self.revision < revision:
            self._log("mirror-behind", revision=self.revision, needed=revision)
            await self._load()
        with paused_collector():  # a million rows become the core's tables: no collection
            core = self._core(self.rows.snapshot())
        store = EtcdStore(self.etcd, self.keys, self.name, loop, self.rows)
        self.leading = True
        self.terms += 1
        self.runtime.promote(core, store)
        self._log("leading", term=self.terms, rows=len(self.rows.rows), revision=revision)
        await self._wait_any(self._lease_lost, self._stopping)
        self._step_down()

    def _step_down(self) -> None:
        if self.leading:
            self.leading = False
            self.runtime.demote()
            self._log("standing-by")

    @staticmethod
    async def _wait_any(*events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # -- status ----------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        """What ``scaffold status`` shows of the replicas (the leader answers it)."""
        return {
            "controllers": [
                {
                    "name": info.name,
                    "address": list(info.address),
                    "pid": info.pid,
                    "leader": info.name == self.leader,
                }
                for info in sorted(self.replicas.values(), key=lambda i: i.name)
            ],
            "etcd": [f"{host}:{port}" for host, port in self.etcd.endpoints],
        }


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name
