"""The ingress proxy: unmodified TCP clients in, SCAFFOLD streams to an object out.

``Ingress`` listens on a TCP address (``asyncio.start_server``). Each accepted connection
becomes one SCAFFOLD stream to the object, opened with ``Host.open_connection``: a fresh Flow
ID per TCP connection, so the network anycasts each connection to a replica and keeps all of
it there (flow affinity). Several ingresses may serve one object; they share nothing.

Raw mode (the default) splices the client's TCP connection and the stream at the protocol
level (``splice.Splice``: each side's bytes written straight to the other, half-close and
backpressure carried through). The client's first bytes -- whatever it sent within
``first_data_wait`` of connecting -- ride in the stream's SYN (data on SYN, docs/protocol.md
§4.2.7), so the replica has them one round trip earlier. Opening the stream is retried within
``connect_budget`` seconds when it breaks or times out, which covers the moment a replica died
and the network has not withdrawn it yet; the first bytes go again on the new stream (a
replica that died before answering may have seen them: at least once, as with TCP Fast Open;
``syn_data=False`` opens empty and sends nothing before the handshake). Once bytes flowed, a
broken stream cuts the client connection (RST), as a failed server would. With
``preconnect=N`` raw mode keeps N streams open ahead of its clients (``warm.WarmStreams``; off
by default: the target sees idle connections). With ``http=True`` each connection is an
``http.HttpSession`` instead (keep-alive, retries of idempotent requests on a new stream, and
idle streams shared with later clients: ``upstream.IdleUpstreams``).

Bounds (docs/gateway.md): at most ``max_connections`` clients at once -- at the cap the
ingress stops accepting (``errors["over-capacity"]`` counts each time) and further clients
wait in the kernel's accept queue until one leaves, as HAProxy's ``maxconn`` does; a
connection idle both ways for ``idle_timeout`` is closed; with ``http=True`` a request's head
must arrive within ``header_timeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..api.streams import StreamReader, StreamWriter
from ..errors import ConfigError, ObjectNotFound, PathError, UsageError
from ..ids import ObjectId
from .http import ClientSide, HttpOptions, HttpSession
from .pump import CHUNK, reason_of
from .splice import End, Splice
from .stats import GatewayStats
from .upstream import IdleUpstreams
from .warm import Replay, WarmStreams

if TYPE_CHECKING:
    from ..api.host import Connecting, Host
    from ..api.streams import StreamProtocol

__all__ = ["Ingress"]

log = logging.getLogger("scaffold.gateway")

T = TypeVar("T")


@dataclass(slots=True)
class _Client:
    transport: asyncio.WriteTransport | None = None
    session: HttpSession | None = None
    #: the stream opened in the accept callback, until the client's task takes it
    connecting: Connecting[End] | None = None
    #: the stream opened ahead that the client took (WarmStreams), until its task carries it
    warm: Splice | None = None
    #: bytes read at the accept that no stream took yet (no SYN data: they go after the
    #: handshake)
    unsent: bytes = b""

    def abort(self) -> None:
        """Cut the client's connection (RST)."""
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.warm is not None:
            self.warm.abort()
            self.warm = None
        if self.session is not None:
            self.session.cancel_begun()
            self.session.client.abort()
        elif self.transport is not None:
            self.transport.abort()


#: defaults of the bounds
MAX_CONNECTIONS = 10_000
IDLE_TIMEOUT = 120.0
HEADER_TIMEOUT = 10.0
FIRST_DATA_WAIT = 0.02
#: the kernel's queue of connections not accepted yet (where clients wait at the cap)
BACKLOG = 1024
#: connections accepted per wake-up of the listening socket
ACCEPT_BATCH = 64


