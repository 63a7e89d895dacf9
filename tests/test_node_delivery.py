"""When a stream's protocol hears of what arrived (``NodeRuntime.soon``): right after the
runtime's flush for the datagram, before the loop's other waiting callbacks; outside a
flush, in the loop's next turn (``call_soon``)."""

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
