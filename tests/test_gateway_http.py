"""The HTTP ingress's parsing and framing: what a parser change could alter.

First ``gateway/http1.py`` on its own (sans-IO: bytes in, records out), with requests and
responses split at every byte and hostile heads, bodies and framings; then one embedded
network where a scripted replica answers in the ways a real server may (chunked in pieces,
larger than ``buffer_limit``, ended by closing, malformed once or always, to ``HEAD``) and
raw-socket clients send a request a byte at a time, pipeline two, ask for ``100 Continue``
or break the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import random
import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scaffold
from scaffold.gateway import Ingress, Publisher
from scaffold.gateway.http import HttpOptions
from scaffold.gateway.http1 import HEAD_LIMIT, HttpError, Request, RequestParser, ResponseParser
from scaffold.gateway.upstream import IdleUpstreams, Upstream
from scaffold.runtime.aio import run, wait_until

LOCAL = "127.0.0.1"
PIPELINED = (
    b"POST /a?x=1 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    b"PUT /b HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nX-Y: z\r\n\r\nwxyz"
    b"GET /c HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
)


def parse_requests(pieces: list[bytes]) -> list[Request]:
    parser = RequestParser(body_limit=1 << 20)
    requests = []
    for piece in pieces:
        parser.feed(piece)
        while (request := parser.next()) is not None:
            requests.append(request)
    return requests


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_pipelined_requests_parse_the_same_however_they_are_split(cuts: list[int]) -> None:
    requests = parse_requests(split(PIPELINED, cuts))
    assert [(r.method, r.target, bytes(r.body), r.keep_alive) for r in requests] == [
        (b"POST", b"/a?x=1", b"abcde", True),
        (b"PUT", b"/b", b"wxyz", True),
        (b"GET", b"/c", b"", False),
    ]
    assert requests[1].headers == [(b"host", b"web"), (b"content-length", b"4"), (b"x-y", b"z")]


def test_a_request_a_byte_at_a_time() -> None:
    data = PIPELINED.split(b"PUT")[0]
    requests = parse_requests([data[i : i + 1] for i in range(len(data))])
    assert len(requests) == 1 and bytes(requests[0].body) == b"abcde"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),  # obs-fold
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host (RFC 9112 §3.2)
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * HEAD_LIMIT + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000, 413),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1", 400),  # then EOF inside the head
    ],
)
def test_requests_that_break_the_rules_are_refused(data: bytes, status: int) -> None:
    parser = RequestParser(body_limit=1000)
    parser.feed(data)
    parser.feed(b"")
    with pytest.raises(HttpError) as refused:
        parser.next()
    assert refused.value.status == status


def test_a_head_trickled_in_small_reads_is_bounded() -> None:
    """llhttp (through httptools) keeps a field that spans reads; the parser refuses the
    head once it holds more than HEAD_LIMIT bytes, not when the field ends."""
    parser = RequestParser(body_limit=1000)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    with pytest.raises(HttpError) as refused:
        for _ in range(HEAD_LIMIT // 100 + 2):
            parser.feed(b"x" * 100)
            parser.next()
    assert refused.value.status == 431


def test_bytes_after_a_closing_request_are_ignored_and_errors_wait_their_turn() -> None:
    parser = RequestParser(body_limit=1000)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /more HTTP/1.1\r\n\r\n")
    first = parser.next()
    assert first is not None and not first.keep_alive and parser.done and parser.next() is None
    parser = RequestParser(body_limit=1000)
    parser.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nX: a\r\n b\r\n\r\n")
    first = parser.next()
    assert first is not None and first.target == b"/1"
    with pytest.raises(HttpError):
        parser.next()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=len(PIPELINED)), st.booleans())
def test_hostile_bytes_give_requests_or_one_error(noise: bytes, at: int, eof: bool) -> None:
    """Whatever arrives -- noise alone, or spliced into valid requests -- the parsers give
    whole requests (responses) or raise HttpError; nothing else escapes."""
    for data in (noise, PIPELINED[:at] + noise + PIPELINED[at:]):
        requests = RequestParser(body_limit=1000)
        responses = ResponseParser()
        responses.expect(head_only=False)
        for parser in (requests, responses):
            with contextlib.suppress(HttpError):
                parser.feed(data)
                parser.feed(b"" if eof else b"\r\n")
        with contextlib.suppress(HttpError):
            while requests.next() is not None:
                pass


CHUNKED_RESPONSE = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n"
)


def read_response(parser: ResponseParser, pieces: list[bytes]) -> bytes:
    body = b""
    for piece in pieces:
        parser.feed(piece)
        body += b"".join(parser.body)
        parser.body.clear()
    return body


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_a_chunked_response_parses_the_same_however_it_is_split(cuts: list[int]) -> None:
    parser = ResponseParser()
    parser.expect(head_only=False)
    assert read_response(parser, split(CHUNKED_RESPONSE, cuts)) == b"hello world"
    assert parser.ended and parser.reusable and parser.head is not None
    assert (parser.head.status, parser.head.framing, parser.head.headers) == (
        200,
        b"chunked",
        [(b"transfer-encoding", b"chunked"), (b"x-a", b"b")],
    )


def test_response_framings_and_failures() -> None:
    head_only = ResponseParser()
    head_only.expect(head_only=True)
    head_only.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert head_only.ended and head_only.head is not None and head_only.head.framing == b"none"
    assert not head_only.reusable  # llhttp waits for the five bytes: the stream is not reused

    until_eof = ResponseParser()
    until_eof.expect(head_only=False)
    assert read_response(until_eof, [b"HTTP/1.0 200 OK\r\n\r\nsome", b" body", b""]) == b"some body"
    assert until_eof.ended and not until_eof.reusable

    def failure(*pieces: bytes) -> str:
        parser = ResponseParser()
        parser.expect(head_only=False)
        with pytest.raises(HttpError) as failed:
            read_response(parser, list(pieces))
        return failed.value.reason

    assert failure(b"") == "closed-before-response"
    assert failure(b"HTTP/1.1 200 OK\r\nContent-Le", b"") == "closed-mid-response"
    assert failure(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", b"") == "closed-mid-response"
    assert failure(b"NOT HTTP\r\n\r\n") == "bad-response"
    assert failure(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == "bad-response"
    assert failure(b"HTTP/1.1 200 OK\r\n", b"X: " + b"x" * HEAD_LIMIT) == "bad-response"
    assert (
        failure(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        == "bad-response"
    )


# -- through an ingress ------------------------------------------------------------------------

BIG = bytes(range(256)) * 1600  # 400 KiB: more than buffer_limit (256 KiB)


async def scripted_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request by its path, the ways a real server may."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        method, path = head.split(b" ")[:2]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        if path == b"/chunked":
            for piece in (
                b"HTTP/1.1 200 OK\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n4\r\nab",
                b"cd\r\n0\r\n\r\n",
            ):
                writer.write(piece)
                await writer.drain()
        elif path == b"/big-chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(BIG), 65536):
                writer.write(b"%x\r\n%b\r\n" % (len(BIG[i : i + 65536]), BIG[i : i + 65536]))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif path == b"/eof":  # an HTTP/1.0 server: no length, the body ends with the connection
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            break
        elif path.startswith(b"/slow"):  # answers after 0.3 s
            await asyncio.sleep(0.3)
            body = b"%s %s" % (method, path)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        elif path == b"/silent":  # never answers; reads until the ingress gives up the stream
            while await reader.read(65536):
                pass
            break
        elif path == b"/bad":
            writer.write(b"NOT A RESPONSE\r\n\r\n")
            break
        elif method == b"HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        else:
            body = b"%s %s" % (method, path)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nKeep-Alive: timeout=5\r\n\r\n%b"
                % (len(body), body)
            )
        await writer.drain()
    writer.close()


def exchange(port: int, data: bytes, *, byte_at_a_time: bool = False) -> bytes:
    """Send ``data`` on a fresh connection, half-close, and read everything back."""
    with socket.create_connection((LOCAL, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)) if byte_at_a_time else [None]:
            s.sendall(data if i is None else data[i : i + 1])
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def test_framing_retries_and_refusals_through_the_ingress() -> None:
    async def main() -> None:
        server = await asyncio.start_server(scripted_replica, LOCAL, 0)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            options = HttpOptions(retry_budget=0.3)  # the malformed replica: 502 after ~4 attempts
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options) as ingress:
                port = ingress.address[1]
                await asyncio.to_thread(through, port)
                errors = dict(ingress.stats.errors)
            await publisher.close()
        server.close()
        assert errors == {"bad-response": 1, "bad-request": 2}

    def through(port: int) -> None:
        conn = http.client.HTTPConnection(LOCAL, port, timeout=10)
        # A chunked response in three segments: whole, so the client gets its length.
        conn.request("GET", "/chunked")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("content-length")) == (200, b"abcd", "4")
        # Larger than buffer_limit: relayed as it comes, chunked to an HTTP/1.1 client ...
        conn.request("GET", "/big-chunked")
        response = conn.getresponse()
        assert response.getheader("transfer-encoding") == "chunked" and response.read() == BIG
        # ... HEAD has no body; the connection goes on (on a new stream).
        conn.request("HEAD", "/x")
        response = conn.getresponse()
        assert response.getheader("content-length") == "5" and response.read() == b""
        conn.request("POST", "/form", body=b"a=1", headers={"Expect": "100-continue"})
        assert conn.getresponse().read() == b"POST /form"
        # Ended by the replica's close: the client gets its length and keeps its connection.
        conn.request("GET", "/eof")
        response = conn.getresponse()
        assert response.read() == b"until the end" and response.getheader("content-length") == "13"
        # A malformed response, every attempt: 502 after the retries, counted once.
        conn.request("GET", "/bad")
        assert conn.getresponse().status == 502
        conn.close()
        # To an HTTP/1.0 client, a response of unknown length ends with the connection.
        answer = exchange(port, b"GET /big-chunked HTTP/1.0\r\n\r\n")
        assert answer.endswith(b"\r\n\r\n" + BIG) and b"connection: close" in answer.lower()
        # Expect: 100-continue is answered by the ingress before the body is sent.
        with socket.create_connection((LOCAL, port), timeout=10) as s:
            s.sendall(b"PUT /form HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(b"a=1")
            assert s.recv(1000).endswith(b"PUT /form")
        # A request a byte at a time, then two pipelined: answered in order.
        answer = exchange(port, b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n", byte_at_a_time=True)
        assert answer.endswith(b"GET /slow")
        answer = exchange(
            port, b"GET /1 HTTP/1.1\r\nHost: web\r\n\r\nDELETE /2 HTTP/1.1\r\nHost: web\r\n\r\n"
        )
        assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.index(b"GET /1") < answer.index(b"DELETE /2")
        assert b"keep-alive: timeout" not in answer.lower()  # hop-by-hop: dropped
        # obs-fold and a duplicate Content-Length: 400, counted, the connection closed.
        for bad in (
            b"GET / HTTP/1.1\r\nHost: web\r\nX: a\r\n b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        ):
            assert exchange(port, bad).startswith(b"HTTP/1.1 400 ")

    run(main())


def test_a_replica_that_never_answers_gets_the_response_timeout_then_502() -> None:
    """``response_timeout`` bounds each read of a response (``pump.Deadline``): a replica
    that takes the request and says nothing fails the attempt, the retries fail alike, and
    the client gets 502 -- while a request before and after it on the same connection is
    answered."""

    async def main() -> tuple[dict[str, int], int]:
        server = await asyncio.start_server(scripted_replica, LOCAL, 0)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            options = HttpOptions(response_timeout=0.3, retry_budget=0.2, backoff=0.05)
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options) as ingress:
                await asyncio.to_thread(through, ingress.address[1])
                errors, retries = dict(ingress.stats.errors), ingress.stats.retries
            await publisher.close()
        server.close()
        return errors, retries

    def through(port: int) -> None:
        conn = http.client.HTTPConnection(LOCAL, port, timeout=10)
        for path in ("/before", "/before-2"):  # then /silent is the callbacks' (see below)
            conn.request("GET", path)
            assert conn.getresponse().read() == b"GET %s" % path.encode()
        conn.request("GET", "/silent")
        response = conn.getresponse()
        assert response.status == 502 and b"no response in time" in response.read()
        conn.request("GET", "/after")
        assert conn.getresponse().read() == b"GET /after"
        conn.close()

    errors, retries = run(main())
    # The first timeout starts the 0.2 s budget; the retry after 0.05 s times out 0.35 s later.
    assert errors == {"response-timeout": 1} and retries == 1


def get_line(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: web\r\n\r\n" % path.encode()


def read_responses(s: socket.socket, count: int) -> list[bytes]:
    """``count`` whole responses (each with Content-Length) from ``s``, heads and bodies; no
    byte more."""
    data = b""
    bodies: list[bytes] = []
    while len(bodies) < count:
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            assert piece, (data, bodies)
            data += piece
        head, data = data.split(b"\r\n\r\n", 1)
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        while len(data) < length:
            piece = s.recv(65536)
            assert piece, (head, data)
            data += piece
        bodies.append(head + b"\r\n\r\n" + data[:length])
        data = data[length:]
    assert not data
    return bodies


def test_keep_alive_requests_go_through_callbacks_and_the_task_takes_over_the_rest() -> None:
    """A keep-alive request that comes whole and alone on a connection whose stream is open
    is answered in the protocols' callbacks (``HttpSession._client_bytes``); whatever those
    cannot finish is handed to the session's task, in order: a request in two writes, two
    at once, a request that comes while one is in flight, a half-close, a malformed
    response (retried, then 502), the ingress closing mid-response."""

    async def main() -> None:
        server = await asyncio.start_server(scripted_replica, LOCAL, 0)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            options = HttpOptions(retry_budget=0.2)
            ingress = Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options)
            await ingress.start()
            stats = ingress.stats
            port = ingress.address[1]

            async def send_and_wait_for_it(s: socket.socket, path: str) -> None:
                """Send a request and wait until the ingress has taken it (the callbacks count
                a request as they send it on): its exchange is in flight."""
                taken = stats.requests + 1
                await asyncio.to_thread(s.sendall, get_line(path))
                await wait_until(lambda: stats.requests == taken, 5, f"{path} taken")

            with socket.create_connection((LOCAL, port), timeout=10) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # The first request opens the stream (the task), and its answer goes before
                # the client's transport is made; the second may come before the task waits
                # on that transport. From then on, a request whole and alone is the callbacks'.
                for i in range(7):
                    if i == 2:
                        warm = stats.in_callbacks
                    await asyncio.to_thread(s.sendall, get_line(f"/{i}"))
                    [answer] = await asyncio.to_thread(read_responses, s, 1)
                    assert answer.endswith(b"GET /%d" % i), answer
                assert warm in (0, 1) and stats.in_callbacks == warm + 5
                calls = stats.in_callbacks
                # In two writes: the callbacks parse the head's first part, the task the rest.
                line = get_line("/split")
                read = stats.bytes_in + 10
                await asyncio.to_thread(s.sendall, line[:10])
                await wait_until(lambda: stats.bytes_in == read, 5, "the first part read")
                await asyncio.to_thread(s.sendall, line[10:])
                assert (await asyncio.to_thread(read_responses, s, 1))[0].endswith(b"GET /split")
                # Two at once: the task, in order.
                await asyncio.to_thread(s.sendall, get_line("/a") + get_line("/b"))
                answers = await asyncio.to_thread(read_responses, s, 2)
                assert [a.rsplit(b" ", 1)[1] for a in answers] == [b"/a", b"/b"]
                assert stats.in_callbacks == calls
                # One in flight in the callbacks (the replica answers in 0.3 s) when the next
                # comes: the task takes the first over and answers both, in order.
                await send_and_wait_for_it(s, "/slow")
                await asyncio.to_thread(s.sendall, get_line("/after-slow"))
                answers = await asyncio.to_thread(read_responses, s, 2)
                assert [a.rsplit(b" ", 1)[1] for a in answers] == [b"/slow", b"/after-slow"]
                # A malformed response to the callbacks' exchange: the task retries it on new
                # streams (malformed again), then 502; the connection goes on.
                await asyncio.to_thread(s.sendall, get_line("/bad"))
                [answer] = await asyncio.to_thread(read_responses, s, 1)
                assert answer.startswith(b"HTTP/1.1 502 ") and b"malformed response" in answer
                await asyncio.to_thread(s.sendall, get_line("/ok"))  # (a new stream: the task)
                assert (await asyncio.to_thread(read_responses, s, 1))[0].endswith(b"GET /ok")
                # The client half-closes while the callbacks' exchange is in flight: answered,
                # then closed.
                await send_and_wait_for_it(s, "/slow-then-eof")
                s.shutdown(socket.SHUT_WR)
                [answer] = await asyncio.to_thread(read_responses, s, 1)
                assert answer.endswith(b"GET /slow-then-eof")
                assert await asyncio.to_thread(s.recv, 100) == b""
            assert stats.errors == {"bad-response": 1}
            # None more: /slow, /bad and /slow-then-eof began in callbacks and were taken over.
            assert stats.in_callbacks == calls
            # The ingress closes while the callbacks carry an exchange: it is answered with
            # ``connection: close``, then the connection ends.
            with socket.create_connection((LOCAL, port), timeout=10) as s:
                for path in ("/open", "/open-2"):  # (as above: the second may be the task's)
                    await asyncio.to_thread(s.sendall, get_line(path))
                    await asyncio.to_thread(read_responses, s, 1)
                before = stats.in_callbacks
                await send_and_wait_for_it(s, "/slow-at-close")
                closing = asyncio.create_task(ingress.close(grace=60))
                [answer] = await asyncio.to_thread(read_responses, s, 1)
                assert answer.endswith(b"GET /slow-at-close") and b"connection: close" in answer.lower()
                assert await asyncio.to_thread(s.recv, 100) == b""
                await asyncio.wait_for(closing, 10)  # (ended by the session, not the grace)
                assert stats.in_callbacks == before + 1
            await publisher.close()
        server.close()

    run(main())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_mix_of_whole_split_pipelined_and_slow_requests_is_answered_in_order(seed: int) -> None:
    """Requests whole, in two writes, two at once, or sent while a slow one is in flight,
    in a random order on one keep-alive connection: each answered once, in order, whichever
    of the callbacks and the task carried it (``_client_bytes`` and the hand-overs)."""
    rng = random.Random(seed)

    async def main() -> None:
        server = await asyncio.start_server(scripted_replica, LOCAL, 0)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True) as ingress:
                with socket.create_connection((LOCAL, ingress.address[1]), timeout=10) as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sent = 0
                    for i in range(25):
                        kind = rng.choice(["whole", "whole", "split", "pair", "slow", "post"])
                        expected: list[bytes] = []
                        if kind == "whole":
                            await asyncio.to_thread(s.sendall, get_line(f"/w{i}"))
                            expected = [b"GET /w%d" % i]
                        elif kind == "split":
                            line = get_line(f"/s{i}")
                            cut = rng.randrange(1, len(line))
                            await asyncio.to_thread(s.sendall, line[:cut])
                            await asyncio.sleep(0.02)
                            await asyncio.to_thread(s.sendall, line[cut:])
                            expected = [b"GET /s%d" % i]
                        elif kind == "pair":
                            await asyncio.to_thread(s.sendall, get_line(f"/a{i}") + get_line(f"/b{i}"))
                            expected = [b"GET /a%d" % i, b"GET /b%d" % i]
                        elif kind == "slow":
                            await asyncio.to_thread(s.sendall, get_line(f"/slow{i}"))
                            await asyncio.sleep(rng.choice([0.0, 0.05, 0.15]))
                            await asyncio.to_thread(s.sendall, get_line(f"/n{i}"))
                            expected = [b"GET /slow%d" % i, b"GET /n%d" % i]
                        else:
                            body = b"x" * rng.randrange(0, 3000)
                            head = b"POST /p%d HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n"
                            await asyncio.to_thread(s.sendall, head % (i, len(body)) + body)
                            expected = [b"POST /p%d" % i]
                        answers = await asyncio.to_thread(read_responses, s, len(expected))
                        assert [a.split(b"\r\n\r\n", 1)[1] for a in answers] == expected, (kind, answers)
                        sent += len(expected)
                assert ingress.stats.requests == sent and not ingress.stats.errors
                assert ingress.stats.in_callbacks > 0
            await publisher.close()
        server.close()

    run(main())


# -- streams reused across clients (gateway/upstream.py) ---------------------------------------


class CountingReplica:
    """A keep-alive replica that counts its connections and answers by path: ``/junk`` then
    says more while idle, ``/bye`` then closes the idle connection, ``/drop`` on a
    connection that answered before closes it unanswered (as a server whose keep-alive
    timeout fires as a request comes)."""

    def __init__(self) -> None:
        self.connections = 0  # that carried a request (the publisher's health checks do not)
        self.closed = 0  # of those, the ones that ended (either side)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not number:
                    self.connections += 1
                    number = self.connections
                method, path = head.split(b" ")[:2]
                if b"content-length: 1\r\n" in head.lower():
                    method += b" " + await reader.readexactly(1)
                if path == b"/drop" and answered:
                    break
                body = b"%s %s #%d" % (method, path, number)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
                await writer.drain()
                answered += 1
                if path == b"/junk":
                    await asyncio.sleep(0.02)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake")
                    await writer.drain()
                elif path == b"/bye":
                    await asyncio.sleep(0.02)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += number > 0
            writer.close()


def get(port: int, path: str, method: str = "GET") -> bytes:
    """One request on a fresh client connection that asks to close after it; the body."""
    head = b"%s %s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n" % (method.encode(), path.encode())
    answer = exchange(port, head + (b"Content-Length: 1\r\n\r\nx" if method == "POST" else b"\r\n"))
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 "), answer
    return body


def two_at_once(port: int) -> None:
    """Two keep-alive clients, each answered before either closes."""
    conns = [http.client.HTTPConnection(LOCAL, port, timeout=10) for _ in range(2)]
    for conn in conns:
        conn.request("GET", "/")
        assert conn.getresponse().read().startswith(b"GET / #")
    for conn in conns:
        conn.close()


def test_a_stream_outlives_its_client_and_carries_the_next_clients_idempotent_requests() -> None:
    async def main() -> None:
        replica = CountingReplica()
        server = await asyncio.start_server(replica.serve, LOCAL, 0)
        options = HttpOptions(reuse_idle_timeout=0.3)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options) as ingress:
                port = ingress.address[1]
                idle = ingress.idle_upstreams
                assert idle is not None

                # Five clients one after another, each closing after its request: one stream.
                for _ in range(5):
                    assert await asyncio.to_thread(get, port, "/") == b"GET / #1"
                assert (replica.connections, ingress.stats.reused, publisher.stats.connections) == (1, 4, 1)
                # A request that is not idempotent opens a stream of its own.
                assert await asyncio.to_thread(get, port, "/form", "POST") == b"POST x /form #2"
                assert ingress.stats.reused == 4 and len(idle) == 2

                # A stream that spoke while idle, or that the replica closed, is not reused:
                # the next client's answer is its own, on a new stream.
                loop = asyncio.get_running_loop()
                assert await asyncio.to_thread(get, port, "/junk") == b"GET /junk #2"
                await wait_until(lambda: idle.ready(loop.time()) == 1, 5.0, "the stream that spoke seen")
                assert await asyncio.to_thread(get, port, "/") == b"GET / #1"
                assert await asyncio.to_thread(get, port, "/bye") == b"GET /bye #1"
                await wait_until(lambda: idle.ready(loop.time()) == 0, 5.0, "the closed stream seen")
                assert await asyncio.to_thread(get, port, "/") == b"GET / #3"
                assert replica.connections == 3 and ingress.stats.errors == {}
                assert ingress.stats.retries == 0

                # Two clients at once, then neither: two idle streams. The replica closes the
                # reused one as a request comes: the request goes again at once, on a new
                # stream (not the other idle one), and is answered.
                await asyncio.to_thread(two_at_once, port)
                await wait_until(lambda: len(idle) == 2, 5.0, "both clients' streams idle")
                assert replica.connections == 4
                assert await asyncio.to_thread(get, port, "/drop") == b"GET /drop #5"
                assert ingress.stats.retries == 1 and ingress.stats.errors == {}

                # Idle longer than reuse_idle_timeout: closed.
                before = replica.closed
                await wait_until(lambda: not idle and replica.closed > before, 5.0, "the idle one closed")
                assert await asyncio.to_thread(get, port, "/") == b"GET / #6"
            # Closing the ingress closes its idle streams.
            await wait_until(lambda: replica.closed == replica.connections, 5.0, "every stream closed")
            await publisher.close()
        server.close()

    run(main())


def test_reuse_is_bounded_by_its_limit_and_off_at_zero() -> None:
    async def main() -> None:
        replica = CountingReplica()
        server = await asyncio.start_server(replica.serve, LOCAL, 0)
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            publisher = Publisher(net.hosts[0], "web", server.sockets[0].getsockname())
            await publisher.start()
            options = HttpOptions(reuse=1)
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options) as ingress:
                idle = ingress.idle_upstreams
                assert idle is not None
                await asyncio.to_thread(two_at_once, ingress.address[1])
                await wait_until(lambda: replica.closed == 1, 5.0, "the stream over the limit closed")
                assert len(idle) == 1
            options = HttpOptions(reuse=0)
            async with Ingress(net.hosts[1], "web", (LOCAL, 0), http=True, http_options=options) as ingress:
                for n in (3, 4, 5):
                    assert await asyncio.to_thread(get, ingress.address[1], "/") == b"GET / #%d" % n
                assert ingress.stats.reused == 0
            await publisher.close()
        server.close()

    run(main())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=3),
    st.lists(
        st.tuples(
            st.sampled_from(["give", "give-old", "take", "wait", "speak", "end"]),
            st.integers(min_value=0, max_value=7),
        ),
        max_size=40,
    ),
)
@example(limit=2, steps=[("give", 0), ("give", 1), ("take", 0)])  # the newest first
@example(limit=1, steps=[("give", 0), ("wait", 0), ("wait", 0), ("wait", 0), ("take", 0)])  # expired
@example(limit=3, steps=[("give", 0), ("give", 1), ("speak", 1), ("give", 2), ("end", 2), ("take", 0)])
def test_idle_streams_keep_their_bounds_and_give_back_only_quiet_fresh_ones(
    limit: int, steps: list[tuple[str, int]]
) -> None:
    """``IdleUpstreams`` against a model, on real stream pairs: never more than ``limit``
    idle, the oldest closed at the limit; ``take`` gives the newest one neither expired
    (``idle_timeout``) nor spoken on or ended while idle, and closes those it passes; ``give``
    refuses one past ``max_age`` or not quiet; ``close`` closes all."""

    async def main() -> None:
        pairs = [socket.socketpair() for _ in range(8)]
        upstreams = []
        for ours, _ in pairs:
            reader, writer = await asyncio.open_connection(sock=ours)
            upstreams.append(Upstream(reader, writer))  # type: ignore[arg-type]  # asyncio's writer
        now = asyncio.get_running_loop().time()  # (no await below: the sweep never runs)
        idle = IdleUpstreams(limit, idle_timeout=1.0, max_age=5.0)
        model: list[tuple[float, int]] = []  # (when given, index), oldest first
        noisy: set[int] = set()  # spoke or ended: never quiet again
        ended: set[int] = set()
        for action, index in steps:
            upstream = upstreams[index]
            held = any(i == index for _, i in model)
            if action in ("give", "give-old"):
                if held or upstream.writer.is_closing():
                    continue
                upstream.opened = now - (6.0 if action == "give-old" else 0.0)
                kept = idle.give(upstream, now)
                assert kept == (limit > 0 and action == "give" and index not in noisy)
                if not kept:
                    upstream.close()  # as a session does
                    continue
                model.append((now, index))
                if len(model) > limit:
                    _, oldest = model.pop(0)
                    assert upstreams[oldest].writer.is_closing()
            elif action == "take":
                expected, passed = None, []
                while model:
                    since, newest = model.pop()
                    if now - since < 1.0 and newest not in noisy:
                        expected = newest
                        break
                    passed.append(newest)
                taken = idle.take(now)
                assert (None if taken is None else upstreams.index(taken)) == expected
                assert all(upstreams[i].writer.is_closing() for i in passed)
                assert taken is None or (taken.reused and not taken.writer.is_closing())
            elif action == "wait":
                now += 0.4
            elif upstream.writer.is_closing() or index in ended:
                continue  # (let go of, or ended: nothing more comes on it)
            elif action == "speak":
                upstream.reader.feed_data(b"x")
                noisy.add(index)
            else:  # "end": the replica closed it
                upstream.reader.feed_eof()
                noisy.add(index)
                ended.add(index)
            assert len(idle) == len(model) <= limit
            assert not any(upstreams[i].writer.is_closing() for _, i in model)
        idle.close()
        assert all(upstreams[i].writer.is_closing() for _, i in model) and len(idle) == 0
        for upstream in upstreams:
            upstream.writer.close()
        for _, theirs in pairs:
            theirs.close()

    run(main())
