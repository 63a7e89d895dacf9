"""The ingress proxy: unmodified TCP clients in, SCAFFOLD streams to an object out.

``Ingress`` listens on a TCP address (``asyncio.start_server``). Each accepted connection
becomes one SCAFFOLD stream to the object, opened with ``Host.open_connection``: a fresh Flow
ID per TCP connection, so the network anycasts each connection to a replica and keeps all of
it there (flow affinity). Several ingresses may serve one object; they share nothing.

Raw mode (the default) pumps bytes both ways (``pump.pump_both``: half-close and
backpressure carried through). Opening the stream is retried within ``connect_budget``
seconds when it breaks or times out -- nothing was sent yet, so that is safe for any protocol
-- which covers the moment a replica died and the network has not withdrawn it yet. Once
bytes flowed, a broken stream cuts the client connection (RST), as a failed server would.
With ``http=True`` each connection is an ``http.HttpSession`` instead (keep-alive, retries
of idempotent requests on a new stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..api.streams import StreamReader, StreamWriter
from ..errors import ConfigError, ObjectNotFound, PathError, UsageError
from .http import HttpOptions, HttpSession
from .pump import abort, pump_both, reason_of
from .stats import GatewayStats

if TYPE_CHECKING:
    from ..api.host import Host

__all__ = ["Ingress"]

log = logging.getLogger("scaffold.gateway")


@dataclass(slots=True)
class _Client:
    writer: asyncio.StreamWriter
    session: HttpSession | None = None


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
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        self.name = name
        self.listen = listen
        self.http = http
        self.connect_timeout = connect_timeout
        self.connect_budget = connect_budget
        self.grace = grace
        self.http_options = http_options or HttpOptions()
        #: share the listening address with other processes (``--workers``: the kernel
        #: spreads the connections over them, each one served by one process to its end)
        self.reuse_port = reuse_port
        self.stats = GatewayStats()
        self._server: asyncio.Server | None = None
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
        if self._server is None or not self._server.sockets:
            raise UsageError("the ingress is not listening; call start() first")
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def start(self) -> None:
        """Listen for clients.

        Raises:
            ConfigError: the address is in use or cannot be bound.
            UsageError: already started.
        """
        if self._server is not None:
            raise UsageError(f"{self!r} is already started")
        address, port = self.listen
        try:
            self._server = await asyncio.start_server(
                self._accept, address, port, reuse_address=True, reuse_port=self.reuse_port or None
            )
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(f"ingress for {self.name!r} cannot listen on {address}:{port}: {why}") from exc
        log.info("%r listening", self)

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, let open connections finish for ``grace`` seconds, cut the rest.

        HTTP connections idle between requests are closed at once; one in the middle of a
        request gets its response (with ``Connection: close``) first.
        """
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for client in self._clients.values():
            if client.session is not None:
                client.session.closing = True
                if not client.session.busy:
                    client.writer.close()
        tasks = list(self._clients)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace if grace is None else grace)
            for task in pending:
                abort(self._clients[task].writer)
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        log.info("%r closed: %s", self, self.stats.as_json())

    async def __aenter__(self) -> Ingress:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections ---------------------------------------------------------------------

    async def open_upstream(self) -> tuple[StreamReader, StreamWriter]:
        """Open a SCAFFOLD stream to the object, retrying broken or silent handshakes.

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
                opened = await self.host.open_connection(self.name, timeout=timeout)
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

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        client = _Client(writer)
        if self.http:
            client.session = HttpSession(
                reader, writer, self.open_upstream, self.stats, self.name, self.http_options
            )
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer, client.session), name=f"ingress:{self.name}"
        )
        self._clients[task] = client
        task.add_done_callback(self._clients.pop)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: HttpSession | None
    ) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        try:
            if session is not None:
                await session.run()
            else:
                await self._serve_raw(reader, writer)
        except Exception as exc:  # one client's failure must never stop the ingress
            self.stats.error("internal")
            log.exception("%r: connection failed: %s", self, exc)
            abort(writer)
        finally:
            self.stats.active -= 1

    async def _serve_raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.open_upstream()
        except ObjectNotFound as exc:
            self.stats.error("object-not-found")
            log.warning("%r: %s", self, exc)
            writer.close()
            return
        except (PathError, TimeoutError, OSError) as exc:
            self.stats.error("connect-" + reason_of(exc))
            abort(writer)
            return

        await pump_both(reader, writer, up_reader, up_writer, self.stats)
