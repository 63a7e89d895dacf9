"""Forged OBJECT_NOT_FOUND and UNREACHABLE signals against an established stream of a
``scaffold up`` network (docs/protocol.md §4.3).

Signals carry no nonce, so the attacker needs only a flow's Flow ID, Socket ID and Host ID --
all in the clear in every packet. They used to end the stream at once; now each one makes the
host probe its peer with the nonce, and the peer's answer refutes it: the stream lives on.
"""

from __future__ import annotations

import asyncio

from scaffold.deploy.joining import join_from_state
from scaffold.runtime.aio import run
from scaffold.wire import signal as wire_signal

from .dataplane import DataPlane, Proto, packet


def test_forged_signals_do_not_end_an_established_stream(up: DataPlane) -> None:
    async def attack() -> None:
        host = await join_from_state("victim", state=up.state_path, gateway="dc2-fs1")
        try:
            reader, writer = await host.open_connection("web", timeout=10)
            writer.write(b"before")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(6), 10) == b"before"
            socket_id = writer.get_extra_info("socket_id")
            flow = host.stack.flows[socket_id]
            forged = [
                packet(
                    Proto.SIGNAL,
                    wire_signal.encode(wire_signal.Signal(kind, 1)),
                    flow=flow.flow,
                    dst_dc=host.stack.dc_id,
                    dst_host=host.stack.host_id,
                    dst_socket=socket_id,
                    src_dc=flow.peer_dc,
                )
                for kind in (wire_signal.SignalType.OBJECT_NOT_FOUND, wire_signal.SignalType.UNREACHABLE)
                for _ in range(5)
            ]
            for data in forged:  # straight at the victim's socket, as an off-path attacker would
                up.sock.sendto(data, host.node.address)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # longer than any verification takes
            assert flow.transport is not None and flow.transport.error is None
            writer.write(b"after")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"after"
            # Each signal was verified (one probe per verification), and none was believed.
            assert 1 <= host.stack.counters["signal-verify"] <= len(forged)
            assert host.node.stats["unknown-peer"] == len(forged)
            writer.close()
            # Legitimate traffic meanwhile and after: ten echoes on new streams.
            for i in range(10):
                r, w = await host.open_connection("web", timeout=10)
                w.write(b"%02d" % i)
                await w.drain()
                assert await asyncio.wait_for(r.readexactly(2), 10) == b"%02d" % i
                w.close()
        finally:
            await host.close()

    run(attack())
