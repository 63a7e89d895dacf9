"""The publisher: an unmodified TCP server registered as a replica of an object.

``Publisher`` binds the object on its host (``Host.create_server``) and carries each SCAFFOLD
stream it is given to the target as one TCP connection, spliced to it at the protocol level
(``splice.Splice``). A health checker
connects to the target every ``check_interval`` seconds: after ``fall`` failures in a row the
replica is withdrawn (``Server.close()``: object switches stop choosing it for new flows),
after ``rise`` successes in a row it is registered again. A stream whose TCP connection to
the target is refused counts as a failed check too (a passive check), so a dead target is
withdrawn after ``fall`` refused connections without waiting for the next timer, and the
stream is reset so an HTTP ingress retries elsewhere; one refused connection triggers an
immediate active check, so with ``fall=2`` a dead target is withdrawn at the first refusal.
The target's connection is started from the callback that made the stream, or -- with
``pool=N`` -- taken from idle ones made before (``pool.TargetPool``). A target given as an
address is connected in that callback itself; to a target on the same machine the connect has
finished when it returns, and the stream's first bytes (its SYN's) go to the socket at once,
before the loop has made the socket a transport (docs/gateway.md, "Seventh round").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

from ..errors import PathError, ScaffoldError, UsageError
from .pool import TargetPool
from .pump import reason_of
from .splice import End, Splice
from .stats import GatewayStats

if TYPE_CHECKING:
    from ..api.host import Host, Server

__all__ = ["Publisher", "TargetUnavailable"]

log = logging.getLogger("scaffold.gateway")


#: the most idle connections a publisher keeps to its target
MAX_POOL = 64


class TargetUnavailable(PathError):
    """The published TCP server does not accept connections."""


class Publisher:
    """Publish the TCP server at ``target`` as a replica of object ``name`` on ``host``."""

    def __init__(
        self,
        host: Host,
        name: str,
        target: tuple[str, int],
        *,
        weight: int = 1,
        check_interval: float = 0.5,
        fall: int = 2,
        rise: int = 2,
        connect_timeout: float = 1.0,
        wait_for_target: bool = False,
        grant: bytes | None = None,
        max_connections: int = 10_000,
        policy: str = "",
        capacity: float = 0.0,
        pool: int = 0,
    ) -> None:
        """Publish ``target`` as a replica of ``name`` on ``host``; at most
        ``max_connections`` streams are carried at once (more are reset,
        ``errors["over-capacity"]``). ``grant``: the owner's signed grant, when ``name`` is an
        owned object (``owner:KEY/NAME`` or ``obj:`` text; docs/protocol.md §6.7). ``policy``
        and ``capacity`` as for ``Host.start_server`` (docs/protocol.md §3.5). ``pool``: idle
        connections to the target kept ready for new streams (``pool.TargetPool``; 0: each
        stream connects when it arrives).

        Raises:
            UsageError: a count or interval is not positive, ``pool`` is not in [0, MAX_POOL],
                ``policy`` is not "", "nearest" or "weighted", or ``capacity`` is negative.
        """
        if weight <= 0 or fall <= 0 or rise <= 0 or check_interval <= 0 or max_connections <= 0:
            raise UsageError("weight, fall, rise, check_interval and max_connections must be positive")
        if not 0 <= pool <= MAX_POOL:
            raise UsageError(f"pool must be in [0, {MAX_POOL}], got {pool!r}")
        if policy not in ("", "nearest", "weighted") or not 0 <= capacity <= 1e9:
            raise UsageError(
                f"policy must be nearest or weighted and capacity in [0, 1e9], got {policy!r}, {capacity!r}"
            )
        self.max_connections = max_connections
        self.host = host
        self.name = name
        self.target = target
        self.weight = weight
        self.grant = grant
        self.policy = policy
        self.capacity = capacity
        self.check_interval = check_interval
        self.fall = fall
        self.rise = rise
        self.connect_timeout = connect_timeout
        self.wait_for_target = wait_for_target
        self.stats = GatewayStats()
        self.server: Server | None = None
        self.healthy = False  # registered as a replica right now
        self.withdrawals = 0
        self._failures = 0
        self._successes = 0
        self._checker: asyncio.Task[None] | None = None
        self._probing: asyncio.Task[None] | None = None
        #: the streams carried now, each with its connection attempt to the target
        self._streams: dict[Splice, asyncio.Task[object] | None] = {}
        self.pool = TargetPool(target, pool, connect_timeout) if pool else None
        #: the target's address family when it is an address (connected without the loop's
        #: resolver, _connect_now); None for a name
        self._family: socket.AddressFamily | None = None
        with contextlib.suppress(ValueError):
            version = ipaddress.ip_address(target[0]).version
            self._family = socket.AF_INET if version == 4 else socket.AF_INET6
        self._state_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Publisher {self.name!r} -> {self.target[0]}:{self.target[1]} on {self.host.name} {state}>"

    async def start(self) -> None:
        """Check the target, register the replica, start the health checker.

        With ``wait_for_target`` the replica is registered later, once the target answered
        ``rise`` checks in a row.

        Raises:
            TargetUnavailable: the target refused (and ``wait_for_target`` is false).
            UsageError: already started, or the object is already bound on this host.
        """
        if self._checker is not None:
            raise UsageError(f"{self!r} is already started")
        if not self.wait_for_target:
            error = await self._probe()
            if error is not None:
                raise TargetUnavailable(
                    f"cannot publish {self.name!r}: target {self.target[0]}:{self.target[1]} {error}"
                )
            await self._register()
        self._checker = asyncio.get_running_loop().create_task(self._check_loop(), name=f"check:{self.name}")

    async def close(self) -> None:
        """Withdraw the replica, stop checking and cut the streams still open."""
        if self._closed:
            return
        self._closed = True
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        if self._probing is not None:
            self._probing.cancel()
        self._withdraw(None)
        for splice, connecting in list(self._streams.items()):
            if connecting is not None:
                connecting.cancel()
            splice.abort()
        if self._streams:
            await asyncio.wait([splice.done for splice in self._streams], timeout=2.0)

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- health ----------------------------------------------------------------------------

    async def _probe(self) -> str | None:
        """Connect to the target once; None if it answered, else why not."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), self.connect_timeout)
        except TimeoutError:
            return "did not answer"
        except OSError as exc:
            return f"refused the connection ({exc.strerror or exc})"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            error = await self._probe()
            try:
                if error is None:
                    await self._check_passed()
                else:
                    self._check_failed(error)
            except ScaffoldError as exc:  # registering failed (the network is away): try again
                log.warning("%r: %s", self, exc)

    async def _check_passed(self) -> None:
        self._failures = 0
        self._successes += 1
        if self.pool is not None and self.healthy:
            self.pool.enabled = True  # refilled again after a failed attempt
            self.pool.expire(asyncio.get_running_loop().time())
        if not self.healthy and self._successes >= self.rise and not self._closed:
            async with self._state_lock:
                if not self.healthy and not self._closed:
                    await self._register()
                    log.info("%r: target answers again; replica registered", self)

    def _check_failed(self, error: str) -> None:
        self._successes = 0
        self._failures += 1
        if self.healthy and self._failures >= self.fall:
            self._withdraw(error)

    async def _confirm_failure(self) -> None:
        try:
            error = await self._probe()
            if error is not None:
                self._check_failed(error)
        finally:
            self._probing = None

    async def _register(self) -> None:
        self.server = await self.host.create_server(
            self._new_stream,
            self.name,
            weight=self.weight,
            grant=self.grant,
            policy=self.policy,
            capacity=self.capacity,
        )
        self.healthy = True
        if self.pool is not None:
            self.pool.enable()

    def _withdraw(self, why: str | None) -> None:
        """Withdraw the replica: because the target failed (``why``), or on close (None)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.pool is not None:
            self.pool.disable()
        if self.healthy:
            self.healthy = False
            if why is not None:
                self.withdrawals += 1
                log.warning("%r: replica withdrawn: target %s", self, why)

    # -- streams -----------------------------------------------------------------------------

    def _new_stream(self) -> End:
        """The protocol of a stream the network gives this replica: one end of a splice."""
        return Splice(self.stats, on_made=self._handle).client

    def _handle(self, splice: Splice) -> None:
        if len(self._streams) >= self.max_connections:
            self.stats.error("over-capacity")
            splice.abort()  # a reset: an HTTP ingress retries it elsewhere
            return
        self.stats.connections += 1
        self.stats.active += 1
        loop = asyncio.get_running_loop()
        if self.pool is not None and self.pool.take(splice.service, loop.time()):
            # A connection made before: the stream's first bytes go to the target now.
            self._streams[splice] = None
            splice.done.add_done_callback(functools.partial(self._ended, splice))
            splice.join()
            return
        # The target's connection starts from the callback that made the stream, and its
        # end links the splice. Connected in the call (a target on this machine), the socket
        # takes the stream's first bytes at once (End.sock), while the loop makes its
        # transport.
        sock = self._connect_now()
        if sock is None:
            connecting = loop.create_task(loop.create_connection(lambda: splice.service, *self.target))
        else:
            splice.service.sock = sock
            connecting = loop.create_task(self._adopt(sock, splice.service))
        self._streams[splice] = connecting
        timer = loop.call_later(self.connect_timeout, connecting.cancel)
        connecting.add_done_callback(functools.partial(self._connected, splice, timer, loop.time()))
        splice.done.add_done_callback(functools.partial(self._ended, splice))

    def _connect_now(self) -> socket.socket | None:
        """A non-blocking socket whose connect to the target has started (and, to a target on
        this machine, ended) in this call; None when the target is a name to resolve or the
        connect failed at once (``loop.create_connection`` then does it, with its errors)."""
        if self._family is None:
            return None
        try:
            sock = socket.socket(self._family, socket.SOCK_STREAM)
        except OSError:
            return None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(self.target)
        except OSError:
            error = -1
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        return sock

    async def _adopt(self, sock: socket.socket, end: End) -> tuple[asyncio.Transport, End]:
        """``sock``'s connect finished (waited for if it is still on its way) and made into
        ``end``'s transport.

        Raises:
            OSError: the target refused or did not answer.
        """
        loop = asyncio.get_running_loop()
        try:
            try:
                sock.getpeername()
            except OSError:  # still connecting: the loop waits for it (EALREADY, then SO_ERROR)
                try:
                    await loop.sock_connect(sock, self.target)
                except OSError as exc:
                    if exc.errno != errno.EISCONN:  # it connected in between
                        raise
            return await loop.create_connection(lambda: end, sock=sock)
        except BaseException:
            end.sock = None
            sock.close()
            raise

    def _connected(
        self, splice: Splice, timer: asyncio.TimerHandle, started: float, connecting: asyncio.Task[object]
    ) -> None:
        """The target answered (link the splice) or not (a failed check; reset the stream)."""
        timer.cancel()
        if connecting.cancelled():
            if self._closed:
                splice.abort()
                return
            error: BaseException | None = TimeoutError(f"no answer within {self.connect_timeout} s")
        else:
            error = connecting.exception()
        if error is None:
            self.stats.connect_latency.observe(asyncio.get_running_loop().time() - started)
            splice.join()  # cut both if the stream ended while the target answered
            return
        self.stats.error("target-" + reason_of(error))
        splice.abort()  # a reset, not an EOF: an HTTP ingress then retries elsewhere
        if not isinstance(error, OSError | TimeoutError) or self._closed:
            return
        self._check_failed(f"refused a connection ({error})")  # a passive health check...
        if self.healthy and self._probing is None:
            # ...confirmed at once by an active one, so a dead target is withdrawn now.
            self._probing = asyncio.get_running_loop().create_task(self._confirm_failure())

    def _ended(self, splice: Splice, _: object) -> None:
        self.stats.active -= 1
        self._streams.pop(splice, None)
