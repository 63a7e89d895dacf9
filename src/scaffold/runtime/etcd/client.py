"""``Etcd``: one etcd cluster through ``aetcd``, reached at any of its members
(docs/deployment.md §6).

``aetcd`` talks to one member; this wrapper knows them all and moves to the next one when a
call fails to reach its member (connection refused, timeout), so a killed member costs one
retry, not an outage. It also holds the key layout of one SCAFFOLD network in etcd::

    /scaffold/NETWORK/rows/KIND/KEY    a durable controller row (MessagePack), one per record
    /scaffold/NETWORK/leader           the leading replica's name, attached to its lease
    /scaffold/NETWORK/replicas/NAME    a replica's address and pid, attached to its lease
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd

from ...errors import ScaffoldError

__all__ = ["Etcd", "EtcdError", "Keys", "parse_endpoints"]

T = TypeVar("T")
Endpoint = tuple[str, int]
#: what a failed call to a member raises: unreachable, timed out, or the member is unhealthy
_UNREACHABLE = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    OSError,
    asyncio.TimeoutError,
)


class EtcdError(ScaffoldError):
    """No member of the etcd cluster could be reached, or it refused the call."""


def parse_endpoints(text: str | Sequence[str]) -> list[Endpoint]:
    """``"HOST:PORT,HOST:PORT"`` (or a list of such) as endpoints.

    Raises:
        EtcdError: an endpoint without a port.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[Endpoint] = []
    for item in items:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit():
            raise EtcdError(f"etcd endpoint {item!r}: want HOST:PORT")
        out.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not out:
        raise EtcdError("no etcd endpoint given")
    return out


class Keys:
    """The etcd keys of one network."""

    def __init__(self, network: str) -> None:
        self.root = f"/scaffold/{network}/".encode()
        self.rows = self.root + b"rows/"
        self.leader = self.root + b"leader"
        self.replicas = self.root + b"replicas/"

    def row(self, kind: str, key: str) -> bytes:
        return self.rows + kind.encode() + b"/" + key.encode()

    def parse_row(self, key: bytes) -> tuple[str, str] | None:
        """(kind, key) of a row's etcd key; None if it is not a row's."""
        if not key.startswith(self.rows):
            return None
        kind, sep, row_key = key[len(self.rows) :].decode().partition("/")
        return (kind, row_key) if sep else None

    def replica(self, name: str) -> bytes:
        return self.replicas + name.encode()


def prefix_end(prefix: bytes) -> bytes:
    """The end of the key range of ``prefix`` (etcd's convention: the prefix plus one)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Etcd:
    """An etcd cluster at ``endpoints``: calls go to one member, and to the next on failure."""

    def __init__(self, endpoints: Sequence[Endpoint], *, timeout: float = 2.0) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._index = 0
        self._client: aetcd.Client | None = None
        #: calls that had to move to another member
        self.failovers = 0

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._index]
            self._client = aetcd.Client(host=host, port=port, timeout=self.timeout)
        return self._client

    async def _next_member(self) -> None:
        client, self._client = self._client, None
        self._index = (self._index + 1) % len(self.endpoints)
        self.failovers += 1
        if client is not None:
            with contextlib.suppress(Exception):  # a broken channel may fail to close
                await asyncio.wait_for(client.close(), 1.0)

    async def call(self, operation: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """``operation(client)`` on a reachable member (each member tried once).

        Raises:
            EtcdError: no member answered.
        """
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            try:
                return await asyncio.wait_for(operation(self.client), self.timeout)
            except _UNREACHABLE as exc:
                last = exc
                await self._next_member()
        raise EtcdError(
            f"no etcd member answered ({', '.join(f'{h}:{p}' for h, p in self.endpoints)}): {last}"
        )

    async def members(self) -> list[dict[str, Any]]:
        """The cluster's members: name, id, peer and client URLs.

        Raises:
            EtcdError: no member answered.
        """

        async def members(client: aetcd.Client) -> list[dict[str, Any]]:
            return [
                {
                    "name": m.name,
                    "id": m.id,
                    "peer_urls": list(m.peer_urls),
                    "client_urls": list(m.client_urls),
                }
                async for m in client.members()
            ]

        return await self.call(members)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel
                await asyncio.wait_for(self._client.close(), 1.0)
            self._client = None
