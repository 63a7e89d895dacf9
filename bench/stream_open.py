"""What opening and accepting a stream cost in the sans-IO host stack, warm and cold.

A connection through the ingress runs *cold*: setups come milliseconds apart and other
processes evict the caches in between (docs/gateway.md, "Opening a stream, cold"). In the sim
(``SimNetwork(default_topology())``, ``web`` bound on ``east-h1``) this times

* ``open``: ``north-h1``'s ``HostStack.open_stream(WEB, now, data=<50 bytes>)``;
* ``accept``: ``east-h1``'s ``receive_datagram`` of that SYN (refined to it), then its
  ``datagrams_to_send`` and every event (the SYN-ACK out);

each warm (repeated) and cold (a 32 MiB ``bytearray`` written at a stride of 64 bytes before
each call), medians of ``--rounds``; and counts each step's calls and distinct functions with
cProfile. No peer runs beside it: it measures two steps of this stack against themselves
(before and after a change), as ``bench/ingress.py --profile-setups`` counts a whole setup.

    PYTHONPATH=src .venv/bin/python bench/stream_open.py [--rounds 200] [--list]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

from _common import emit, environment
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import header as wire_header

WEB = ObjectId.from_name("web")
REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\nUser-Agent: micro\r\n\r\n"[:50].ljust(50, b"x")
EVICT = bytearray(32 * 1024 * 1024)
STRIDE = 64
_FILL = [bytes([v]) * (len(EVICT) // STRIDE) for v in (1, 2)]


def evict(i: int) -> None:
    EVICT[::STRIDE] = _FILL[i & 1]


def setup() -> tuple[object, object]:
    net = SimNetwork(default_topology(), seed=7)
    net.start()
    net.settle()
    net.act("east-h1", lambda h, now: h.bind(WEB, 1, "web"))
    net.run(0.05)
    return net.host("north-h1"), net.host("east-h1")


def measure_steps(rounds: int, listing: bool) -> dict[str, object]:
    client, server = setup()
    now = 10.0
    gw_s = server.gateway

    def open_one() -> object:
        return client.open_stream(WEB, now, data=REQUEST)

    def finish_client(flow: object) -> bytes:
        out = client.datagrams_to_send(now)
        while client.next_event() is not None:
            pass
        client._forget(flow, "bench", notify=False)
        (_, packet) = out[-1]
        h = wire_header.parse(packet)
        refined = wire_header.Header(
            proto=h.proto,
            flow=h.flow,
            obj=h.obj,
            dst_dc=server.dc_id,
            dst_host=server.host_id,
            dst_socket=0,
            src_dc=h.src_dc,
            src_host=h.src_host,
            src_socket=h.src_socket,
            flags=h.flags,
            ttl=h.ttl,
        )
        return wire_header.encode(refined, packet[wire_header.HEADER_LEN :])

    def accept_one(packet: bytes) -> int:
        server.receive_datagram(packet, gw_s, now)
        out = server.datagrams_to_send(now)
        while server.next_event() is not None:
            pass
        return len(out)

    def finish_server() -> None:
        for flow in list(server.flows.values()):
            server._forget(flow, "bench", notify=False)
        while server.next_event() is not None:
            pass

    def measure(cold: bool) -> tuple[float, float]:
        opens: list[int] = []
        accepts: list[int] = []
        for i in range(rounds):
            if cold:
                evict(i)
            t0 = time.perf_counter_ns()
            flow = open_one()
            t1 = time.perf_counter_ns()
            opens.append(t1 - t0)
            packet = finish_client(flow)
            if cold:
                evict(i + 1)
            t0 = time.perf_counter_ns()
            sent = accept_one(packet)
            t1 = time.perf_counter_ns()
            assert sent == 1, sent
            accepts.append(t1 - t0)
            finish_server()
        return statistics.median(opens) / 1000, statistics.median(accepts) / 1000

    measure(False)  # warm-up
    warm = measure(False)
    cold = measure(True)

    def profiled(action: object) -> dict[str, int]:
        profiler = cProfile.Profile()
        profiler.enable()
        action()  # type: ignore[operator]
        profiler.disable()
        stats = pstats.Stats(profiler)
        # the step's own: not this script's lambdas nor the profiler's ``disable``
        own = {
            k: v
            for k, v in stats.stats.items()  # type: ignore[attr-defined]
            if "stream_open" not in k[0] and "disable" not in k[2]
        }
        python = {k: v for k, v in own.items() if k[0] != "~"}
        return {
            "calls": sum(v[1] for v in own.values()),
            "functions": len(own),
            "python_calls": sum(v[1] for v in python.values()),
            "python_functions": len(python),
        }

    holder: list[object] = []
    open_counts = profiled(lambda: holder.append(open_one()))
    packet = finish_client(holder[0])
    accept_counts = profiled(lambda: accept_one(packet))
    finish_server()
    if listing:
        for label, action in (("open", lambda: holder.append(open_one())), ("accept", None)):
            profiler = cProfile.Profile()
            if action is None:
                packet = finish_client(holder[-1])
                profiler.enable()
                accept_one(packet)
                profiler.disable()
            else:
                profiler.enable()
                action()
                profiler.disable()
            print(f"--- {label}", file=sys.stderr)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("ncalls").print_stats(100)
    return {
        "benchmark": "stream-open",
        "environment": environment(),
        "rounds": rounds,
        "open_stream": {"warm_us": round(warm[0], 1), "cold_us": round(cold[0], 1), **open_counts},
        "accept_syn": {"warm_us": round(warm[1], 1), "cold_us": round(cold[1], 1), **accept_counts},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed calls per median (default 200)")
    parser.add_argument("--list", action="store_true", help="each step's profile on stderr")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    emit(measure_steps(args.rounds, args.list))


if __name__ == "__main__":
    main()
