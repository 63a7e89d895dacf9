"""No exception escapes a node's send path (docs/protocol.md §7): an address a socket cannot
send to -- a port out of range, a name that is no IP -- is refused where it arrives, or
counted where it is used, and the node goes on forwarding."""

from __future__ import annotations

import asyncio

from scaffold.core.events import NeighboursLearned
from scaffold.deploy.joining import join_from_state
from scaffold.runtime.aio import run

from .dataplane import DataPlane


def test_bad_addresses_are_counted_never_raised(up: DataPlane) -> None:
    async def attack() -> None:
        host = await join_from_state("target", state=up.state_path, gateway="dc2-fs1")
        node = host.node
        try:
            bad = {"a": ("127.0.0.1", 70000), "b": ("not-an-ip", 80), "c": ("127.0.0.1", 0)}
            # As if a table push named them (the path a forged Hello's address took).
            node._learn_addresses(NeighboursLearned(bad).addresses)
            assert node.stats["bad-address"] == 3
            assert not set(bad) & set(node.book.address)
            # An address that got into the book anyway is counted at the send, not raised.
            node.book.add("z", ("127.0.0.1", 70000))
            node._send_all([("z", b"x" * 100)], 0.0)
            assert node.stats["send-error"] == 1
            reader, writer = await host.open_connection("web", timeout=10)  # still forwarding
            writer.write(b"ok")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"ok"
            writer.close()
        finally:
            await host.close()

    run(attack())
