"""First packets for an object nobody serves, claiming another host as their source, at a
``scaffold up`` network (docs/protocol.md §3.2).

Each would make an object switch answer OBJECT_NOT_FOUND to the forged source. The answers
are rate-limited (a token bucket per object switch): the victim gets a bounded number, the
rest are dropped and counted, and legitimate lookups -- of a missing object and of ``web`` --
still get their answers once the flood is over.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from scaffold.deploy.joining import join_from_state
from scaffold.errors import ObjectNotFound
from scaffold.ids import ObjectId
from scaffold.runtime.aio import run
from scaffold.wire import datagram as wire_datagram
from scaffold.wire.datagram import DatagramSegment, DatagramType

from .dataplane import DataPlane, Proto, packet

PACKETS = 3000
RATE = 3000.0  # a second of flood
#: the object switch's defaults: 200 answers a second, 50 at once
ANSWERS_PER_S, BURST = 200, 50


def test_object_not_found_answers_are_rate_limited(up: DataPlane) -> None:
    victim = up.host("dc2-h1")
    dc_ids = up.status()["datacenters"]
    rng = random.Random(2)
    ghost = ObjectId.from_name("nobody-serves-this")
    flood = [
        packet(
            Proto.DATAGRAM,
            wire_datagram.encode(DatagramSegment(DatagramType.DATA, rng.getrandbits(64) or 1, b"x")),
            obj=ghost.raw,
            flow=rng.getrandbits(64) or 1,
            src_dc=dc_ids[victim["dc"]],
            src_host=victim["host_id"],
            src_socket=rng.randrange(1, 2**32),
        )
        for _ in range(PACKETS)
    ]
    start = time.monotonic()
    up.send("dc1-fs1", flood, rate=RATE)
    seconds = time.monotonic() - start
    limited = up.wait_count("dc1-os", "drops", "not-found-rate-limited", PACKETS // 2)
    answered = up.count("dc1-os", "drops", "object-not-found")
    assert answered + limited == PACKETS
    assert answered <= BURST + ANSWERS_PER_S * (seconds + 1.5)  # +1.5 s: the counters' period
    assert up.wait_count("dc2-h1", "drops", "signal-for-unknown-flow", answered) == answered

    async def legit() -> None:
        await asyncio.sleep(BURST / ANSWERS_PER_S)  # the bucket refills
        host = await join_from_state("legit", state=up.state_path, gateway="dc2-fs1")
        try:
            with pytest.raises(ObjectNotFound):
                await host.open_connection(ghost, timeout=10)
            for i in range(10):
                reader, writer = await host.open_connection("web", timeout=10)
                writer.write(b"%02d" % i)
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(2), 10) == b"%02d" % i
                writer.close()
        finally:
            await host.close()

    run(legit())
