"""HTTP/1.1 messages for the HTTP ingress: requests and responses parsed by llhttp, heads written.

Parsing is llhttp's (the C parser of Node.js, through ``httptools``) in its strict mode: no
obs-fold, no duplicate or conflicting ``Content-Length``, no ``Content-Length`` beside
``Transfer-Encoding``, no bare LF, no control characters in a field, only the methods llhttp
knows. What llhttp does not bound, this module does: a head (start line and fields, or a
chunked body's trailers) may take ``HEAD_LIMIT`` bytes -- counted per field as llhttp hands
them over, and across reads for a field that spans them, so at most one read more is held --
and a request body ``body_limit``. Every refusal is one ``HttpError`` with the status a client
gets for it (``400``, ``413``, ``431``, ``505``; ``502`` for a replica's response) and the error
counter's token. Sans-IO: bytes in, records out.

``RequestParser`` turns a client's bytes into whole ``Request`` records (body buffered, to be
resent on a retry); pipelined requests queue up, bounded by the read that brought them.
``ResponseParser`` turns a replica's bytes into a head, body pieces and an end, so a large
response can be relayed before it is whole; it knows when a response ends at EOF (an HTTP/1.0
server without ``Content-Length``) and that a response to ``HEAD`` has no body.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import httptools

__all__ = [
    "HEAD_LIMIT",
    "HOP_BY_HOP",
    "HttpError",
    "Request",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "chunk",
]

#: bytes a head (start line and fields) or a body's trailers may take, as h11's default
HEAD_LIMIT = 16 * 1024
#: Connection-level headers (RFC 9110 §7.6.1): they describe one hop, never forwarded.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
_VERSIONS = frozenset({"1.1", "1.0"})
_BAD = "bad-response"


def _reason(status: int) -> str:
    return _BAD if status == 502 else "bad-request"


class HttpError(Exception):
    """A message broke HTTP/1.1 or a bound; ``status`` is the answer a client gets for it,
    ``reason`` the error counter's token."""

    def __init__(self, status: int, detail: str, reason: str = "bad-request") -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Request:
    """One whole request from a client; ``headers`` with lower-case names."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    #: the client keeps the connection after this request (HTTP/1.1 without ``close``)
    keep_alive: bool = True
    has_host: bool = False


@dataclass(slots=True)
class ResponseHead:
    """The head of a replica's response; ``headers`` with lower-case names."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    #: how its body is framed: ``b"length"``, ``b"chunked"``, ``b"eof"`` or ``b"none"``
    framing: bytes


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class _Bounded:
    """What both parsers share: llhttp fed under the head bound, its error made an HttpError."""

    __slots__ = ("_callbacks", "_head_bytes", "_in_head", "_parser", "_quiet")

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    def __init__(self) -> None:
        self._head_bytes = 0  # of the head (or trailers) being parsed, counted per field
        self._in_head = False
        self._callbacks = 0  # fired during the current feed
        self._quiet = 0  # bytes of consecutive feeds that fired no callback (a field in parts)

    def _feed(self, data: bytes, too_large: int, reason: str) -> None:
        """Raises: HttpError (llhttp refused ``data``, or a head is over ``HEAD_LIMIT``)."""
        self._callbacks = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HttpError):
                raise exc.__context__ from None
            raise  # pragma: no cover - our callbacks raise nothing else
        except httptools.HttpParserError as exc:
            raise HttpError(400, str(exc), reason) from None
        # llhttp holds a field that spans reads (httptools buffers it): count what it holds.
        self._quiet = self._quiet + len(data) if self._callbacks == 0 and self._in_head else 0
        if self._quiet > HEAD_LIMIT:
            raise HttpError(too_large, f"head larger than {HEAD_LIMIT} bytes", reason)

    def _count_head(self, size: int, too_large: int) -> None:
        self._callbacks += 1
        self._head_bytes += size
        if self._head_bytes > HEAD_LIMIT:
            raise HttpError(too_large, f"head larger than {HEAD_LIMIT} bytes", _reason(too_large))

    def on_message_begin(self) -> None:
        self._callbacks += 1
        self._head_bytes = 0
        self._in_head = True


