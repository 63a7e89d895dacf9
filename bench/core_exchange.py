"""What the sans-IO stream core costs per keep-alive request/response exchange, alone.

Two ``StreamConnection`` objects (``scaffold.transport``) joined by a plain loop, with no
host, runtime, socket or event loop around them: the client sends a 50-byte request, the
server reads it and sends a 100-byte response, the client reads it, and each side is pumped
once more with nothing to send (as a host pumps a stream after each datagram) -- the
transport's share of one request through the ingress, both ends of the stream. A lower
bound for what any host built on this core spends per request over moving the bytes
(docs/gateway.md, "Fourteenth round").

    PYTHONPATH=src python bench/core_exchange.py [--exchanges 20000] [--runs 7]

Prints JSON: µs per exchange (median and range of the runs) and Python + builtin calls per
exchange (cProfile, one extra run).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from typing import Any

from _common import emit, environment
from scaffold.transport import StreamConnection, StreamOptions

NONCE = 0x5CAF_F01D_0000_0001
REQUEST, RESPONSE = b"G" * 50, b"R" * 100


def transfer(sender: StreamConnection, receiver: StreamConnection, now: float) -> None:
    """What a host does for one flow after a turn: send what is queued, take the events,
    look at the timer."""
    for segment in sender.segments_to_send(now):
        receiver.receive_segment(segment, now)
    for end in (sender, receiver):
        end.pop_events()
        end.get_timer()


def exchanges(count: int) -> float:
    """Seconds per exchange over ``count`` of them on a fresh, connected pair."""
    client = StreamConnection("client", NONCE, 0.0, StreamOptions())
    server = StreamConnection("server", NONCE, 0.0, StreamOptions())
    client.connect(0.0)
    now = 0.0
    for _ in range(4):  # the handshake, and its acknowledgments settled
        transfer(client, server, now)
        transfer(server, client, now)
    started = time.perf_counter()
    for _ in range(count):
        now += 0.0001
        client.send(REQUEST)
        transfer(client, server, now)
        server.read()
        server.send(RESPONSE)
        transfer(server, client, now)
        client.read()
        transfer(client, server, now)  # the pumps with nothing to send
        transfer(server, client, now)
    elapsed = time.perf_counter() - started
    if client.stats.bytes_sent < count * len(REQUEST):  # (the exchange really took place)
        raise SystemExit("bench/core_exchange.py: the requests were not all sent")
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20_000, help="exchanges per run (default 20,000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (default 7)")
    args = parser.parse_args()
    exchanges(1000)  # warm
    runs = [exchanges(args.exchanges) * 1e6 for _ in range(args.runs)]
    profile = cProfile.Profile()
    profile.enable()
    exchanges(5000)
    profile.disable()
    calls = sum(row[1] for row in pstats.Stats(profile).stats.values())
    result: dict[str, Any] = {
        "benchmark": "core-exchange",
        "environment": environment(),
        "exchanges_per_run": args.exchanges,
        "us_per_exchange": {
            "median": round(statistics.median(runs), 2),
            "min": round(min(runs), 2),
            "max": round(max(runs), 2),
        },
        "calls_per_exchange": round(calls / 5000, 1),
    }
    emit(result)


if __name__ == "__main__":
    main()
