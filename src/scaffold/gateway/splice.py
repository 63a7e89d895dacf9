"""Splicing two asyncio transports at the protocol level: a kernel TCP connection and a
SCAFFOLD stream, bytes carried both ways with no task and no stream reader in between.

The raw ingress (TCP client -> SCAFFOLD stream) and the publisher (SCAFFOLD stream -> TCP
target) each hand one connection's two ends to a :class:`Splice`. An end is an
``asyncio.Protocol`` whose ``data_received`` writes straight to the other end's transport, so
a request costs two callbacks, not the wake-ups of two reader tasks and their ``drain()``
(``pump.pump_both`` did that; the profile of ``bench/ingress.py`` put most of the ingress's
Python time there). The rules are ``pump``'s (docs/gateway.md): backpressure end to end --
when one transport's buffer is over its limit (``pause_writing``) the other stops reading
until it drained (``resume_writing``); EOF on one side becomes a half-close (``write_eof``) on
the other; a reset or broken path on either side cuts both (``abort``: TCP RST, stream
reset); a connection idle both ways for ``idle_timeout`` is closed (``pump.IdleWatch``).

An end may start before its peer exists (the ingress opens its stream with the client's
first bytes; the publisher connects to its target once a stream arrived): what it receives
meanwhile is held, and after the first chunk it stops reading, so at most one chunk waits.
Unless the peer's kernel socket is already connected (``End.sock``: the ingress's accepted
client, the publisher's target once its ``connect`` returned): then the bytes go straight to
that socket while the loop still makes its transport -- on a setup's path that is the
request reaching the target, and the response reaching the client, several turns of the loop
sooner (docs/gateway.md, "Seventh round"). Only what the socket took at once is sent so; the
rest is held, in order, for the transport.

A splice may carry a :class:`ReplayHook` (the raw ingress's stream opened ahead, ``gateway/warm.py``):
until the service's first byte, what the client sent is kept, and a service end that ends or
breaks is offered to it first; if it takes over, a new service end replaces the old one (whose
later callbacks are ignored) and links once its stream is made.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

from .pump import CHUNK, IdleWatch, reason_of, send_some
from .stats import GatewayStats

__all__ = ["End", "ReplayHook", "Splice"]


class ReplayHook(Protocol):
    """What a splice tells of its client's bytes and its service's end until the service's
    first byte (:attr:`Splice.replay`); it unsets itself when it gives up."""

    def sent(self, data: bytes) -> None:
        """The client sent ``data`` on to the service."""

    def failed(self, end: End, exc: Exception | None) -> bool:
        """The service ``end`` ended (``exc`` None: EOF) before answering: whether the
        replay took the splice over (then nothing else is done for it)."""


class End(asyncio.Protocol):
    """One side of a :class:`Splice`: ``inbound`` for the client's side (its bytes count as
    ``bytes_in``), else the service's side."""

    __slots__ = ("eof", "full", "held", "inbound", "lost", "peer", "sock", "splice", "transport")

    def __init__(self, splice: Splice, inbound: bool) -> None:
        self.splice = splice
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.peer: End | None = None
        #: bytes received before the peer's transport was there
        self.held: list[bytes] = []
        self.eof = False
        self.lost = False
        #: this end's transport is over its high-water mark (the other end stops reading)
        self.full = False
        #: this end's connected kernel socket while its transport is being made: bytes for
        #: it are sent straight to the socket meanwhile (None once the transport is there)
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        self.sock = None
        self.splice.started(self)

    def data_received(self, data: bytes) -> None:
        splice = self.splice
        if self.inbound:
            splice.stats.bytes_in += len(data)
            if splice.replay is not None:
                splice.replay.sent(data)
        else:
            if self is not splice.service:
                return  # a service end a replay replaced: what it says is not heard
            splice.replay = None  # the service answered: no replay from here
            splice.stats.bytes_out += len(data)
        if splice.idle is not None:
            splice.idle.touch()
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            return
        if not self.held:  # nothing may overtake held bytes
            other = splice.service if self.inbound else splice.client
            if other.transport is not None:  # made, not linked yet: it takes them now
                other.transport.write(data)
                return
            if other.sock is not None:
                data = other.send_early(data)
                if not data:
                    other.receive_early()
                    return
        self.held.append(data)
        assert self.transport is not None
        self.transport.pause_reading()  # one chunk waits for the peer, no more
        splice.arrived(self)

    def send_early(self, data: bytes) -> bytes:
        """Send ``data`` on this end's socket before its transport is made; what it did not
        take (all of it if it would block or failed: the transport finds the failure)."""
        assert self.sock is not None
        try:
            return send_some(self.sock, data)
        except OSError:  # still connecting, reset: held for the transport
            return data

    def receive_early(self) -> None:
        """Pass on what this end's socket already holds, before its transport is made, if the
        other end can take it now: a target on this machine often answers while the send to
        it runs (the kernel runs the target on this CPU), and its answer would otherwise wait
        behind every callback the loop has queued meanwhile. EOF and errors are left for the
        transport to find."""
        other = self.splice.client if not self.inbound else self.splice.service
        if self.sock is None or other.transport is None or other.full:
            return
        try:
            data = self.sock.recv(CHUNK)
        except OSError:  # nothing yet (BlockingIOError), or a failure the transport finds
            return
        if data:
            self.data_received(data)

    def eof_received(self) -> bool:
        if not self.inbound and self._taken_over(None):
            return True  # (the replay cut it)
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            self.splice.forward_eof(peer)
        self.splice.arrived(self)
        return True  # the other direction goes on

    def pause_writing(self) -> None:
        # The other end, linked or not: bytes may come here before the link (data_received).
        self.full = True
        other = self.splice.service if self.inbound else self.splice.client
        if other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        self.full = False
        other = self.splice.service if self.inbound else self.splice.client
        # (held bytes keep it paused until the link writes them)
        if other.transport is not None and not other.transport.is_closing() and not other.held:
            other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.inbound and self._taken_over(exc):
            return
        self.splice.ended(self, exc)

    def _taken_over(self, exc: Exception | None) -> bool:
        """This service end was replaced by a replay, or one takes it over now that it ended
        (``exc`` None: EOF): what it does is no longer the splice's."""
        splice = self.splice
        if self is not splice.service:
            return True
        replay = splice.replay
        return replay is not None and replay.failed(self, exc)


