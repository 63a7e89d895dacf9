"""The HTTP-aware ingress: HTTP/1.1 with keep-alive in front, retries on a broken replica.

One ``HttpSession`` serves one client TCP connection with h11 (``h11.SERVER``): many
requests in turn (keep-alive, pipelining as h11 allows). Each request goes to the object over
a SCAFFOLD stream, spoken to with a second h11 state machine (``h11.CLIENT``); the stream is
reused for the next request while the replica keeps it open, and a new one is opened after a
failure or when the replica closes (HTTP/1.0 servers such as ``python -m http.server`` do so
after every response).

Retries. The response is held back until it is complete or bigger than ``buffer_limit``;
until then nothing of it reached the client. If the stream breaks in that time (a reset, a
broken path, EOF before a complete response, a malformed response, no answer within
``response_timeout``) and the method is idempotent (RFC 9110 §9.2.2: GET, HEAD, PUT, DELETE,
OPTIONS, TRACE), the request is sent again on a *new* SCAFFOLD stream: a new Flow ID, which
the network anycasts over the replicas it still believes alive. A failed replica needs up to
about a second to be withdrawn (missed heartbeats, or the publisher's health check), so
retries back off (``backoff`` doubling up to ``max_backoff``) within ``retry_budget`` seconds
of the first failure -- not of the first attempt: a replica whose host died while it served a
request is found out only by the transport's stall probe, a second or more later (§5.1), and
that request still gets its retries.
A failure to *open* a stream is retried for every method, since nothing was sent. Otherwise
the client gets 502; no replica at all is 503; a failure after the response started (more
than ``buffer_limit`` bytes already relayed) can only cut the client connection.

A stream is opened only once a whole request has arrived, and an idempotent request rides in
the stream's SYN (data on SYN, docs/protocol.md §4.2.7): the replica answers one round trip
sooner. Other requests are sent after the handshake, so they reach at most one replica.

Slow clients are bounded: a request's head must arrive within ``header_timeout`` (else
``408``, ``errors["header-timeout"]``), and a connection that stays silent between requests
for ``idle_timeout`` is closed (``errors["idle-timeout"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from ..api.streams import StreamReader, StreamWriter
from ..errors import ObjectNotFound, PathError
from .pump import CHUNK, abort, reason_of
from .stats import GatewayStats

__all__ = ["IDEMPOTENT_METHODS", "ClientSide", "HttpOptions", "HttpSession"]

log = logging.getLogger("scaffold.gateway")

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
#: Connection-level headers (RFC 9110 §7.6.1): they describe one hop, never forwarded.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)

#: opens a stream to the object; the bytes ride in its SYN (docs/protocol.md §4.2.7)
OpenUpstream = Callable[[bytes], Awaitable[tuple[StreamReader, StreamWriter]]]


@dataclass(frozen=True, slots=True)
class HttpOptions:
    retry_budget: float = 3.0  # seconds from the first failure during which retries may start
    max_attempts: int = 16
    backoff: float = 0.05  # first pause between attempts; doubles up to max_backoff
    max_backoff: float = 0.4
    response_timeout: float = 30.0  # for each read of the response from a replica
    body_limit: int = 16 * 1024 * 1024  # request bodies are buffered (to retry them); larger: 413
    buffer_limit: int = 256 * 1024  # response bytes held back before committing to the client
    header_timeout: float = 10.0  # a request's head must arrive within this (from its first byte)
    idle_timeout: float | None = 120.0  # silent this long between requests: the connection closes


class UpstreamFailed(Exception):
    """The SCAFFOLD stream to the replica failed; ``reason`` is a counter token."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ClientCut(Exception):
    """The client connection cannot go on (the response broke after it started)."""