class RequestParser(_Bounded):
    """A client connection's requests, parsed as they arrive (``feed``) and taken in turn
    (``next``)."""

    __slots__ = (
        "_current",
        "_error",
        "_expect_continue",
        "_llhttp",
        "body_limit",
        "continue_sent",
        "done",
        "ready",
    )

    def __init__(self, body_limit: int) -> None:
        super().__init__()
        self.body_limit = body_limit
        self._parser = self._llhttp = httptools.HttpRequestParser(self)
        self._current: Request | None = None  # the request being parsed
        self.ready: deque[Request] = deque()
        self._error: HttpError | None = None  # after the requests already in ``ready``
        self._expect_continue = False
        #: the client will send no more requests (EOF, or a request without keep-alive)
        self.done = False
        self.continue_sent = False

    @property
    def started(self) -> bool:
        """A request has begun arriving (and is not taken yet)."""
        return self._current is not None or bool(self.ready)

    @property
    def head_done(self) -> bool:
        """The head of the request being parsed is whole (its body is arriving)."""
        return self._current is not None and not self._in_head

    @property
    def waiting_for_100_continue(self) -> bool:
        """The head of the request being parsed asked for ``100 Continue`` and its body has
        not begun (RFC 9110 §10.1.1)."""
        current = self._current
        return self._expect_continue and current is not None and not self._in_head and not current.body

    def feed(self, data: bytes) -> None:
        """Parse bytes from the client; ``b""`` is its EOF. Errors wait until the requests
        before them were taken (``next``)."""
        if self.done or self._error is not None:
            return
        if not data:
            self.done = True
            if self._current is not None:
                self._error = HttpError(400, "connection closed inside a request")
            return
        try:
            self._feed(data, 431, "bad-request")
        except httptools.HttpParserUpgrade:
            # Only CONNECT or an Upgrade: the request is whole and goes on with its Upgrade
            # dropped (hop-by-hop); the connection ends after it.
            if self.ready:
                self.ready[-1].keep_alive = False
            self.done = True
        except HttpError as exc:
            # llhttp refuses bytes after a request that closes the connection: they are ignored.
            if not (self.ready and not self.ready[-1].keep_alive and self._current is None):
                self._error = exc
            self.done = True

    def next(self) -> Request | None:
        """The next whole request, or None for now.

        Raises:
            HttpError: the client broke HTTP/1.1 or a bound before its next whole request.
        """
        if self.ready:
            return self.ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def empty(self) -> bool:
        """Nothing is here or to come from before: no request begun or whole, no error, no
        EOF."""
        return not self.started and not self.done

    def alone(self) -> Request | None:
        """The next whole request if it is all the parser holds -- no request after it, none
        begun, no error, no EOF -- not taken (``next`` takes it); else None."""
        ready = self.ready
        if len(ready) == 1 and self._current is None and not self.done:  # (an error sets done)
            return ready[0]
        return None

    # -- llhttp's callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._current = Request(b"", b"", "", [])
        self._expect_continue = self.continue_sent = False

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), 431)
        assert self._current is not None
        self._current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4, 431)
        if self._in_head:  # not a trailer: those are dropped
            assert self._current is not None
            name = name.lower()
            self._current.headers.append((name, value))
            if name == b"host":
                self._current.has_host = True
            elif name == b"expect" and value.lower() == b"100-continue":
                self._expect_continue = True

    def on_headers_complete(self) -> None:
        self._callbacks += 1
        self._in_head = False
        self._head_bytes = 0
        current = self._current
        assert current is not None
        current.version = version = self._llhttp.get_http_version()
        if version not in _VERSIONS:
            raise HttpError(505, f"HTTP/{version} is not supported")
        if version == "1.1" and not current.has_host:  # RFC 9112 §3.2
            raise HttpError(400, "no Host header")
        current.method = self._llhttp.get_method()
        # HTTP/1.0 clients are answered and closed, as h11 does: keep-alive is HTTP/1.1's.
        current.keep_alive = version == "1.1" and self._llhttp.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._callbacks += 1
        assert self._current is not None
        self._current.body += body
        if len(self._current.body) > self.body_limit:
            raise HttpError(413, f"request body larger than {self.body_limit} bytes", "body-too-large")

    def on_message_complete(self) -> None:
        self._callbacks += 1
        self._in_head = False
        assert self._current is not None
        self.ready.append(self._current)
        self._current = None