class Splice:
    """One connection carried between two transports; ``done`` completes once both ends
    are lost. ``client`` and ``service`` are the two ends' protocols, to give to
    ``loop.connect_accepted_socket`` / ``create_connection`` / ``Host.create_connection``
    (or a server's protocol factory); :meth:`link` joins them once both are made."""

    __slots__ = (
        "_error",
        "_first",
        "_on_made",
        "client",
        "closing",
        "done",
        "idle",
        "idle_timeout",
        "linked",
        "replay",
        "service",
        "stats",
    )

    def __init__(
        self,
        stats: GatewayStats,
        *,
        idle_timeout: float | None = None,
        on_made: Callable[[Splice], None] | None = None,
    ) -> None:
        """``on_made(splice)`` runs when the client's end is made (a server's new stream)."""
        self.stats = stats
        self._on_made = on_made
        self.idle_timeout = idle_timeout
        self.idle: IdleWatch | None = None
        self.client = End(self, inbound=True)
        self.service = End(self, inbound=False)
        self.linked = False
        #: while set, the client's bytes and the service end's failure go to it first
        self.replay: ReplayHook | None = None
        #: ``close()`` was called: the ends going now is no failure
        self.closing = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._first: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    # -- from the ends --------------------------------------------------------------------

    def started(self, end: End) -> None:
        if self.idle is None and self.idle_timeout is not None:
            self.idle = IdleWatch(self.idle_timeout, self._expire)
        if end is self.client and self._on_made is not None:
            self._on_made(self)

    def arrived(self, end: End) -> None:
        """Bytes or EOF came to ``end`` before the splice was linked."""
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    def forward_eof(self, to: End) -> None:
        assert to.transport is not None
        if not to.transport.is_closing():
            # Not contextlib.suppress: three Python calls on every connection's way out.
            try:  # noqa: SIM105
                to.transport.write_eof()
            except (OSError, RuntimeError):  # the socket just went: lost follows
                pass
        if self.client.eof and self.service.eof:
            self.close()

    def ended(self, end: End, exc: Exception | None) -> None:
        other = self.service if end is self.client else self.client
        clean = self.closing or (end.eof and (other.eof or other.transport is None))
        if exc is not None or not clean:
            # A failure, or this side went away before both said EOF and unasked: cut the
            # other side too, so neither peer mistakes it for a clean end. (A clean close --
            # after both EOFs, or ours on an idle timeout -- is the other branch.)
            if exc is not None and self._error is None:
                self._error = exc
                self.stats.error(reason_of(exc))
            if not other.lost and other.transport is not None:
                other.transport.abort()
        elif not other.lost and other.transport is not None:
            other.transport.close()
        self._settle()

    # -- from the owner -------------------------------------------------------------------

    async def first_bytes(self, timeout: float) -> bytes:
        """What the client sent within ``timeout`` seconds of connecting (b"" if nothing, or
        EOF), taken out of the held bytes so it can ride in the SYN."""
        if not self.client.held and not self.client.eof and not self.client.lost:
            self._first = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._first
            except TimeoutError:
                pass
            finally:
                self._first = None
        held, self.client.held = self.client.held, []
        return b"".join(held)

    def link(self) -> None:
        """Join the ends (both made): held bytes and EOFs go over, reading resumes."""
        client, service = self.client, self.service
        client.peer, service.peer = service, client
        self.linked = True
        for end in (client, service):
            peer = end.peer
            assert peer is not None and peer.transport is not None and end.transport is not None
            if end.held:
                held, end.held = end.held, []
                peer.transport.write(b"".join(held))
            if end.eof:
                self.forward_eof(peer)
            elif not end.lost and not end.transport.is_closing() and not peer.full:
                end.transport.resume_reading()

    def join(self) -> bool:
        """Link the ends (both made) -- or cut both if the client's end was lost while its
        peer was made; whether it linked, or will: a service end being replaced
        (:meth:`replace_service`) links once its stream is made."""
        if self.client.lost:
            self.abort()
            return False
        if self.service.transport is None:
            return True
        self.link()
        return True

    def replace_service(self) -> End:
        """A new service end in place of the current one, which is cut (what it does from
        now on is ignored); the client's bytes from here are held for the new one."""
        old = self.service
        self.service = End(self, inbound=False)
        self.client.peer = None
        self.linked = False
        if old.transport is not None and not old.lost:
            old.transport.abort()
        return self.service

    async def carry(self) -> None:
        """Join the ends and wait until the splice ends; cancelled (a gateway closing), cut
        both."""
        try:
            if self.join():
                await self.done
        finally:
            if not self.done.done():
                self.abort()

    def abort(self) -> None:
        """Cut both sides (RST, stream reset)."""
        for end in (self.client, self.service):
            if end.transport is not None and not end.lost:
                end.transport.abort()
        self._settle()

    def close(self) -> None:
        """Close both sides (FIN after what was written)."""
        self.closing = True
        for end in (self.client, self.service):
            if end.transport is not None and not end.lost:
                end.transport.close()
        self._settle()

    def _expire(self) -> None:
        self.idle = None
        self.stats.error("idle-timeout")
        self.close()

    def _settle(self) -> None:
        if (self.client.lost or self.client.transport is None) and (
            self.service.lost or self.service.transport is None
        ):
            if self.idle is not None:
                self.idle.cancel()
                self.idle = None
            if not self.done.done():
                self.done.set_result(None)
