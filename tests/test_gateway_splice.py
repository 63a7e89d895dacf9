"""The splice before its two ends are linked: bytes for an end whose kernel socket is
connected go straight to that socket while its transport is made (``End.sock``), bytes for
an end already made go to its transport, and neither reorders nor loses a byte.

Real socket pairs on the event loop the gateway runs on; the peer side of each pair is a
plain blocking socket the test reads and writes.
"""

from __future__ import annotations

import asyncio
import socket

from scaffold.gateway.splice import Splice
from scaffold.gateway.stats import GatewayStats
from scaffold.runtime.aio import run, wait_until


def pair() -> tuple[socket.socket, socket.socket]:
    """(the gateway's end, the test's end) of a connected stream pair."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5.0)
    return ours, theirs


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_the_response_reaches_a_connected_client_before_its_transport_is_made() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        splice = Splice(GatewayStats())
        client, client_peer = pair()
        service, service_peer = pair()
        splice.client.sock = client  # as the raw ingress does with its accepted socket
        await loop.connect_accepted_socket(lambda: splice.service, sock=service)
        service_peer.sendall(b"response")
        # The client has it with no transport made on its socket.
        data = await asyncio.to_thread(read_exactly, client_peer, 8)
        assert data == b"response"
        assert splice.client.transport is None and not splice.service.held
        transport, _ = await loop.connect_accepted_socket(lambda: splice.client, sock=client)
        end = splice.client  # read afresh: mypy holds the attributes at what was set and asserted
        assert end.sock is None  # the transport writes from now on
        assert end.transport is transport
        carrying = loop.create_task(splice.carry())
        client_peer.sendall(b"more request")
        assert await asyncio.to_thread(read_exactly, service_peer, 12) == b"more request"
        service_peer.sendall(b"more response")
        assert await asyncio.to_thread(read_exactly, client_peer, 13) == b"more response"
        splice.close()
        await carrying
        assert splice.stats.bytes_out == 8 + 13 and splice.stats.bytes_in == 12

    run(main())


def test_what_the_socket_does_not_take_at_once_is_held_in_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        splice = Splice(GatewayStats())
        client, client_peer = pair()
        service, service_peer = pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # Fill the client's socket until it takes nothing more.
        filler = b""
        while True:
            try:
                filler += b"f" * client.send(b"f" * 4096)
            except BlockingIOError:
                break
        splice.client.sock = client
        await loop.connect_accepted_socket(lambda: splice.service, sock=service)
        body = bytes(range(256)) * 64  # 16 KiB the full socket cannot take
        service_peer.sendall(body)
        await wait_until(lambda: bool(splice.service.held), 5.0, "the service end to hold bytes")
        # The service's transport stopped reading: at most one chunk waits.
        service_peer.sendall(b"after")
        await loop.connect_accepted_socket(lambda: splice.client, sock=client)
        carrying = loop.create_task(splice.carry())
        total = len(filler) + len(body) + 5
        data = await asyncio.to_thread(read_exactly, client_peer, total)
        assert data == filler + body + b"after"
        splice.close()
        await carrying

    run(main())


def test_bytes_for_a_made_end_go_to_its_transport_before_the_link_with_backpressure() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        splice = Splice(GatewayStats())
        client, client_peer = pair()
        service, service_peer = pair()
        # Both ends made, not linked (the publisher between its target's transport and the
        # callback that links them).
        await loop.connect_accepted_socket(lambda: splice.client, sock=client)
        await loop.connect_accepted_socket(lambda: splice.service, sock=service)
        assert splice.service.transport is not None and splice.client.transport is not None
        splice.service.transport.set_write_buffer_limits(high=1, low=0)
        service_peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        service.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client_peer.sendall(b"request")
        assert await asyncio.to_thread(read_exactly, service_peer, 7) == b"request"
        # A write the service cannot take at once pauses the client's reading, and the link
        # does not resume it while the service is still full.
        big = b"x" * (1 << 20)
        sender = asyncio.create_task(asyncio.to_thread(client_peer.sendall, big))
        await wait_until(lambda: splice.service.full, 5.0, "the service end to fill")
        assert splice.client.transport.is_reading() is False
        splice.link()
        assert splice.client.transport.is_reading() is False
        assert await asyncio.to_thread(read_exactly, service_peer, len(big)) == big
        await sender
        await wait_until(lambda: not splice.service.full, 5.0, "the service end to drain")
        client_peer.sendall(b"end")
        assert await asyncio.to_thread(read_exactly, service_peer, 3) == b"end"
        splice.close()
        await splice.done

    run(main())


def test_what_the_target_answered_during_the_send_goes_on_before_its_transport_is_made() -> None:
    """The publisher's case: the stream (client end) is made, the target's socket connected
    but its transport not yet; the request goes to the socket, and an answer already waiting
    there (a target on this machine answers while the send runs it) is passed on at once."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        splice = Splice(GatewayStats())
        client, client_peer = pair()
        service, service_peer = pair()
        splice.service.sock = service  # as the publisher does with its target's socket
        service_peer.sendall(b"answer")  # there before the request is even sent
        await loop.connect_accepted_socket(lambda: splice.client, sock=client)
        client_peer.sendall(b"request")
        assert await asyncio.to_thread(read_exactly, service_peer, 7) == b"request"
        # The answer reached the client with no transport made on the target's socket.
        assert await asyncio.to_thread(read_exactly, client_peer, 6) == b"answer"
        assert splice.service.transport is None and not splice.client.held
        assert splice.stats.bytes_out == 6 and splice.stats.bytes_in == 7
        await loop.connect_accepted_socket(lambda: splice.service, sock=service)
        carrying = loop.create_task(splice.carry())
        service_peer.sendall(b"more")
        assert await asyncio.to_thread(read_exactly, client_peer, 4) == b"more"
        splice.close()
        await carrying

    run(main())
