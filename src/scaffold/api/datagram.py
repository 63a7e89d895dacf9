"""Datagram endpoints bound on object names (``Host.datagram_endpoint``).

An unbound endpoint sends to objects: its first datagram to an object starts a flow (fresh
Flow ID and nonce) and later ones reuse it, so they all reach the same replica; replies come
back on that flow. A bound endpoint is a replica: it receives the datagrams of every flow the
network sends it and answers each on its own flow via the ``DatagramPeer`` it got.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ScaffoldError, UsageError
from ..ids import ObjectId

if TYPE_CHECKING:
    from .host import Host

__all__ = ["DatagramEndpoint", "DatagramPeer"]


@dataclass(frozen=True, slots=True)
class DatagramPeer:
    """Who a datagram came from: the flow it travelled on and the peer host's name."""

    object: str
    flow: int
    socket_id: int
    host: str | None

    def __str__(self) -> str:
        return f"{self.host or '?'}/flow {self.flow:016x}"


class DatagramEndpoint:
    """Send and receive datagrams on SCAFFOLD flows (the shape of asyncio's UDP endpoints)."""

    def __init__(
        self, host: Host, obj: ObjectId | None, name: str | None, *, queue_limit: int = 4096
    ) -> None:
        self.host = host
        self.object = obj
        self.name = name
        self._flows: dict[bytes, int] = {}  # unbound: object -> socket id of our flow
        self._objects: dict[int, str] = {}  # socket id -> object label
        self._queue: asyncio.Queue[tuple[bytes, DatagramPeer] | ScaffoldError] = asyncio.Queue(queue_limit)
        self.dropped = 0
        self.closed = False

    # -- from the host -------------------------------------------------------------------

    def _accepted(self, socket_id: int) -> None:
        self._objects[socket_id] = self.name or ""

    def _deliver(self, socket_id: int, data: bytes) -> None:
        flow = self.host.stack.flows.get(socket_id)
        if flow is None:
            return
        peer = DatagramPeer(
            self._objects.get(socket_id, ""), flow.flow, socket_id, self.host.host_name(flow.peer_host)
        )
        try:
            self._queue.put_nowait((data, peer))
        except asyncio.QueueFull:
            self.dropped += 1  # like a full socket buffer: the datagram is lost, and counted

    def _fail(self, socket_id: int, error: Exception) -> None:
        for obj, sid in list(self._flows.items()):
            if sid == socket_id:
                del self._flows[obj]
        if isinstance(error, ScaffoldError):
            self._queue.put_nowait(error)

    def _forget(self, socket_id: int) -> None:
        self._objects.pop(socket_id, None)

    # -- public API ----------------------------------------------------------------------

    async def sendto(self, data: bytes, destination: str | ObjectId | DatagramPeer) -> None:
        """Send one datagram to an object (by name or ID) or back to a peer's flow.

        Raises:
            UsageError: the endpoint is closed, or the peer's flow is gone.
        """
        if self.closed:
            raise UsageError("sendto() on a closed endpoint")
        stack = self.host.stack
        if isinstance(destination, DatagramPeer):
            socket_id = destination.socket_id
            if socket_id not in stack.flows:
                raise UsageError(f"the flow of {destination} is gone")
        else:
            obj = ObjectId.of(destination)
            socket_id = self._flows.get(obj.raw, 0)
            if socket_id not in stack.flows:
                socket_id = self.host._open_datagram_flow(self, obj)
                self._flows[obj.raw] = socket_id
                self._objects[socket_id] = destination if isinstance(destination, str) else str(obj)
        stack.send_datagram(socket_id, bytes(data), self.host.now())
        self.host.kick()

    async def recvfrom(self) -> tuple[bytes, DatagramPeer]:
        """The next datagram and who sent it.

        Raises:
            ObjectNotFound: a destination this endpoint sent to has no replica.
            BrokenPathError: a destination became unreachable.
        """
        item = await self._queue.get()
        if isinstance(item, ScaffoldError):
            raise item
        return item

    def close(self) -> None:
        """Close every flow of this endpoint and withdraw its binding."""
        if self.closed:
            return
        self.closed = True
        for socket_id in list(self._objects):
            self.host._close_datagram_flow(socket_id)
        if self.object is not None:
            self.host._unbind(self.object)
