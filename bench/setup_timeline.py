"""Where a connection's setup through the ingress spends its time: a timeline per setup.

The shape of ``bench/ingress.py``'s one-process ``scaffold-raw`` / ``scaffold-http`` setup
(``Testbed(datacenters=1, hosts_per_datacenter=3)``, a ``Publisher`` on ``dc1-h1`` for one
replica, an ``Ingress`` on ``dc1-h3``), and the replica and the client in processes of their
own, as there. The client makes ``--setups`` fresh connections, 5 ms apart, each a tiny GET
timed from ``connect()`` to the response's first byte.

In the scaffold process every datagram a node reads or sends, and the gateway's moments (the
accept, the request reaching the publisher, its bytes going to the target, the response
coming back) are stamped with the monotonic clock the client also reads, by wrapping the
functions that do them (this script's instrumentation only: nothing in ``src`` knows of it).
The stamps cost a little time each, so the totals here run above ``bench/ingress.py``'s; the
order and the gaps are what to read.

Prints JSON: per stage, the median time from ``connect()`` (µs), the median gap to the stage
before it, and the whole event list of the median setup.

    PYTHONPATH=src .venv/bin/python bench/setup_timeline.py [--http] [--setups 300] [--pool N]
        [--preconnect N]

With a stream that is already open -- reused across clients (``--http``, by default) or opened
ahead (``--preconnect``) -- the ``syn-*`` stages are the request's first datagram.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scaffold
from _common import emit, environment
from ingress import LOCAL, answers, free_port, timed_setup
from scaffold.gateway import Ingress, Publisher
from scaffold.gateway import splice as splice_module
from scaffold.runtime.aio import run, udp, wait_until

BENCH = Path(__file__).resolve().parent

#: (time ns, what, where, bytes)
Event = tuple[int, str, str, int]
EVENTS: list[Event] = []
NODES: dict[int, str] = {}  # UDP port -> node name
GATEWAYS: dict[int, str] = {}  # id(stats) -> "ingress" / "publisher"


def stamp(what: str, where: str = "", size: int = 0) -> None:
    EVENTS.append((time.perf_counter_ns(), what, where, size))


def instrument() -> None:
    """Wrap the runtime's UDP endpoint and the gateway's callbacks with stamps."""
    endpoint = udp.UdpEndpoint
    read, send, send_train = endpoint.read, endpoint.send, endpoint.send_train

    def stamped_read(self: udp.UdpEndpoint) -> Any:
        got = read(self)
        if got is not None:
            stamp("rx", NODES.get(self.address[1], "?"), len(got[0]))
        return got

    def stamped_send(self: udp.UdpEndpoint, data: Any, address: Any) -> None:
        stamp("tx", NODES.get(self.address[1], "?"), len(data))
        send(self, data, address)

    def stamped_train(self: udp.UdpEndpoint, packets: Any, size: int, address: Any) -> None:
        stamp("tx-train", NODES.get(self.address[1], "?"), sum(map(len, packets)))
        send_train(self, packets, size, address)

    endpoint.read = stamped_read  # type: ignore[method-assign]
    endpoint.send = stamped_send  # type: ignore[method-assign]
    endpoint.send_train = stamped_train  # type: ignore[method-assign]

    end = splice_module.End
    data_received = end.data_received
    send_early = getattr(end, "send_early", None)  # (older trees: for before/after runs)

    def stamped_data(self: splice_module.End, data: bytes) -> None:
        side = "from-client" if self.inbound else "from-service"
        stamp(side, GATEWAYS.get(id(self.splice.stats), "?"), len(data))
        data_received(self, data)

    def stamped_early(self: splice_module.End, data: bytes) -> bytes:
        stamp("send-early", GATEWAYS.get(id(self.splice.stats), "?"), len(data))
        assert send_early is not None
        return bytes(send_early(self, data))

    end.data_received = stamped_data  # type: ignore[method-assign]
    if send_early is not None:
        end.send_early = stamped_early  # type: ignore[method-assign]
    link = splice_module.Splice.link

    def stamped_link(self: splice_module.Splice) -> None:
        stamp("link", GATEWAYS.get(id(self.stats), "?"))
        link(self)

    splice_module.Splice.link = stamped_link  # type: ignore[method-assign]
    on_acceptable = Ingress._on_acceptable

    def stamped_accept(self: Ingress) -> None:
        stamp("accept", "ingress")
        on_acceptable(self)

    Ingress._on_acceptable = stamped_accept  # type: ignore[method-assign]


#: the stages of a setup, each the first event after the stage before that matches
STAGES: list[tuple[str, Callable[[Event], bool]]] = [
    ("accept", lambda e: e[1] == "accept"),
    ("syn-sent", lambda e: e[1] in ("tx", "tx-train") and e[2] == "dc1-h3"),
    ("syn-at-publisher-host", lambda e: e[1] == "rx" and e[2] == "dc1-h1"),
    ("request-at-publisher", lambda e: e[1] == "from-client" and e[2] == "publisher"),
    ("response-at-publisher", lambda e: e[1] == "from-service" and e[2] == "publisher"),
    ("response-sent", lambda e: e[1] in ("tx", "tx-train") and e[2] == "dc1-h1" and e[3] > 150),
    ("response-at-ingress-host", lambda e: e[1] == "rx" and e[2] == "dc1-h3" and e[3] > 150),
]


def stages_of(events: list[Event], start: int, first_byte: int) -> dict[str, float]:
    """Each stage's time from ``start`` (µs), found in order; then the first byte."""
    found: dict[str, float] = {}
    position = 0
    for name, matches in STAGES:
        for index in range(position, len(events)):
            if matches(events[index]):
                found[name] = (events[index][0] - start) / 1000
                position = index + 1
                break
    found["first-byte-at-client"] = (first_byte - start) / 1000
    return found


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    replica = subprocess.Popen([sys.executable, str(BENCH / "ingress.py"), "--replica", str(port)])
    try:
        await wait_until(lambda: answers(port), 10, "the replica")
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=3) as net:
            for name, node in net.network.nodes.items():
                NODES[node.address[1]] = name
            publisher = Publisher(
                net.host("dc1-h1"), "web", (LOCAL, port), check_interval=0.5, fall=2, rise=2, pool=args.pool
            )
            ingress = Ingress(
                net.host("dc1-h3"), "web", (LOCAL, 0), http=args.http, preconnect=args.preconnect
            )
            GATEWAYS[id(publisher.stats)] = "publisher"
            GATEWAYS[id(ingress.stats)] = "ingress"
            async with publisher, ingress:
                await asyncio.sleep(1.0)  # the pool filled, the tables settled
                EVENTS.clear()
                client = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--client",
                    str(ingress.address[1]),
                    str(args.setups),
                    stdout=subprocess.PIPE,
                )
                out, _ = await client.communicate()
                if client.returncode != 0:
                    raise SystemExit(f"the client failed (exit {client.returncode})")
    finally:
        replica.terminate()
        replica.wait(5)
    events = sorted(EVENTS)
    setups = []
    for start, first_byte in json.loads(out):
        window = [e for e in events if start <= e[0] <= first_byte]
        setups.append((first_byte - start, start, window, stages_of(window, start, first_byte)))
    setups.sort(key=lambda s: s[0])
    names = [name for name, _ in STAGES] + ["first-byte-at-client"]
    stages: dict[str, dict[str, float]] = {}
    before = 0.0
    for name in names:
        times = [s[3][name] for s in setups if name in s[3]]
        if not times:
            continue
        at = statistics.median(times)
        stages[name] = {"at_us": round(at, 1), "gap_us": round(at - before, 1), "seen": len(times)}
        before = at
    _, start, window, _ = setups[len(setups) // 2]
    return {
        "benchmark": "setup-timeline",
        "environment": environment(),
        "mode": "http" if args.http else "raw",
        "pool": args.pool,
        "preconnect": args.preconnect,
        "setups": len(setups),
        "setup_p50_us": round(statistics.median(s[0] for s in setups) / 1000, 1),
        "events_p50": statistics.median(len(s[2]) for s in setups),
        "stages_p50": stages,
        "median_setup": [
            f"{(t - start) / 1000:8.1f} {what:<13} {where:<9} {size}" for t, what, where, size in window
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="the HTTP ingress (default: raw)")
    parser.add_argument("--setups", type=int, default=300, help="timed connections (default 300)")
    parser.add_argument("--pool", type=int, default=0, help="the publisher's idle connections (default 0)")
    parser.add_argument(
        "--preconnect", type=int, default=0, help="raw: streams the ingress opens ahead (default 0)"
    )
    parser.add_argument("--client", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:  # the client process: PORT COUNT, times as JSON
        port, count = args.client
        times = []
        for i in range(count + 10):  # ten to warm up
            time.sleep(0.005)
            start, first = timed_setup(port)
            if i >= 10:
                times.append((start, first))
        print(json.dumps(times))
        return
    if args.setups < 1 or not 0 <= args.pool <= 64 or not 0 <= args.preconnect <= 64:
        parser.error("--setups must be positive, --pool and --preconnect in [0, 64]")
    if args.http and args.preconnect:
        parser.error("--preconnect is for raw mode (--http reuses idle streams)")
    instrument()
    emit(run(measure(args)))


if __name__ == "__main__":
    main()