class Ingress:
    """Serve object ``name`` to plain TCP (or, with ``http=True``, HTTP/1.1) clients.

    ``listen`` is ``(address, port)``; port 0 picks a free one (see ``address`` after
    ``start()``). ``stats`` counts connections, bytes, errors by reason and retries.
    """

    def __init__(
        self,
        host: Host,
        name: str,
        listen: tuple[str, int],
        *,
        http: bool = False,
        connect_timeout: float = 2.0,
        connect_budget: float = 3.0,
        grace: float = 5.0,
        http_options: HttpOptions | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float | None = IDLE_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        syn_data: bool = True,
        first_data_wait: float = FIRST_DATA_WAIT,
        reuse_port: bool = False,
        preconnect: int = 0,
    ) -> None:
        """An ingress for object ``name`` through ``host``, listening on ``listen``.

        ``preconnect``: raw mode keeps that many streams open ahead of its clients
        (gateway/warm.py; off by default: the target then sees idle connections).

        Raises:
            UsageError: a bound is not positive, ``preconnect`` out of range or given with
                ``http`` (which reuses idle streams instead), or ``name`` is not an object name.
        """
        #: resolved once (a hash per connection otherwise); a bad name fails here, not per client
        self._object = ObjectId.of(name)
        if max_connections < 1 or header_timeout <= 0 or (idle_timeout is not None and idle_timeout <= 0):
            raise UsageError("max_connections, header_timeout and idle_timeout must be positive")
        self.host = host
        self.name = name
        self.listen = listen
        self.http = http
        self.connect_timeout = connect_timeout
        self.connect_budget = connect_budget
        self.grace = grace
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.syn_data = syn_data
        self.first_data_wait = first_data_wait
        self.http_options = options = dataclasses.replace(
            http_options or HttpOptions(), header_timeout=header_timeout, idle_timeout=idle_timeout
        )
        self.stats = GatewayStats()
        if preconnect and http:
            raise UsageError("preconnect is for raw mode; with http=True idle streams are reused (--reuse)")
        #: raw mode: streams opened ahead of the clients (warm.WarmStreams), or None
        self.warm = (
            WarmStreams(
                host,
                self._object,
                self.stats,
                preconnect,
                connect_timeout=connect_timeout,
                splice_idle_timeout=idle_timeout,
                peername=(name, 0),
            )
            if preconnect
            else None
        )
        #: taken streams' replays opening their new streams (Replay, _replay)
        self._replays: set[asyncio.Task[None]] = set()
        #: with ``http``: the idle streams the sessions share (upstream.IdleUpstreams)
        self.idle_upstreams = (
            IdleUpstreams(options.reuse, options.reuse_idle_timeout, options.reuse_max_age) if http else None
        )
        #: share the listening address with other processes (``--workers``: the kernel
        #: spreads the connections over them, each one served by one process to its end)
        self.reuse_port = reuse_port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._clients: dict[asyncio.Task[None], _Client] = {}
        self._closing = False

    def __repr__(self) -> str:
        mode = "http" if self.http else "tcp"
        return f"<Ingress {self.name!r} {mode} on {self.listen[0]}:{self.listen[1]} via {self.host.name}>"

    @property
    def address(self) -> tuple[str, int]:
        """The address it listens on (the real port when ``listen`` asked for port 0).

        Raises:
            UsageError: not started.
        """
        if self._sock is None:
            raise UsageError("the ingress is not listening; call start() first")
        address = self._sock.getsockname()
        return str(address[0]), int(address[1])

    async def start(self) -> None:
        """Listen for clients.

        Raises:
            ConfigError: the address is in use or cannot be bound.
            UsageError: already started.
        """
        if self._sock is not None:
            raise UsageError(f"{self!r} is already started")
        address, port = self.listen
        try:
            # Our own accept loop (not asyncio.start_server): at the connection cap it stops
            # reading the listening socket, and clients wait in the kernel's queue.
            sock = socket.create_server((address, port), backlog=BACKLOG, reuse_port=self.reuse_port)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(f"ingress for {self.name!r} cannot listen on {address}:{port}: {why}") from exc
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._resume()
        log.info("%r listening", self)

    def _resume(self) -> None:
        if not self._accepting and self._sock is not None and self._loop is not None and not self._closing:
            self._loop.add_reader(self._sock.fileno(), self._on_acceptable)
            self._accepting = True

    def _pause(self) -> None:
        if self._accepting and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False

    def _on_acceptable(self) -> None:
        assert self._sock is not None and self._loop is not None
        for _ in range(ACCEPT_BATCH):
            if len(self._clients) >= self.max_connections:
                self.stats.error("over-capacity")
                self._pause()  # until a client leaves (_done)
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: try again a little later
                self.stats.error("accept-" + reason_of(exc))
                self._pause()
                self._loop.call_later(0.1, self._resume)
                return
            conn.setblocking(False)
            client = _Client()
            early = None
            try:
                if self.http or self.syn_data or self.warm is not None:
                    # A client that speaks first has usually sent its first bytes by the time
                    # it is accepted: they are taken now, and sent (in a SYN, or on a stream
                    # opened ahead), before the client's task even starts (a turn of the loop,
                    # behind every other node's work in it).
                    first = self._read_now(conn)
                    if first is None:  # gone before it said anything
                        self.stats.connections += 1
                        continue
                    if self.http:
                        client.session = self._session_early(conn, first)
                    elif self.warm is not None and (warm := self.warm.take()) is not None:
                        client.warm = warm
                        early = self._take_warm(conn, warm, first)
                    elif first and self.syn_data:
                        early = self._open_early(conn, client, first)
                    else:
                        client.unsent = first
            except Exception as exc:  # one client's failure must never stop the accepting
                self.stats.connections += 1
                self.stats.error("internal")
                log.exception("%r: connection failed: %s", self, exc)
                client.abort()
                conn.close()
                continue
            task = self._loop.create_task(self._serve_socket(conn, client, early))
            self._clients[task] = client
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._clients.pop(task, None)
        if len(self._clients) < self.max_connections:
            self._resume()

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, let open connections finish for ``grace`` seconds, cut the rest.

        HTTP connections idle between requests are closed at once; one in the middle of a
        request gets its response (with ``Connection: close``) first.
        """
        if self._closing:
            return
        self._pause()
        self._closing = True
        if self._sock is not None:
            self._sock.close()
        if self.idle_upstreams is not None:
            self.idle_upstreams.close()
        if self.warm is not None:
            self.warm.close()
        for replay in self._replays:
            replay.cancel()
        for client in self._clients.values():
            if client.session is not None:
                client.session.closing = True
                if not client.session.busy:
                    client.session.client.close()
        tasks = list(self._clients)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace if grace is None else grace)
            for task in pending:
                self._clients[task].abort()
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        log.info("%r closed: %s", self, self.stats.as_json())

    async def __aenter__(self) -> Ingress:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections ---------------------------------------------------------------------

    async def open_upstream(
        self, data: bytes = b"", opening: Connecting[StreamProtocol] | None = None
    ) -> tuple[StreamReader, StreamWriter]:
        """Open a SCAFFOLD stream to the object, retrying broken or silent handshakes;
        ``data`` rides in the SYN (of each attempt). ``opening``: the first attempt, begun
        already (:meth:`start_upstream`).

        Raises:
            ObjectNotFound: no replica is registered.
            PathError, TimeoutError: no handshake succeeded within ``connect_budget``.
        """

        def attempt(timeout: float) -> Awaitable[tuple[StreamReader, StreamWriter]]:
            nonlocal opening
            if opening is not None:
                first, opening = opening, None
                return first.streams(timeout)
            return self.host.open_connection(
                self._object, timeout=timeout, data=data, peername=(self.name, 0)
            )

        return await self._retrying(attempt)

    def start_upstream(self, data: bytes) -> Connecting[StreamProtocol] | None:
        """Begin opening a stream to the object with ``data`` in its SYN, from a plain
        callback: the SYN leaves before this returns. None if it cannot begin (the host
        closing, say): :meth:`open_upstream` tries again and raises what is wrong."""
        try:
            return self.host.start_open_connection(self._object, data=data, peername=(self.name, 0))
        except Exception:
            return None

    async def _retrying(self, attempt: Callable[[float], Awaitable[T]]) -> T:
        """``attempt(timeout)`` until one opens a stream, within ``connect_budget``.

        Raises:
            ObjectNotFound: no replica is registered.
            PathError, TimeoutError: no handshake succeeded within ``connect_budget``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.connect_budget
        pause = 0.05
        while True:
            timeout = max(0.05, min(self.connect_timeout, deadline - loop.time()))
            try:
                opened = await attempt(timeout)
                self.stats.connect_latency.observe(loop.time() - started)
                return opened
            except ObjectNotFound:
                raise
            except (PathError, TimeoutError):
                if loop.time() + pause >= deadline:
                    raise
                self.stats.retries += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.4)

    def _take_warm(self, conn: socket.socket, splice: Splice, first: bytes) -> tuple[Splice, bytes]:
        """In the callback that accepted ``conn``: a stream opened ahead as its splice's
        service end, and ``first`` (what the client already sent) written on it now."""
        splice.client.sock = conn  # (what the stream brings goes straight to the socket)
        if self.syn_data and not splice.service.held:
            # Until the service's first byte, the client's bytes are kept: if the stream
            # ends or breaks before any reached the replica's host, they go on a new one.
            splice.replay = Replay(splice, first, self._reopen)
        if first:
            self.stats.bytes_in += len(first)
            assert splice.service.transport is not None  # (taken open)
            splice.service.transport.write(first)
        return splice, first

    def _reopen(self, splice: Splice, data: bytes) -> None:
        """A taken stream ended or broke before answering (Replay): a new one, ``data`` in
        its SYN, as the splice's service end."""
        self.stats.retries += 1
        task = asyncio.get_running_loop().create_task(self._replay(splice, data))
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(self, splice: Splice, data: bytes) -> None:
        client = splice.client
        if client.transport is None and client.sock is None:  # (nothing to answer: no replay)
            splice.abort()
            return
        # The client's end, not its socket: its task may make the transport while the new
        # stream opens, and a failure must close what holds the connection by then.
        if not await self._open_service(splice, data, client):
            return  # (the client closed, or cut: what _open_service does when it fails)
        if splice.done.done() or client.lost:
            splice.abort()  # the client left meanwhile
        elif client.transport is not None:
            splice.link()  # (else the client's task links it once its transport is made)

    def _open_early(self, conn: socket.socket, client: _Client, first: bytes) -> tuple[Splice, bytes]:
        """In the callback that accepted ``conn``: the splice for it, and the SYN of its
        stream carrying ``first`` (what the client already sent) sent now
        (``client.connecting``, the first attempt)."""
        self.stats.bytes_in += len(first)
        splice = Splice(self.stats, idle_timeout=self.idle_timeout)
        # The response may come before the client's transport is made: the socket takes it at
        # once meanwhile (End.sock).
        splice.client.sock = conn
        try:
            client.connecting = self.host.start_connection(
                lambda: splice.service, self._object, data=first, peername=(self.name, 0)
            )
        except Exception:  # the task's attempts meet it again and count it
            client.connecting = None
        return splice, first

    async def _serve_socket(
        self, conn: socket.socket, client: _Client, early: tuple[Splice, bytes] | None = None
    ) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        try:
            if self.http:
                await self._serve_http(conn, client)
            else:
                await self._serve_raw(conn, client, early)
        except Exception as exc:  # one client's failure must never stop the ingress
            self.stats.error("internal")
            log.exception("%r: connection failed: %s", self, exc)
            client.abort()
        finally:
            self.stats.active -= 1

    def _session_early(self, conn: socket.socket, first: bytes) -> HttpSession:
        """In the callback that accepted ``conn``: its session, with ``first`` (what the
        client already sent) parsed before the client's transport is made (http.ClientSide)
        -- a malformed request is answered with no transport -- and a whole first request's
        stream begun (``HttpSession.begin``)."""
        session = HttpSession(
            ClientSide(conn),
            first,
            self.open_upstream,
            self.stats,
            self.name,
            self.http_options,
            self.idle_upstreams,
        )
        if first:
            session.begin(self.start_upstream)
        return session

    async def _serve_http(self, conn: socket.socket, client: _Client) -> None:
        session = client.session
        assert session is not None  # made in the accept callback (_session_early)
        await session.run()

    def _read_now(self, conn: socket.socket) -> bytes | None:
        """What the client already sent, without waiting (b"" if nothing yet); None, with the
        socket closed, if it has gone (EOF, or a reset: counted as ``client-gone``)."""
        try:
            data = conn.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            self.stats.error("client-gone")
            data = b""
        if not data:
            conn.close()
            return None
        return data

    async def _serve_raw(
        self, conn: socket.socket, client: _Client, early: tuple[Splice, bytes] | None
    ) -> None:
        if early is not None:  # its first bytes read and sent (SYN, or a stream opened ahead)
            splice, first = early
            try:
                opened = client.warm is not None or await self._open_service(
                    splice, first, conn, started=client
                )
                client.warm = None  # (from here the splice's own rules close it)
            except BaseException:  # cancelled (close): nothing else holds the socket
                conn.close()
                raise
            if opened:
                if await self._client_transport(splice, conn, client) is not None:
                    await splice.carry()  # the client may have left while the stream opened
                else:
                    splice.abort()
            return
        splice = Splice(self.stats, idle_timeout=self.idle_timeout)
        if client.unsent:  # read at the accept: held for the stream, ahead of what follows
            self.stats.bytes_in += len(client.unsent)
            splice.client.held.append(client.unsent)
            client.unsent = b""
        transport = await self._client_transport(splice, conn, client)
        if transport is None:
            return
        first = b""
        if self.syn_data:
            # One whose bytes were not there yet gets the short wait; one that waits for the
            # server gets its stream after it.
            first = await splice.first_bytes(self.first_data_wait)
            if not first and (splice.client.eof or splice.client.lost):
                transport.close()  # gone before it said anything
                return
        if await self._open_service(splice, first, transport):
            await splice.carry()  # the client may have left while the stream opened

    async def _client_transport(
        self, splice: Splice, conn: socket.socket, client: _Client
    ) -> asyncio.Transport | None:
        """The client's socket as the splice's client end (None if it is gone)."""
        if conn.fileno() < 0:  # closed by a replay that could not open (its error counted)
            return None
        try:
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: splice.client, sock=conn
            )
        except OSError:
            conn.close()
            self.stats.error("client-gone")
            return None
        client.transport = transport
        return transport

    async def _open_service(
        self,
        splice: Splice,
        first: bytes,
        client: asyncio.Transport | socket.socket | End,
        started: _Client | None = None,
    ) -> bool:
        """Open the stream as the splice's service end with ``first`` in its SYN (the first
        attempt is ``started.connecting`` if the accept callback began it); if that fails,
        close the client (an ``ObjectNotFound``) or cut it (anything else). A client given as
        its splice :class:`End` is closed by what holds its connection when that happens: the
        transport once made -- uvloop adopted the socket, and closing the socket object would
        leave the connection open -- else the socket."""

        async def attempt(timeout: float) -> object:
            if started is not None and started.connecting is not None:
                connecting, started.connecting = started.connecting, None
                return await connecting.result(timeout)
            return await self.host.create_connection(
                lambda: splice.service, self._object, timeout=timeout, data=first, peername=(self.name, 0)
            )

        try:
            await self._retrying(attempt)
        except ObjectNotFound as exc:
            self.stats.error("object-not-found")
            log.warning("%r: %s", self, exc)
            _holder(client).close()
            return False
        except (PathError, TimeoutError, OSError) as exc:
            self.stats.error("connect-" + reason_of(exc))
            client = _holder(client)
            if isinstance(client, socket.socket):  # RST: linger 0, then close
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            else:
                client.abort()
            return False
        return True


def _holder(client: asyncio.Transport | socket.socket | End) -> asyncio.Transport | socket.socket:
    """What holds a client's connection now (``Ingress._open_service``)."""
    if not isinstance(client, End):
        return client
    if client.transport is not None:
        return client.transport
    assert client.sock is not None  # (_replay checked that it has one of the two)
    return client.sock
