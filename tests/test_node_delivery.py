"""When a stream's protocol hears of what arrived (``NodeRuntime.soon``): in the runtime's
flush for the datagram, once its events are dispatched and before its datagrams leave (and
before the loop's other waiting callbacks); outside a flush, in the loop's next turn
(``call_soon``). A stream ``create_connection`` opens gets its protocol the same way."""

from __future__ import annotations

import asyncio
from typing import Any

import scaffold
from scaffold.core.host import HostStack, StreamEventFor
from scaffold.runtime.aio import run, wait_until


class Recorder(asyncio.Protocol):
    """Records, at each ``data_received``, whether the marker callback ran already."""

    def __init__(self, marker_ran: list[bool], seen: list[tuple[bytes, bool]]) -> None:
        self.marker_ran = marker_ran
        self.seen = seen

    def data_received(self, data: bytes) -> None:
        self.seen.append((data, bool(self.marker_ran)))


def test_data_reaches_the_protocol_before_callbacks_queued_during_the_flush() -> None:
    async def main() -> None:
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            server, client = net.host("dc1-h1"), net.host("dc1-h2")
            marker_ran: list[bool] = []
            seen: list[tuple[bytes, bool]] = []
            await server.create_server(lambda: Recorder(marker_ran, seen), "rec")
            node = server.node
            handler = node.on_event
            assert handler is not None
            loop = asyncio.get_running_loop()

            def on_event(core: HostStack, event: Any, now: float) -> None:
                # Queued before the host hears of any event of the flush that brings the
                # data: with call_soon delivery the protocol would run after it.
                if isinstance(event, StreamEventFor) and not queued:
                    queued.append(True)
                    marker_ran.clear()
                    loop.call_soon(marker)
                handler(core, event, now)

            def marker() -> None:
                marker_ran.append(True)
                queued.clear()  # the next flush queues its own

            queued: list[bool] = []

            node.on_event = on_event
            _, writer = await client.open_connection("rec")
            writer.write(b"ping")
            await wait_until(lambda: bool(seen), 10, "the data delivered")
            assert seen == [(b"ping", False)]
            writer.close()

    run(main())


def test_soon_outside_a_flush_runs_in_the_next_turn() -> None:
    async def main() -> None:
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=1) as net:
            node = net.host("dc1-h1").node
            ran: list[int] = []
            node.soon(ran.append, 1)
            assert ran == []
            await asyncio.sleep(0)
            assert ran == [1]

    run(main())


class Answer(asyncio.Protocol):
    """A server that answers each request at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"pong:" + data)


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data


def test_an_answer_to_data_on_syn_rides_in_the_syn_ack_and_is_read_before_create_connection_returns() -> None:
    """The server's protocol hears the SYN's data before the flush's datagrams leave, and the
    server host surfaces the new stream's events before it builds the SYN-ACK, so the answer
    rides in the SYN-ACK: one datagram, not a SYN-ACK and then a data segment
    (docs/protocol.md §4.2.7). The client makes its protocol in the flush that completed the
    handshake, so the answer is delivered there -- before the awaiting call resumes."""

    async def main() -> None:
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            server, client = net.host("dc1-h1"), net.host("dc1-h2")
            await server.create_server(Answer, "answer")
            for _ in range(3):
                transport, protocol = await client.create_connection(Collect, "answer", data=b"ping")
                assert protocol.received == b"pong:ping"  # no await since it returned
                socket_id = transport.get_extra_info("sockname")[1]
                served = [f for f in server.stack.flows.values() if f.transport is not None]
                assert len(served) == 1 and served[0].packets_sent == 1, [f.packets_sent for f in served]
                assert client.stack.flows[socket_id].packets_received == 1
                transport.close()
                await wait_until(lambda: not server.stack.flows, 5, "the server to forget the stream")

    run(main())


def test_start_connection_sends_the_syn_before_it_returns_and_cancel_lets_the_stream_go() -> None:
    """``Host.start_connection`` (the ingress's accept callback): the SYN is on its way when it
    returns, with no task; ``result`` completes it; ``cancel`` aborts a stream still opening,
    and cuts one whose protocol was made (``connection_lost``)."""

    async def main() -> None:
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net:
            server, client = net.host("dc1-h1"), net.host("dc1-h2")
            await server.create_server(Answer, "answer")
            opening = client.start_connection(Collect, "answer", data=b"ping")
            socket_id = opening.transport.get_extra_info("sockname")[1]
            assert client.stack.flows[socket_id].packets_sent == 1  # the SYN left already
            transport, protocol = await opening.result(5)
            assert protocol.received == b"pong:ping" and not transport.is_closing()
            opening.cancel()  # made: cut
            assert transport.is_closing()
            # Given up while opening: the flow is aborted, the protocol never made.
            made: list[Collect] = []

            def factory() -> Collect:
                made.append(Collect())
                return made[-1]

            opening = client.start_connection(factory, "answer", data=b"ping")
            socket_id = opening.transport.get_extra_info("sockname")[1]
            opening.cancel()
            assert socket_id not in client.stack.flows
            # A second stream, opened after it on the same path: once it is answered, whatever
            # the server answered the first one came back too, and found no stream.
            transport, protocol = await client.create_connection(Collect, "answer", data=b"ping")
            assert protocol.received == b"pong:ping"
            transport.close()
            assert made == [] and socket_id not in client.stack.flows

    run(main())
