"""The HTTP-aware ingress: HTTP/1.1 with keep-alive in front, retries on a broken replica.

One ``HttpSession`` serves one client TCP connection: many requests in turn (keep-alive,
pipelining), parsed by llhttp (``http1.RequestParser``). Each request goes to the object over
a SCAFFOLD stream, whose responses ``http1.ResponseParser`` reads; the stream is reused for
the next request while the replica keeps it open -- this client's, or once this client has
gone, a later client's idempotent one (``upstream.IdleUpstreams``) -- and a new one is opened
after a failure or when the replica closes (HTTP/1.0 servers such as ``python -m
http.server`` do so after every response). Heads are written here: hop-by-hop fields
dropped both ways, a whole response sent with its length, one relayed before it is whole
chunked to an HTTP/1.1 client (or, to an HTTP/1.0 one, ended by closing the connection).

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

Keep-alive exchanges in callbacks. The session's task reads requests and responses; but
while it waits for the next request with its stream open and idle, a request that arrives
whole and alone is sent on from the client protocol's callback, and its response, once
whole, to the client from the stream protocol's (``StreamProtocol.tap``): no task woken, no
coroutine resumed, a fifth of a request's CPU (``gateway_callback_requests_total`` counts
them). Whatever the callbacks cannot finish they hand to the task, which goes on from what
the parsers hold: part of a request or two, bytes during an exchange, a broken or malformed
or late response, one larger than ``buffer_limit``, the ingress closing.

Slow clients are bounded: a request's head must arrive within ``header_timeout`` (else
``408``, ``errors["header-timeout"]``), and a connection that stays silent between requests
for ``idle_timeout`` is closed (``errors["idle-timeout"]``). Malformed or oversized requests
get ``400``/``413``/``431``/``505`` and a closed connection (``errors["bad-request"]``,
``errors["body-too-large"]``); a malformed response from a replica is a failed attempt
(``bad-response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from ..api.streams import StreamProtocol, StreamReader, StreamWriter
from ..errors import ObjectNotFound, PathError
from .http1 import HOP_BY_HOP, HttpError, Request, RequestParser, ResponseHead, chunk
from .pump import CHUNK, Deadline, reason_of, send_some
from .stats import GatewayStats
from .upstream import IdleUpstreams, Upstream

if TYPE_CHECKING:
    from ..api.host import Connecting

__all__ = ["IDEMPOTENT_METHODS", "ClientSide", "HttpOptions", "HttpSession"]

log = logging.getLogger("scaffold.gateway")

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
#: not forwarded to the replica: hop-by-hop, answered here, or redone from the buffered body
_NOT_UPSTREAM = HOP_BY_HOP | {b"expect", b"content-length"}
_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})

#: opens a stream to the object; the bytes ride in its SYN (docs/protocol.md §4.2.7); its first
#: attempt is the second argument if that is not None (one ``StartUpstream`` began)
OpenUpstream = Callable[
    [bytes, "Connecting[StreamProtocol] | None"], Awaitable[tuple[StreamReader, StreamWriter]]
]
#: begins opening such a stream from a plain callback: its SYN leaves before it returns (None:
#: it could not begin; the session's ``OpenUpstream`` tries again and reports why)
StartUpstream = Callable[[bytes], "Connecting[StreamProtocol] | None"]


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
    #: idle streams kept for later clients' requests (upstream.IdleUpstreams; 0: none), each
    #: closed after reuse_idle_timeout seconds idle, and reused within reuse_max_age of opening
    reuse: int = 32
    reuse_idle_timeout: float = 2.0
    reuse_max_age: float = 10.0


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
class _Begun:
    """The first request's upstream, begun in the callback that accepted the client
    (``HttpSession.begin``): ``data`` is the request as the replica gets it, sent on a reused
    ``upstream`` or riding in the SYN of ``opening``."""

    request: Request
    data: bytes
    opening: Connecting[StreamProtocol] | None = None
    upstream: Upstream | None = None

    def cancel(self) -> None:
        if self.opening is not None:
            self.opening.cancel()
        if self.upstream is not None:  # its request went: the answer would be nobody's
            self.upstream.idle = False
            self.upstream.close()


@dataclass(slots=True)
class _Fast:
    """An exchange the protocols' callbacks carry (``HttpSession._client_bytes``): the
    request, as the replica got it (``data``) and when it came; ``failure``: what broke it,
    for the task that takes it over."""

    request: Request
    data: bytes
    started: float
    failure: UpstreamFailed | None = None
    received: int = 0  # bytes of the response the callbacks parsed


#: reads of unread client bytes before a socket with no transport is closed (ClientSide.close)
_DISCARD_READS = 16


#: asyncio's reader can be woken with nothing to read (its ``_wakeup_waiter``, 3.4 to 3.13):
#: without it, no exchange is carried in callbacks (the task carries them all, as before)
_CAN_WAKE = callable(getattr(asyncio.StreamReader, "_wakeup_waiter", None))


class _ClientReader(asyncio.StreamReader):
    """asyncio's reader, which the session can also wake with nothing to read."""

    def wake(self) -> None:
        """Wake a ``read`` waiting for bytes: it returns ``b""`` with ``at_eof()`` false --
        "look again" (the bytes went to the session's parser in the callback)."""
        self._wakeup_waiter()  # type: ignore[attr-defined]  # asyncio's own (3.4 to 3.13)


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol whose ``tap`` sees each chunk first and keeps the ones it
    takes from the reader (``HttpSession._client_bytes``)."""

    def __init__(self, reader: asyncio.StreamReader, tap: Callable[[bytes], bool] | None) -> None:
        super().__init__(reader)
        self.tap = tap

    def data_received(self, data: bytes) -> None:
        tap = self.tap
        if tap is None or not tap(data):
            super().data_received(data)


class ClientSide:
    """The client's accepted socket, made an asyncio transport only once the session needs
    one: to read more than the bytes already read, or to write. A request that arrived whole
    is parsed and its stream opened (the SYN sent) before the transport is made, and a
    malformed one is answered from the socket and closed with no transport made at all."""

    __slots__ = ("_aborted", "_attaching", "closed", "reader", "sock", "tap", "transport", "writer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _ClientReader(loop=asyncio.get_running_loop())
        #: sees the client's bytes before the reader once the transport is made (the session)
        self.tap: Callable[[bytes], bool] | None = None
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
        protocol = _ClientProtocol(self.reader, self.tap)
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

    def send_early(self, data: bytes) -> bytes:
        """Send ``data`` straight to the socket while no transport is made or being made;
        what it did not take at once (all of it once a transport is on its way: from then on
        everything goes through the transport, in order)."""
        if self._attaching is not None or self.closed:
            return data
        return send_some(self.sock, data)

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` straight to the socket if no transport is made or being made (a
        short error answer before closing: what the socket does not take at once is
        dropped); whether it did."""
        if self._attaching is not None or self.closed:
            return False
        with contextlib.suppress(OSError):
            send_some(self.sock, data)
        return True

    def close(self) -> None:
        """Close after what was written (FIN); the reader sees EOF."""
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        elif self._attaching is None:
            # Bytes the client sent that nobody read would make the close a reset, which may
            # cost the client the answer still on its way: read them off first (as a
            # transport would have), a bounded number of times.
            for _ in range(_DISCARD_READS):
                try:
                    if not self.sock.recv(CHUNK):
                        break
                except OSError:  # nothing waiting (would block), or gone
                    break
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

    #: bounds each wait for the client or the replica (made when ``run`` starts, in its task)
    _deadline: Deadline

    def __init__(
        self,
        client: ClientSide,
        first: bytes,
        open_upstream: OpenUpstream,
        stats: GatewayStats,
        name: str,
        options: HttpOptions,
        idle: IdleUpstreams | None = None,
    ) -> None:
        self.client = client
        self.open_upstream = open_upstream
        self.stats = stats
        self.name = name
        self.options = options
        self.requests = RequestParser(options.body_limit)
        self.upstream: Upstream | None = None
        #: the ingress's idle streams: this session's requests may take one, and its stream
        #: goes there when the session ends
        self.idle = idle
        #: when the head of the request being read must be complete (loop time), or None
        self._head_deadline: float | None = asyncio.get_running_loop().time() + options.header_timeout
        self.busy = False  # a request is being read or answered (not idle between requests)
        self.closing = False  # the ingress is closing: answer the current request, then stop
        self._committed = False  # part of the current response went to the client
        self._keep_alive = True  # the current request leaves the connection open
        #: the first request's upstream, begun by ``begin``
        self._begun: _Begun | None = None
        #: the task waits in ``_receive`` with no unread byte: the callbacks may carry the next
        #: exchange (``_client_bytes``, ``_upstream_bytes``)
        self._parked = False
        self._fast: _Fast | None = None  # the exchange they carry
        self._handed: _Fast | None = None  # one they began, which the task finishes
        self._tapped: Upstream | None = None  # the stream whose protocol's tap is ours
        self._upstream_tap = self._upstream_bytes  # (one bound method, set on each stream)
        client.tap = self._client_bytes if _CAN_WAKE else None
        # Parsed from here, before the client's transport is made (ClientSide).
        if first:  # (b"" is EOF)
            stats.bytes_in += len(first)
            self.requests.feed(first)

    def begin(self, start: StartUpstream) -> None:
        """From the callback that accepted the client: if its first request is here whole
        and idempotent, it goes now -- on an idle stream if there is one, else in the SYN of
        a stream that begins opening -- not a turn of the loop later, when the session's task
        first runs (``run`` takes it as its first attempt)."""
        ready = self.requests.ready
        if not ready or ready[0].method not in IDEMPOTENT_METHODS:
            return
        request = ready[0]
        data = self._upstream_request(request)
        upstream = self._take_idle()
        if upstream is not None:
            upstream.writer.write(data)
            self._begun = _Begun(request, data, upstream=upstream)
            return
        opening = start(data)
        if opening is not None:
            self._begun = _Begun(request, data, opening)

    def cancel_begun(self) -> None:
        """Give up the upstream ``begin`` began, if no request took it."""
        begun, self._begun = self._begun, None
        if begun is not None:
            begun.cancel()

    def _take_idle(self) -> Upstream | None:
        """An idle stream of the ingress's, counted, or None."""
        if self.idle is None or self.closing:
            return None
        upstream = self.idle.take(asyncio.get_running_loop().time())
        if upstream is not None:
            self.stats.reused += 1
        return upstream

    async def run(self) -> None:
        """Serve requests until the client or the ingress ends the connection."""
        loop = asyncio.get_running_loop()
        self._deadline = Deadline()
        try:
            while not self.closing or self._handed is not None:
                request = await self._read_request()
                if request is None:
                    break
                handed, self._handed = self._handed, None
                started = loop.time() if handed is None else handed.started
                await self._answer(request, handed)
                self.stats.request_latency.observe(loop.time() - started)
                if not self._keep_alive:
                    break
                self._committed = False
                if self.requests.started:
                    # A pipelined request is already here: its head has header_timeout.
                    self._head_deadline = loop.time() + self.options.header_timeout
        except HttpError as exc:
            self.stats.error(exc.reason)
            self._keep_alive = False
            await self._send_error(exc.status, f"bad request: {exc}\n", from_socket=True)
        except ClientCut:
            self.client.abort()
        except ClientSlow as exc:
            self.stats.error(exc.reason)
            if exc.reason == "header-timeout":
                self._keep_alive = False
                await self._send_error(408, "request header timeout\n")
        except (ConnectionError, OSError):
            self.stats.error("client-gone")
        finally:
            self._deadline.cancel()
            self._fast = self._handed = None
            self.cancel_begun()
            self._drop_upstream(keep=True)
            self.client.close()

    # -- the client side -----------------------------------------------------------------

    async def _receive(self) -> None:
        """More bytes from the client, within the head deadline or the idle timeout.

        Raises:
            ClientSlow: neither came in time.
        """
        loop = asyncio.get_running_loop()
        deadline = self._deadline
        if self._head_deadline is not None:
            deadline.arm(self._head_deadline)
            reason = "header-timeout"
        else:
            idle = self.options.idle_timeout
            deadline.arm(None if idle is None else loop.time() + idle)
            reason = "idle-timeout"
        try:
            if self.client.writer is None:
                await self.client.attached()
            self._parked = True
            data = await self.client.reader.read(CHUNK)
        except asyncio.CancelledError:
            if deadline.expired():
                handed = self._take_over() or self._handed
                if handed is None:
                    raise ClientSlow(reason) from None
                # The deadline was the callbacks' exchange's (armed for its response).
                if handed.failure is None:
                    handed.failure = UpstreamFailed("response-timeout", "no response in time")
                return
            raise
        finally:
            self._parked = False
            deadline.disarm()
        self._take_over()
        if not data and not self.client.reader.at_eof():
            return  # woken by the callbacks: what they parsed is in self.requests
        if data and self._head_deadline is None and not self.busy:
            # The first byte of the next request: its head has header_timeout from now.
            self._head_deadline = loop.time() + self.options.header_timeout
        self.stats.bytes_in += len(data)
        self.requests.feed(data)

    async def _read_request(self) -> Request | None:
        """The client's next whole request, or None when it sent its last.

        Raises:
            HttpError: the client broke HTTP/1.1 or a bound.
            ClientSlow: the head or the body did not come in time.
        """
        self.busy = False
        requests = self.requests
        request: Request | None
        while True:
            if self._handed is not None:  # begun by the callbacks: before anything after it
                request = self._handed.request
                break
            request = requests.next()
            if request is not None:
                break
            if requests.done:
                return None
            if requests.head_done:
                self.busy = True
                self._head_deadline = None  # the body is read under the idle timeout
                if requests.waiting_for_100_continue and not requests.continue_sent:
                    requests.continue_sent = True
                    await self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif self.closing:
                return None
            await self._receive()
        self.busy = True
        self._head_deadline = None
        self._keep_alive = request.keep_alive
        return request

    async def _send(self, data: bytes) -> None:
        self.stats.bytes_out += len(data)
        writer = self.client.writer
        if writer is None:
            # No transport yet: the socket takes what it can now (a first response, usually
            # all of it); the transport is made only for the rest, or to read on.
            data = self.client.send_early(data)
            if not data:
                return
            writer = await self.client.attached()
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # (else drain has nothing to wait for)
            await writer.drain()

    async def _send_error(self, status: int, text: str, from_socket: bool = False) -> None:
        """Answer ``status`` with ``text`` unless part of a response went already;
        ``from_socket``: straight from the socket if the client has no transport yet."""
        if self._committed:
            return
        body = text.encode()
        keep = self._keep_alive and not self.closing
        data = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % (
            status,
            HTTPStatus(status).phrase.encode(),
            len(body),
        )
        data += b"via: 1.1 scaffold-ingress\r\n%s\r\n%s" % (b"" if keep else b"connection: close\r\n", body)
        self._keep_alive = keep
        # A malformed first request is answered from the socket: no transport made.
        if from_socket and self.client.send_now(data):
            self.stats.bytes_out += len(data)
            return
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(data)

    # -- the keep-alive exchange in callbacks ---------------------------------------------

    def _client_bytes(self, data: bytes) -> bool:
        """The client's bytes, in the callback that has them (``ClientSide.tap``); whether
        they were taken from the reader.

        While the task waits for the next request with the stream open and idle, a request
        that came whole and alone goes to the replica from here, and its response to the
        client from ``_upstream_bytes``: the task is not woken, its coroutines not resumed,
        about a fifth of a request's CPU. Anything else is the task's -- part of a request,
        two, a malformed one, one that ends the connection, a client not reading its
        responses, bytes while an exchange is in flight: the bytes go to its reader, or,
        once parsed here, it is woken to take them from the parser."""
        if not self._parked:
            return False
        upstream = self.upstream
        requests = self.requests
        writer = self.client.writer
        if (
            self._fast is not None
            or upstream is None
            or not upstream.idle
            or self.closing
            or not requests.empty()
            or self._head_deadline is not None
            or writer is None
            or writer.transport.get_write_buffer_size()
            or (self._tapped is not upstream and not self._tap(upstream))
        ):
            self._parked = False  # the reader wakes the task (which takes over an exchange)
            return False
        self.stats.bytes_in += len(data)
        requests.feed(data)
        loop = asyncio.get_running_loop()
        request = requests.alone()
        if request is None or not request.keep_alive:
            if requests.started:  # (its head has header_timeout, as _receive gives it)
                self._head_deadline = loop.time() + self.options.header_timeout
            self._parked = False
            self.client.reader.wake()
            return True
        requests.next()
        now = loop.time()
        data = self._upstream_request(request)
        upstream.responses.expect(head_only=request.method == b"HEAD")
        upstream.idle = False
        self.busy = True
        self._keep_alive = True
        self._fast = _Fast(request, data, now)
        self.stats.requests += 1
        upstream.writer.write(data)
        self._deadline.arm(now + self.options.response_timeout)
        return True

    def _tap(self, upstream: Upstream) -> bool:
        """Make ``_upstream_bytes`` the tap of ``upstream``'s protocol; whether it could."""
        protocol = upstream.writer.transport.get_protocol()
        if not isinstance(protocol, StreamProtocol) or protocol.tap is not None:
            return False
        protocol.tap = self._upstream_tap
        self._tapped = upstream
        return True

    def _upstream_bytes(self, data: bytes | None) -> bool:
        """The replica's bytes (None: the stream ended or broke), in the callback that has
        them (``StreamProtocol.tap``); whether they were taken from the reader. A response to
        the callbacks' exchange that is whole goes to the client from here; one that breaks,
        is malformed, or grows past ``buffer_limit`` is handed to the task, which goes on
        from what the parser holds (``_exchange``)."""
        fast = self._fast
        upstream = self.upstream
        if fast is None or upstream is None:
            return False
        if data is None:  # (the task finds the EOF or the error in the reader)
            self._hand_over()
            return False
        fast.received += len(data)
        if fast.received > self.options.buffer_limit:
            # Larger than what is held back: relayed as it comes, by the task, which reads
            # it from here (the reader gets this chunk).
            self._hand_over()
            return False
        responses = upstream.responses
        try:
            responses.feed(data)
        except HttpError as exc:
            fast.failure = UpstreamFailed(exc.reason, f"malformed response: {exc}")
            self._hand_over()
            return True
        head = responses.head
        if head is None or not responses.ended:
            return True
        body = b"".join(responses.body)
        responses.body.clear()
        out = self._client_head(head, len(body), False) + body
        writer = self.client.writer
        assert writer is not None  # (no exchange begins here without it)
        self.stats.bytes_out += len(out)
        writer.write(out)
        now = asyncio.get_running_loop().time()
        self.stats.request_latency.observe(now - fast.started)
        self.stats.in_callbacks += 1
        self._fast = None
        upstream.idle = True
        self.busy = False
        if not responses.reusable:
            self._drop_upstream()
        if self._keep_alive:
            idle = self.options.idle_timeout
            self._deadline.arm(None if idle is None else now + idle)
        else:  # the ingress is closing (_client_head): the task ends the connection
            self._parked = False
            self.client.reader.wake()
        return True

    def _hand_over(self) -> None:
        """The callbacks' exchange is the task's from here: it is woken to finish it."""
        self._handed, self._fast = self._fast, None
        self._parked = False
        self.client.reader.wake()

    def _take_over(self) -> _Fast | None:
        """The task runs: an exchange the callbacks carry is its to finish (the one it
        returns, if any)."""
        fast = self._fast
        if fast is not None:
            self._handed, self._fast = fast, None
        return fast

    # -- one request, with retries -------------------------------------------------------

    def _upstream_request(self, request: Request) -> bytes:
        """``request`` as the replica gets it: HTTP/1.1, hop-by-hop fields dropped, a
        ``Host`` (the object's name if the client sent none), the buffered body's length."""
        body = request.body
        head = b"%s %s HTTP/1.1\r\n" % (request.method, request.target) + b"".join(
            [name + b": " + value + b"\r\n" for name, value in request.headers if name not in _NOT_UPSTREAM]
        )
        if not request.has_host:
            head += b"host: %s\r\n" % self.name.encode()
        if body or request.method in _WITH_BODY:
            head += b"content-length: %d\r\n" % len(body)
        return head + b"\r\n" + body

    async def _answer(self, request: Request, handed: _Fast | None = None) -> None:
        """Answer ``request``, retrying as the module says; ``handed``: the callbacks sent it
        on ``self.upstream`` already (and took what came back so far)."""
        begun = self._begun
        if handed is not None:
            upstream_request = handed.data
        elif begun is not None and begun.request is request:
            upstream_request = begun.data
        else:
            upstream_request = self._upstream_request(request)
        idempotent = request.method in IDEMPOTENT_METHODS
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # retry_budget counts from the first failure
        backoff = self.options.backoff
        attempt = 0
        fresh = False  # a new stream, not an idle one (after a reused one failed)
        if handed is None:  # (else the callbacks counted it)
            self.stats.requests += 1
        while True:
            attempt += 1
            sent = reused = False
            failure: UpstreamFailed
            try:
                if handed is not None:
                    assert self.upstream is not None  # (the callbacks drop it only once answered)
                    upstream, sent = self.upstream, True
                elif self.upstream is not None:  # the open stream (the keep-alive path: no await)
                    upstream, sent = self.upstream, False
                else:
                    upstream, sent = await self._get_upstream(upstream_request, idempotent, fresh)
            except ObjectNotFound as exc:
                self.stats.error("object-not-found")
                await self._send_error(503, f"no replica of {self.name!r} is registered: {exc}\n")
                return
            except (PathError, TimeoutError, OSError) as exc:  # opening the stream failed
                failure = UpstreamFailed("connect-" + reason_of(exc), str(exc))
                sent = idempotent  # an idempotent request went in the SYN
            else:
                reused = upstream.reused
                try:
                    # Errors writing to the client are not caught here: they end the session.
                    await self._exchange(upstream, request, upstream_request, sent, handed)
                    return
                except UpstreamFailed as exc:
                    failure = exc
                sent = True
            handed = None
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
            if reused and not fresh:
                # A reused stream the replica closed as the request went, most likely (not a
                # replica that failed): at once, on a new stream.
                fresh = True
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.options.max_backoff)

    async def _get_upstream(self, request: bytes, idempotent: bool, fresh: bool) -> tuple[Upstream, bool]:
        """With no stream open (``_answer`` takes an open one itself, without a coroutine):
        the stream to send ``request`` on -- the one begun from the accept, an idle one of the
        ingress's (an idempotent request's, unless ``fresh``), or a new one; whether the
        request already went (begun on it from the accept, or in the new stream's SYN: only an
        idempotent one may ride there, §4.2.7)."""
        assert self.upstream is None
        begun, self._begun = self._begun, None
        opening = None
        if begun is not None:
            if begun.data is not request:
                begun.cancel()
            elif begun.upstream is not None:
                self.upstream = begun.upstream
                return self.upstream, True
            else:
                opening = begun.opening
        if idempotent and not fresh and opening is None and (upstream := self._take_idle()) is not None:
            self.upstream = upstream
            return upstream, False
        early = request if idempotent else b""
        loop = asyncio.get_running_loop()
        reader, writer = await self.open_upstream(early, opening)
        self.upstream = Upstream(reader, writer, opened=loop.time())
        return self.upstream, bool(early)

    def _drop_upstream(self, keep: bool = False) -> None:
        """Let go of the stream: ``keep``, to the ingress's idle streams if it may serve a
        later client's request (else closed)."""
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            return
        if self._tapped is upstream:
            self._tapped = None
            protocol = upstream.writer.transport.get_protocol()
            if isinstance(protocol, StreamProtocol):
                protocol.tap = None
        idle = None if self.closing or not keep else self.idle
        if idle is None or not idle.give(upstream, asyncio.get_running_loop().time()):
            upstream.close()

    async def _exchange(
        self, upstream: Upstream, request: Request, data: bytes, sent: bool, handed: _Fast | None = None
    ) -> None:
        """Send one request on ``upstream`` (unless it was ``sent`` in the SYN, or by the
        callbacks that ``handed`` it over) and relay its response to the client.

        Raises:
            UpstreamFailed: the stream to the replica failed (``self._committed`` tells
                whether part of the response already went to the client).
        """
        responses = upstream.responses
        if handed is None:
            responses.expect(head_only=request.method == b"HEAD")
            upstream.idle = False
            try:
                writer = upstream.writer
                if not sent:
                    writer.write(data)
                # Only a full buffer waits (a stream that already broke fails the read below).
                if writer.transport.get_write_buffer_size():
                    await writer.drain()
            except (PathError, OSError) as exc:
                raise UpstreamFailed("send-" + reason_of(exc), str(exc)) from exc
        elif handed.failure is not None:
            raise handed.failure
        held: list[bytes] = []
        held_bytes = 0
        chunked = False  # the body goes to the client as chunks
        parsed = handed is not None  # the parser holds what the callbacks fed it: look first
        while True:
            if parsed:
                parsed = False
            else:
                await self._read_response(upstream)
            head = responses.head
            if head is None:
                continue
            body = responses.body
            if body:
                held += body
                held_bytes += sum(map(len, body))
                body.clear()
            if responses.ended:
                break
            if self._committed or held_bytes > self.options.buffer_limit:
                first = b""
                if not self._committed:  # the head goes first: the length is not known yet
                    self._committed = True
                    chunked = head.framing != b"length" and request.version == "1.1"
                    first = self._client_head(head, None, chunked)
                await self._send(first + b"".join([chunk(piece) for piece in held] if chunked else held))
                held.clear()
        if self._committed:
            end = b"0\r\n\r\n" if chunked else b""
            await self._send(b"".join([chunk(piece) for piece in held] if chunked else held) + end)
        else:
            self._committed = True
            await self._send(self._client_head(head, held_bytes, False) + b"".join(held))
        upstream.idle = True
        if not responses.reusable:  # (else the replica keeps the stream open: reuse it)
            self._drop_upstream()

    async def _read_response(self, upstream: Upstream) -> None:
        """Read and parse the next bytes of the replica's response.

        Raises:
            UpstreamFailed: the stream broke, stayed silent, or the response is malformed.
        """
        deadline = self._deadline
        deadline.arm(asyncio.get_running_loop().time() + self.options.response_timeout)
        try:
            data = await upstream.reader.read(CHUNK)
        except asyncio.CancelledError:
            if deadline.expired():
                raise UpstreamFailed("response-timeout", "no response in time") from None
            raise
        except (PathError, OSError) as exc:
            raise UpstreamFailed(reason_of(exc), str(exc)) from exc
        finally:
            deadline.disarm()
        try:
            upstream.responses.feed(data)
        except HttpError as exc:
            raise UpstreamFailed(exc.reason, f"malformed response: {exc}") from None

    def _client_head(self, head: ResponseHead, length: int | None, chunked: bool) -> bytes:
        """The head of ``head``'s response to the client: ``length`` bytes of body when it is
        whole, else ``chunked`` or (to an HTTP/1.0 client) ended by closing."""
        if self.closing:
            self._keep_alive = False
        fields = [name + b": " + value + b"\r\n" for name, value in head.headers if name not in HOP_BY_HOP]
        framing = head.framing
        if framing in {b"chunked", b"eof"}:  # (b"length" keeps its field)
            if length is not None:
                fields.append(b"content-length: %d\r\n" % length)
            elif chunked:
                fields.append(b"transfer-encoding: chunked\r\n")
            else:
                self._keep_alive = False  # an HTTP/1.0 client: the body ends with the connection
        if not self._keep_alive:
            fields.append(b"connection: close\r\n")
        return b"HTTP/1.1 %d %s\r\n%s\r\n" % (head.status, head.reason, b"".join(fields))