class ClientSlow(Exception):
    """The client took too long: ``reason`` is ``header-timeout`` or ``idle-timeout``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Upstream:
    reader: StreamReader
    writer: StreamWriter
    conn: h11.Connection


class ClientSide:
    """The client's accepted socket, made an asyncio transport only once the session needs
    one: to read more than the bytes already read, or to write. A request that arrived whole
    is parsed and its stream opened (the SYN sent) before the transport is made, and a
    malformed one is answered from the socket and closed with no transport made at all."""

    __slots__ = ("_aborted", "_attaching", "closed", "reader", "sock", "transport", "writer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = asyncio.StreamReader(loop=asyncio.get_running_loop())
        self.transport: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._attaching: asyncio.Task[asyncio.StreamWriter] | None = None
        #: close() (or abort()) was called: a transport made after it is closed (cut) at once
        self.closed = False
        self._aborted = False

    def start(self) -> None:
        """Start making the transport (once), while the caller goes on."""
        if self._attaching is None and not self.closed:
            self._attaching = asyncio.get_running_loop().create_task(self._attach())
            self._attaching.add_done_callback(_retrieve)

    async def _attach(self) -> asyncio.StreamWriter:
        loop = asyncio.get_running_loop()
        protocol = asyncio.StreamReaderProtocol(self.reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=self.sock)
        except OSError:
            self.sock.close()  # the client went: nothing else holds the socket
            raise
        self.transport = transport
        self.writer = asyncio.StreamWriter(transport, protocol, self.reader, loop)
        if self._aborted:
            transport.abort()
        elif self.closed:
            transport.close()
        return self.writer

    async def attached(self) -> asyncio.StreamWriter:
        """The client's writer, its transport made first if it is not yet.

        Raises:
            ConnectionError: the connection was closed before it had a transport.
            OSError: the socket could not be made a transport (the client went).
        """
        if self.writer is not None:
            return self.writer
        if self._attaching is None and self.closed:
            raise ConnectionAbortedError("client connection closed")
        self.start()
        assert self._attaching is not None
        return await self._attaching

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` straight to the socket if no transport is made or being made (a
        short error answer before closing: what the socket does not take at once is
        dropped); whether it did."""
        if self._attaching is not None or self.closed:
            return False
        with contextlib.suppress(OSError):
            self.sock.send(data)
        return True

    def close(self) -> None:
        """Close after what was written (FIN); the reader sees EOF."""
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        elif self._attaching is None:
            self.sock.close()
            self.reader.feed_eof()

    def abort(self) -> None:
        """Cut the connection (RST)."""
        self.closed = self._aborted = True
        if self.transport is not None:
            self.transport.abort()
        elif self._attaching is None and self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
            self.reader.feed_eof()


def _retrieve(task: asyncio.Task[asyncio.StreamWriter]) -> None:
    """A transport that could not be made (the client went) is the session's concern when it
    awaits it -- and nobody's if it never does: not an unretrieved-exception warning."""
    if not task.cancelled():
        task.exception()