class ResponseParser(_Bounded):
    """One stream's responses from a replica. ``feed`` returns what the bytes completed:
    the head (``head``), body pieces (``body``) and whether the response ended (``ended``);
    ``expect(head_only)`` before each request."""

    __slots__ = ("_head_only", "_headers", "_llhttp", "_status", "body", "ended", "head", "reusable")

    def __init__(self) -> None:
        super().__init__()
        self._parser = self._llhttp = httptools.HttpResponseParser(self)
        self._head_only = False
        self._status = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self.head: ResponseHead | None = None  # of the response being read, once it is whole
        self.body: list[bytes] = []  # pieces parsed since the caller last took them
        self.ended = False
        #: the stream can carry another request once this response ended
        self.reusable = True

    def expect(self, head_only: bool) -> None:
        """Before a request is sent: ``head_only`` for ``HEAD`` (its response has no body)."""
        self._head_only = head_only
        self.head, self.ended = None, False

    def feed(self, data: bytes) -> None:
        """Parse bytes from the replica; ``b""`` is its EOF.

        Raises:
            HttpError: the response is malformed, over a bound, or cut short by EOF (the text
                says which; ``closed`` in it when EOF came first).
        """
        if self.ended:
            if data:  # more than the response: the stream is not reused
                self.reusable = False
            return
        if not data:
            self.reusable = False
            head = self.head
            if head is not None and head.framing == b"eof":
                self.ended = True
                return
            if head is None and not self._in_head:
                raise HttpError(502, "replica closed before a response", "closed-before-response")
            raise HttpError(502, "replica closed inside a response", "closed-mid-response")
        try:
            self._feed(data, 502, _BAD)
        except httptools.HttpParserUpgrade:
            raise HttpError(502, "a replica switched protocols", _BAD) from None
        except HttpError:
            if not self._ended():  # (a callback may have ended it: mypy cannot see that)
                raise
            self.reusable = False  # junk after a whole response: it stands, the stream goes

    def _ended(self) -> bool:
        return self.ended

    # -- llhttp's callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.ended:  # a second response to one request
            raise HttpError(502, "more than one response", _BAD)
        self._status = b""
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._count_head(len(status), 502)
        self._status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4, 502)
        if self._in_head:  # not a trailer: those are dropped
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._callbacks += 1
        self._in_head = False
        self._head_bytes = 0
        parser = self._llhttp
        status = parser.get_status_code()
        if status < 200:  # 1xx: between this proxy and the replica, not the client's
            if status == 101:
                raise HttpError(502, "a replica switched protocols", _BAD)
            return
        headers = self._headers
        if self._head_only or status in (204, 304):
            framing = b"none"
        elif any(name == b"content-length" for name, _ in headers):
            framing = b"length"
        elif any(name == b"transfer-encoding" for name, _ in headers):
            framing = b"chunked"
        else:
            framing = b"eof"
        self.head = ResponseHead(status, self._status, headers, framing)
        if not parser.should_keep_alive() or framing == b"eof":
            self.reusable = False
        if self._head_only:
            # llhttp would wait for the body the head announces: the response ends here, and
            # the parser with it (the stream is not reused).
            self.ended = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        self._callbacks += 1
        if self.ended:  # the body a response to HEAD announced: not there, or not ours
            self.reusable = False
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._callbacks += 1
        self._in_head = False
        if self.head is not None:  # not the end of a 1xx
            self.ended = True
