"""Larger segments where the path allows (docs/protocol.md §4.2.6): streams find the path MTU
by probing, and survive a path whose MTU shrinks mid-stream -- in the sim and over real
loopback sockets with the runtime's link stage."""

from __future__ import annotations

import asyncio
import hashlib
import random

import scaffold
from conftest import WEB
from scaffold.core.host import HostEvent, HostStack, StreamEventFor
from scaffold.core.topology import default_topology
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import DataReceived, EndOfStream
from scaffold.transport.pmtu import SACK_ROOM, SEARCH_GRANULARITY
from scaffold.wire.header import HEADER_LEN
from scaffold.wire.stream import FIXED_LEN

OVERHEAD = HEADER_LEN + FIXED_LEN + SACK_ROOM  # what a segment adds to its payload, at most


def mss_for(mtu: int) -> int:
    """The largest payload a segment may carry on a path of that IP MTU."""
    return mtu - 28 - OVERHEAD


def test_a_stream_finds_a_jumbo_path_and_survives_it_shrinking_mid_stream() -> None:
    net = SimNetwork(default_topology(), seed=31)
    net.set_all_links(mtu=9000)
    net.start()
    net.settle()
    client, server = "north-h1", "west-h1"
    for host in (client, server):  # what the runtime says of the host's gateway link
        net.act(host, lambda h, now: h.set_path_limit(h.gateway, 9000 - 28, now))
    net.act(server, lambda h, now: h.bind(WEB, 1, "web"))
    net.run(0.05)
    received = bytearray()
    done: list[str] = []

    def on_server(stack: HostStack, event: HostEvent, now: float) -> None:
        if isinstance(event, StreamEventFor) and event.socket_id in stack.flows:
            if isinstance(event.event, DataReceived):
                received.extend(stack.stream_read(event.socket_id, -1, now))
            elif isinstance(event.event, EndOfStream):
                done.append(hashlib.sha256(received).hexdigest())

    net.on_event(server, on_server)
    rng = random.Random(1)
    sent = bytearray()

    def send(stack: HostStack, now: float, size: int) -> None:
        data = rng.randbytes(size)
        assert stack.stream_send(flow.socket_id, data, now, force=True) == size
        sent.extend(data)

    flow = net.act(client, lambda h, now: h.open_stream(WEB, now))
    net.act(client, lambda h, now: send(h, now, 2 * 1024 * 1024))
    transport = net.host(client).stream(flow.socket_id)
    assert net.run_while(lambda: len(received) < len(sent), timeout=60)
    assert transport.mss == mss_for(9000)  # the ceiling was confirmed at once
    # The backbone link shrinks under the stream: its big segments vanish on the way. The
    # stream goes on, 64 KiB every 50 ms, until the search settled.
    net.set_link("north-fs1", "west-fs1", mtu=1500)
    pmtu = transport._sender.pmtu
    for _ in range(400):
        net.act(client, lambda h, now: send(h, now, 64 * 1024))
        net.run(0.05)
        if not pmtu.searching and transport.mss <= mss_for(1500):
            break
    assert mss_for(1500) - SEARCH_GRANULARITY < transport.mss <= mss_for(1500)
    assert transport.stats.retransmit_timeouts >= 1  # the black hole was found by its RTO
    net.act(client, lambda h, now: h.stream_shutdown(flow.socket_id, now))
    assert net.run_while(lambda: not done, timeout=30)
    assert done == [hashlib.sha256(sent).hexdigest()]


def test_loopback_streams_use_large_segments_and_a_shrinking_link_loses_nothing() -> None:
    """Real sockets: the runtime reports loopback's MTU, the stream probes up to it; then the
    emulated backbone link drops datagrams above 1500 bytes mid-stream."""

    async def main() -> tuple[int, int, bool]:
        async def sink(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            digest = hashlib.sha256()
            while data := await reader.read(1 << 20):
                digest.update(data)
            writer.write(digest.digest())
            await writer.drain()
            writer.close()

        payload = random.Random(2).randbytes(8 * 1024 * 1024)
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=2, backbone_delay=0) as net:
            await net.host("dc1-h1").start_server(sink, "sink")
            client = net.host("dc2-h1")
            reader, writer = await client.open_connection("sink")
            transport = client.node.core.stream(writer.get_extra_info("socket_id"))
            half = len(payload) // 2
            writer.write(payload[:half])
            await writer.drain()
            # (A timeout on a loaded machine drops the mss to the floor; a probe restores it.)
            await wait_until(lambda: transport.mss > 60_000, 30, "large segments")
            large = transport.mss
            net.network.set_link("dc2-fs1", "dc1-fs1", mtu=1500)
            writer.write(payload[half:])
            await writer.drain()
            writer.write_eof()
            digest = await asyncio.wait_for(reader.read(64), 60)
            return large, transport.mss, digest == hashlib.sha256(payload).digest()

    large, small, exact = run(main())
    assert exact
    assert large > 60_000  # loopback: 64 KiB datagrams
    assert small <= mss_for(1500)