class HttpSession:
    """One client connection of the HTTP ingress; ``first``: the bytes already read from it."""

    def __init__(
        self,
        client: ClientSide,
        first: bytes,
        open_upstream: OpenUpstream,
        stats: GatewayStats,
        name: str,
        options: HttpOptions,
    ) -> None:
        self.client = client
        self.open_upstream = open_upstream
        self.stats = stats
        self.name = name
        self.options = options
        self.conn = h11.Connection(h11.SERVER)
        self.upstream: Upstream | None = None
        #: when the head of the request being read must be complete (loop time), or None
        self._head_deadline: float | None = asyncio.get_running_loop().time() + options.header_timeout
        self.busy = False  # a request is being read or answered (not idle between requests)
        self.closing = False  # the ingress is closing: answer the current request, then stop
        self._committed = False
        # Parsed from here, before the client's transport is made (ClientSide).
        if first:  # (h11 takes b"" for EOF)
            stats.bytes_in += len(first)
            self.conn.receive_data(first)

    async def run(self) -> None:
        """Serve requests until the client or the ingress ends the connection."""
        try:
            while not self.closing:
                request = await self._read_request()
                if request is None:
                    break
                self.client.start()  # made while the request's stream opens
                started = asyncio.get_running_loop().time()
                await self._answer(*request)
                self.stats.request_latency.observe(asyncio.get_running_loop().time() - started)
                if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                    break
                self.conn.start_next_cycle()
                if self.conn.trailing_data[0]:
                    # A pipelined request is already here: its head has header_timeout.
                    self._head_deadline = asyncio.get_running_loop().time() + self.options.header_timeout
        except h11.RemoteProtocolError as exc:
            self.stats.error("bad-request")
            await self._send_error(exc.error_status_hint, f"bad request: {exc}\n")
        except ClientCut:
            self.client.abort()
        except ClientSlow as exc:
            self.stats.error(exc.reason)
            if exc.reason == "header-timeout":
                await self._send_error(408, "request header timeout\n")
        except (ConnectionError, OSError):
            self.stats.error("client-gone")
        finally:
            self._drop_upstream()
            self.client.close()

    # -- the client side -----------------------------------------------------------------

    async def _receive(self) -> None:
        """More bytes from the client, within the head deadline or the idle timeout.

        Raises:
            ClientSlow: neither came in time.
        """
        loop = asyncio.get_running_loop()
        if self._head_deadline is not None:
            timeout: float | None = self._head_deadline - loop.time()
            reason = "header-timeout"
        else:
            timeout, reason = self.options.idle_timeout, "idle-timeout"
        try:
            async with asyncio.timeout(timeout):
                if self.client.writer is None:
                    await self.client.attached()
                data = await self.client.reader.read(CHUNK)
        except TimeoutError:
            raise ClientSlow(reason) from None
        if data and self._head_deadline is None and not self.busy:
            # The first byte of the next request: its head has header_timeout from now.
            self._head_deadline = loop.time() + self.options.header_timeout
        self.stats.bytes_in += len(data)
        self.conn.receive_data(data)

    async def _read_request(self) -> tuple[h11.Request, bytes] | None:
        self.busy = False
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.closing:
                    return None
                await self._receive()
            elif isinstance(event, h11.Request):
                break
            else:  # ConnectionClosed (or PAUSED, which cannot happen between cycles)
                return None
        self.busy = True
        self._head_deadline = None  # the body is read under the idle timeout
        body = bytearray()
        while True:
            if self.conn.they_are_waiting_for_100_continue:
                await self._write(h11.InformationalResponse(status_code=100, headers=[]))
            part = self.conn.next_event()
            if part is h11.NEED_DATA:
                await self._receive()
            elif isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.options.body_limit:
                    self.stats.error("body-too-large")
                    await self._send_error(413, f"request body larger than {self.options.body_limit} bytes\n")
                    raise ClientCut
            elif isinstance(part, h11.EndOfMessage):
                return event, bytes(body)
            else:
                raise h11.RemoteProtocolError("connection closed inside a request", error_status_hint=400)

    async def _write(self, *events: h11.Event) -> None:
        """Send ``events`` to the client in one write (one system call for a whole small
        response, not one per head, body and end)."""
        await self._send(b"".join(self.conn.send(event) or b"" for event in events))

    async def _send(self, data: bytes) -> None:
        if data:
            writer = self.client.writer or await self.client.attached()
            writer.write(data)
            self.stats.bytes_out += len(data)
            await writer.drain()

    async def _send_error(self, status: int, text: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"via", b"1.1 scaffold-ingress"),
        ]
        if self.closing or self.conn.their_state is h11.ERROR:
            headers.append((b"connection", b"close"))
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError, OSError):
            response = h11.Response(status_code=status, headers=headers)
            events = (response, h11.Data(data=body), h11.EndOfMessage())
            data = b"".join(self.conn.send(event) or b"" for event in events)
            # A malformed first request is answered from the socket: no transport made.
            if self.conn.their_state is h11.ERROR and self.client.send_now(data):
                self.stats.bytes_out += len(data)
                return
            await self._send(data)

    # -- one request, with retries -------------------------------------------------------

    def _upstream_request(self, request: h11.Request, body: bytes) -> h11.Request:
        headers = [
            (name, value)
            for name, value in request.headers
            if name not in HOP_BY_HOP and name not in (b"expect", b"content-length")
        ]
        if not any(name == b"host" for name, _ in headers):
            headers.append((b"host", self.name.encode()))
        if body or request.method in (b"POST", b"PUT", b"PATCH"):
            headers.append((b"content-length", str(len(body)).encode()))
        return h11.Request(method=request.method, target=request.target, headers=headers)

    async def _answer(self, request: h11.Request, body: bytes) -> None:
        upstream_request = self._upstream_request(request, body)
        idempotent = request.method in IDEMPOTENT_METHODS
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # retry_budget counts from the first failure
        backoff = self.options.backoff
        attempt = 0
        self.stats.requests += 1
        while True:
            attempt += 1
            self._committed = False
            sent = False
            failure: UpstreamFailed
            try:
                upstream, sent = await self._get_upstream(upstream_request, body, idempotent)
            except ObjectNotFound as exc:
                self.stats.error("object-not-found")
                await self._send_error(503, f"no replica of {self.name!r} is registered: {exc}\n")
                return
            except (PathError, TimeoutError, OSError) as exc:  # opening the stream failed
                failure = UpstreamFailed("connect-" + reason_of(exc), str(exc))
                sent = idempotent  # an idempotent request went in the SYN
            else:
                try:
                    # Errors writing to the client are not caught here: they end the session.
                    await self._exchange(upstream, upstream_request, body, sent)
                    return
                except UpstreamFailed as exc:
                    failure = exc
                sent = True
            self._drop_upstream()
            if self._committed:
                self.stats.error("broken-mid-response")
                log.info("%s: response broke after it started (%s); cutting the client", self.name, failure)
                raise ClientCut
            retryable = idempotent or not sent
            if deadline is None:
                deadline = loop.time() + self.options.retry_budget
            if not retryable or attempt >= self.options.max_attempts or loop.time() + backoff > deadline:
                self.stats.error(failure.reason)
                await self._send_error(502, f"the replica of {self.name!r} failed: {failure}\n")
                return
            self.stats.retries += 1
            log.debug("%s: retrying %s after %s", self.name, request.method.decode(), failure)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.options.max_backoff)

    async def _get_upstream(
        self, request: h11.Request, body: bytes, idempotent: bool
    ) -> tuple[Upstream, bool]:
        """The stream to send ``request`` on: the open one, or a new one; whether the request
        already went (in the new stream's SYN: only an idempotent one may, §4.2.7)."""
        if self.upstream is not None:
            return self.upstream, False
        conn = h11.Connection(h11.CLIENT)
        early = self._request_bytes(conn, request, body) if idempotent else b""
        reader, writer = await self.open_upstream(early)
        self.upstream = Upstream(reader, writer, conn)
        return self.upstream, bool(early)

    @staticmethod
    def _request_bytes(conn: h11.Connection, request: h11.Request, body: bytes) -> bytes:
        data = conn.send(request)
        if body:
            data += conn.send(h11.Data(data=body))
        return data + conn.send(h11.EndOfMessage())

    def _drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            if upstream.conn.our_state is h11.IDLE and upstream.conn.their_state is h11.IDLE:
                upstream.writer.close()
            else:
                abort(upstream.writer)

    async def _exchange(self, upstream: Upstream, request: h11.Request, body: bytes, sent: bool) -> None:
        """Send one request on ``upstream`` (unless it was ``sent`` in the SYN) and relay its
        response to the client.

        Raises:
            UpstreamFailed: the stream to the replica failed (``self._committed`` tells
                whether part of the response already went to the client).
        """
        conn = upstream.conn
        try:
            if not sent:
                upstream.writer.write(self._request_bytes(conn, request, body))
            await upstream.writer.drain()
        except (PathError, OSError) as exc:
            raise UpstreamFailed("send-" + reason_of(exc), str(exc)) from exc
        held: list[h11.Event] = []
        held_bytes = 0
        while True:
            event = await self._next_response_event(upstream)
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx: between this proxy and the replica
            if isinstance(event, h11.Response):
                event = self._client_response(event)
            elif isinstance(event, h11.Data):
                held_bytes += len(event.data)
            held.append(event)
            done = isinstance(event, h11.EndOfMessage)
            if done or self._committed or held_bytes > self.options.buffer_limit:
                self._committed = True
                await self._write(*held)
                held.clear()
            if done:
                break
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()  # the replica keeps the stream open: reuse it
        else:
            self._drop_upstream()

    async def _next_response_event(self, upstream: Upstream) -> h11.Event:
        conn = upstream.conn
        eof = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if eof:
                    raise UpstreamFailed("closed-mid-response", "replica closed inside a response") from exc
                raise UpstreamFailed("bad-response", f"malformed response: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout(self.options.response_timeout):
                        data = await upstream.reader.read(CHUNK)
                except TimeoutError as exc:
                    raise UpstreamFailed("response-timeout", "no response in time") from exc
                except (PathError, OSError) as exc:
                    raise UpstreamFailed(reason_of(exc), str(exc)) from exc
                eof = not data
                try:
                    conn.receive_data(data)
                except h11.RemoteProtocolError as exc:
                    raise UpstreamFailed("bad-response", f"malformed response: {exc}") from exc
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed("closed-before-response", "replica closed before a response")
            assert isinstance(event, h11.Event)
            return event

    def _client_response(self, response: h11.Response) -> h11.Response:
        headers = [(name, value) for name, value in response.headers if name not in HOP_BY_HOP]
        if self.closing:
            headers.append((b"connection", b"close"))
        return h11.Response(status_code=response.status_code, headers=headers, reason=response.reason)
