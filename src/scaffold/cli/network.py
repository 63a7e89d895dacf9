"""Operator commands: ``scaffold up``, ``down``, ``status`` and ``fault``.

``up`` runs a network from a topology file -- embedded (one process, loopback; the default)
or ``--netns`` (a namespace and a process per node) -- and writes the state file that the
other commands read to find it. ``down`` removes exactly what ``up`` created. ``status``
asks the controller (``status`` and ``counters``) and prints tables. ``fault`` injects
failures: in netns mode with the kernel (links, nftables, SIGKILL), in embedded mode with the
runtime's own link emulation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.controller import commands
from ..core.topology import Topology, default_topology
from ..deploy.address import parse_address
from ..deploy.state_file import (
    DEFAULT_STATE,
    NetworkState,
    NodeState,
    credentials_dir,
    load_state,
    remove_state,
    save_state,
)
from ..deploy.topology_file import TopologyFile, load_topology
from ..errors import ConfigError, ScaffoldError, UsageError
from ..runtime import admin
from .admin import controller_access

__all__ = ["add_commands", "print_status"]

Address = tuple[str, int]
#: the port of every daemon's metrics endpoint in a namespace network, unless given
DEFAULT_METRICS_PORT = 9464


def add_commands(sub: Any) -> None:
    up = sub.add_parser("up", help="run a network described in a topology file")
    up.add_argument(
        "topology",
        nargs="?",
        help="topology file (TOML; default: the demo's network serving nothing; "
        "examples/demo.toml adds the demo's services)",
    )
    up.add_argument("--netns", action="store_true", help="one network namespace and process per node (root)")
    up.add_argument("--state", default=str(DEFAULT_STATE), help="state file (default .scaffold/state.json)")
    up.add_argument("--detach", action="store_true", help="netns: leave the network running and return")
    up.add_argument("--controller-port", type=int, default=0, help="embedded: the controller's TCP port")
    up.add_argument(
        "--controllers",
        type=int,
        default=1,
        help="netns: replicated controllers on etcd, this many (a 3-member etcd cluster is started)",
    )
    up.add_argument("--etcd", default="", help="netns: the replicas use this etcd cluster (HOST:PORT,...)")
    up.add_argument(
        "--metrics",
        type=_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics: embedded, one endpoint for the whole network; --netns, every "
        "daemon on PORT (0: 9464) of its management address (`scaffold metrics targets` lists them)",
    )
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="remove the network a state file describes")
    down.add_argument("--state", default=str(DEFAULT_STATE))
    down.add_argument("--keep-logs", action="store_true", help="netns: keep the nodes' logs")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="objects, replicas, hosts, switches, links and counters")
    status.add_argument("--state", default=str(DEFAULT_STATE))
    status.add_argument("--controller", help="the controller's address instead of a state file")
    status.add_argument(
        "--credentials", help="an operator's credentials directory (default: the state file's)"
    )
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(func=_status)

    fault = sub.add_parser("fault", help="inject a failure into a running network")
    fault.add_argument("--state", default=str(DEFAULT_STATE))
    kinds = fault.add_subparsers(dest="fault", required=True, metavar="FAULT")
    # ``--state`` may also come after the fault's name
    state_too = argparse.ArgumentParser(add_help=False)
    state_too.add_argument("--state", default=argparse.SUPPRESS, help="state file")
    for name, text in (("link-down", "cut a link"), ("link-up", "restore a link")):
        p = kinds.add_parser(
            name, help=f"{text} (nodes, or two datacenters for their backbone link)", parents=[state_too]
        )
        p.add_argument("a")
        p.add_argument("b")
    p = kinds.add_parser(
        "partition", help="cut every backbone link between groups of datacenters", parents=[state_too]
    )
    p.add_argument("groups", nargs="+", metavar="DC[,DC...]", help="one group = it against the rest")
    kinds.add_parser("heal", help="restore every backbone link", parents=[state_too])
    p = kinds.add_parser(
        "loss", help="drop PERCENT % of packets each way on a link (nftables in netns)", parents=[state_too]
    )
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("percent", type=float)
    p = kinds.add_parser(
        "delay", help="set a link's one-way delay (our own link emulation)", parents=[state_too]
    )
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("ms", type=float)
    p = kinds.add_parser("kill", help="SIGKILL a node's process (netns)", parents=[state_too])
    p.add_argument("node")
    p = kinds.add_parser("restart", help="start a killed node's process again (netns)", parents=[state_too])
    p.add_argument("node")
    fault.set_defaults(func=_fault)


# -- up / down -----------------------------------------------------------------------------


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(args: argparse.Namespace) -> TopologyFile:
    if args.topology:
        return load_topology(args.topology)
    # The demo's network and nothing on it: a first user's `scaffold publish NAME` then
    # serves NAME alone, not next to the demo's own replicas.
    demo = default_topology()
    return TopologyFile("triangle", Topology(demo.datacenters, demo.backbone, (), demo.local_delay), "")


def _up(args: argparse.Namespace) -> int:
    loaded = _load(args)
    state_path = Path(args.state)
    if state_path.exists():
        existing = load_state(state_path)
        if _network_alive(existing):
            raise UsageError(
                f"network {existing.name!r} is already up ({state_path}); `scaffold down` it or use --state"
            )
        remove_state(state_path)  # a stale file from a process that is gone
    if args.netns:
        metrics_port = None if args.metrics is None else args.metrics[1] or DEFAULT_METRICS_PORT
        return _up_netns(loaded, state_path, args.detach, metrics_port, args.controllers, args.etcd)
    if args.controllers != 1 or args.etcd:
        raise UsageError("--controllers and --etcd need --netns (replicas run as processes)")
    if args.detach:
        raise UsageError("--detach needs --netns (the embedded network lives in this process)")
    from ..runtime.aio import run

    return run(_up_embedded(loaded, state_path, args.controller_port, args.metrics))


def _network_alive(state: NetworkState) -> bool:
    from ..deploy.netns import kernel

    if state.mode == "netns":
        return any(kernel.alive(n.pid, n.start_time) for n in state.nodes.values()) or any(
            ns in kernel.namespaces() for ns in state.namespaces
        )
    return state.pid > 0 and Path(f"/proc/{state.pid}").exists()


def _say(text: str) -> None:
    Console(stderr=True).print(text)


def _wait_for_signal() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _up_netns(
    loaded: TopologyFile,
    state_path: Path,
    detach: bool,
    metrics_port: int | None,
    controllers: int,
    etcd: str,
) -> int:
    from ..deploy.netns.network import NetnsNetwork
    from ..runtime.aio import run

    async def main() -> int:
        endpoints = [e.strip() for e in etcd.split(",") if e.strip()]
        net = NetnsNetwork(
            loaded,
            state_path=state_path,
            metrics_port=metrics_port,
            controllers=controllers,
            etcd=endpoints,
        )
        stop = _wait_for_signal()
        started = time.monotonic()
        start = asyncio.create_task(net.start())
        done, _ = await asyncio.wait([start, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
        if start not in done:  # Ctrl-C while starting
            start.cancel()
            with contextlib.suppress(BaseException):
                await start
            await net.close()
            return 130
        start.result()
        state = net.state
        assert state is not None
        _say(
            f"[green]network {state.name!r} is up[/] in namespaces sc{state.run_id}-* "
            f"({len(state.nodes)} processes, {time.monotonic() - started:.1f} s); "
            f"controller {', '.join(f'{h}:{p}' for h, p in state.controller_addresses)}; state {state_path}; "
            f"logs {state.run_dir}"
            + (f"; metrics on port {metrics_port} of each node" if metrics_port else "")
        )
        if detach:
            return 0
        _say("[dim]Ctrl-C (or `scaffold down`) removes it[/]")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if not state_path.exists():  # `scaffold down` from elsewhere removed it
                break
        await net.close()
        _say("[green]network removed[/]")
        return 0

    return run(main())


async def _up_embedded(loaded: TopologyFile, state_path: Path, port: int, metrics: Address | None) -> int:
    from ..api.host import Host
    from ..deploy.daemons.host import echo
    from ..runtime.aio import EmbeddedNetwork, calm_collector
    from ..runtime.prometheus import MetricsEndpoint

    # The CA and every credential live beside the state file (owner-only); the controller
    # listens on a fixed port if asked (so programs can be pointed at it), and plain-named
    # objects are served only where the topology allows -- except on the network `up` runs
    # without a file, a network to try things on: there a first `scaffold publish NAME` works.
    net = EmbeddedNetwork(
        loaded.topology,
        credentials_dir=credentials_dir(state_path),
        open_binding=not loaded.path,
        controller_address=("127.0.0.1", port),
    )
    stop = _wait_for_signal()
    await net.start()
    calm_collector()  # the network's nodes must not stop together for a full collection
    endpoint = None if metrics is None else MetricsEndpoint(net.metric_batches, metrics)
    try:
        if endpoint is not None:
            endpoint.start()
        for node in net.nodes.values():
            node.stats_interval = 1.0
            node.send_stats()
        hosts = {
            name: Host(net, net.host(name)) for name, node in net.nodes.items() if node.core.role == "host"
        }
        for obj in loaded.topology.objects:
            for replica, weight in obj.replicas:
                await hosts[replica].start_server(
                    echo,
                    obj.name,
                    weight=weight,
                    resumable=obj.resumable,
                    policy=obj.policy,
                    capacity=obj.capacity_of(replica),
                )
        state = NetworkState(
            name=loaded.name,
            mode="embedded",
            controller=net.controller.address,
            run_id=os.urandom(3).hex(),
            topology_file=loaded.path,
            pid=os.getpid(),
            created=time.time(),
            nodes={
                name: NodeState(name, node.core.role, dc=loaded.topology.dc_of(name), address=node.address)
                for name, node in net.nodes.items()
            },
            credentials=str(credentials_dir(state_path)),
            metrics=None if endpoint is None else endpoint.address,
        )
        save_state(state, state_path)
        address = net.controller.address
        served = ", ".join(o.name for o in loaded.topology.objects) or "nothing yet (`scaffold publish`)"
        _say(
            f"[green]network {loaded.name!r} is up[/] (embedded, {len(net.nodes)} nodes); "
            f"controller {address[0]}:{address[1]}; serving {served}; state {state_path}"
            + (f"; metrics {endpoint.url}" if endpoint is not None else "")
            + ". Ctrl-C removes it."
        )
        await stop.wait()
    finally:
        if endpoint is not None:
            endpoint.close()
        await net.close()
        with contextlib.suppress(ConfigError):
            if load_state(state_path).pid == os.getpid():
                remove_state(state_path)
    _say("[green]network removed[/]")
    return 0


def _down(args: argparse.Namespace) -> int:
    state_path = Path(args.state)
    state = load_state(state_path)
    if state.mode == "netns":
        from ..deploy.netns.build import teardown

        problems = teardown(state, state_path, keep_logs=args.keep_logs)
        if problems:
            raise ScaffoldError("could not remove: " + ", ".join(problems))
        _say(f"[green]removed network {state.name!r}[/] (namespaces sc{state.run_id}-*)")
        return 0
    # embedded: the `scaffold up` process owns everything; ask it to stop
    if state.pid and state.pid != os.getpid() and Path(f"/proc/{state.pid}").exists():
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{state.pid}").exists() and state_path.exists():
            time.sleep(0.05)
    remove_state(state_path)
    _say(f"[green]removed network {state.name!r}[/]")
    return 0


# -- status --------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from ..runtime.aio import run

    controller, credentials = controller_access(args)

    async def fetch() -> dict[str, Any]:
        result: dict[str, Any] = await admin.call(controller, commands.Status(), credentials=credentials)
        result["counters"] = await admin.call(controller, commands.Counters(), credentials=credentials)
        return result

    status = run(fetch())
    if args.json:
        json.dump(status, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_status(status, Console())
    return 0


def print_status(status: dict[str, Any], console: Console) -> None:
    """Render the controller's status and the nodes' counters as tables (every text from
    the network is escaped: never read as markup)."""
    counters: dict[str, Any] = status.get("counters", {})
    objects = Table(title="Objects and replicas", title_justify="left")
    for column in ("object", "name", "policy", "replica", "dc", "weight", "capacity", "alive"):
        objects.add_column(column)
    for obj in status.get("objects", []):
        demand = obj.get("demand") or {}
        policy = str(obj.get("policy", ""))
        if demand:  # measured new flows/s per source DC, for an object that spills (§3.5)
            policy += " (demand " + ", ".join(f"{dc} {rate}/s" for dc, rate in demand.items()) + ")"
        for k, replica in enumerate(obj["replicas"]):
            capacity = replica.get("capacity") or 0
            objects.add_row(
                escape(obj["object"][:16]) + "…" if k == 0 else "",
                escape(obj["name"]) if k == 0 else "",
                escape(policy) if k == 0 else "",
                escape(replica["host"]),
                escape(replica["dc"]),
                str(replica["weight"]),
                f"{capacity:g}/s" if capacity else "",
                "yes" if replica["alive"] else "[red]no[/]",
            )
    console.print(objects)
    hosts = Table(title="Hosts", title_justify="left")
    for column in ("host", "host id", "dc", "gateway", "alive", "address", "drops"):
        hosts.add_column(column)
    for host in status.get("hosts", []):
        drops = sum(counters.get(host["name"], {}).get("drops", {}).values())
        address = host["address"]
        hosts.add_row(
            escape(host["name"]),
            str(host["host_id"]),
            escape(host["dc"]),
            escape(host["gateway"]),
            "yes" if host["alive"] else "[red]no[/]",
            escape(f"{address[0]}:{address[1]}") if address else "",
            str(drops),
        )
    console.print(hosts)
    switches = Table(title="Switches", title_justify="left")
    for column in ("switch", "role", "dc", "connected", "tables sent", "applied", "forwarded", "drops"):
        switches.add_column(column)
    for sw in status.get("switches", []):
        c = counters.get(sw["name"], {})
        drops = c.get("drops", {})
        switches.add_row(
            escape(sw["name"]),
            escape(sw["role"]),
            escape(sw["dc"]),
            "yes" if sw["connected"] else "[red]no[/]",
            f"v{sw['version']}",
            f"v{c['version']}" if c else "?",
            str(c.get("forwarded", "?")),
            escape(", ".join(f"{k}={v}" for k, v in sorted(drops.items()))) or "0",
        )
    console.print(switches)
    links = Table(title="Backbone links", title_justify="left")
    for column in ("link", "delay", "up"):
        links.add_column(column)
    for link in status.get("links", []):
        links.add_row(
            escape(f"{link['a']}-{link['b']}"),
            f"{link['delay_ms']:g} ms",
            "yes" if link["up"] else "[red]no[/]",
        )
    console.print(links)
    replicas = status.get("controllers")
    if replicas:
        table = Table(title="Controller replicas", title_justify="left")
        for column in ("replica", "address", "pid", "leads"):
            table.add_column(column)
        for r in replicas:
            table.add_row(
                r["name"], f"{r['address'][0]}:{r['address'][1]}", str(r["pid"]), "yes" if r["leader"] else ""
            )
        console.print(table)
        console.print(f"etcd: {', '.join(status.get('etcd', []))}")


# -- faults --------------------------------------------------------------------------------


def _fault(args: argparse.Namespace) -> int:
    from ..runtime.aio import run

    state = load_state(args.state)
    if state.mode == "netns":
        return run(_fault_netns(args, state))
    return run(_fault_embedded(args, state))


def _backbone(state_links: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(link["a"], link["b"]) for link in state_links]


def _partition_cut(groups: list[str], links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    side: dict[str, int] = {}
    for k, group in enumerate(groups):
        for dc in group.split(","):
            if dc:
                side[dc] = k
    known = {dc for link in links for dc in link}
    unknown = set(side) - known
    if unknown:
        raise UsageError(f"no datacenter on the backbone called {', '.join(sorted(unknown))}")
    rest = len(groups)
    return [(a, b) for a, b in links if side.get(a, rest) != side.get(b, rest)]


async def _fault_netns(args: argparse.Namespace, state: NetworkState) -> int:
    from ..deploy.netns.network import NetnsNetwork

    net = NetnsNetwork.attach(args.state)
    kind = args.fault
    if kind in ("link-down", "link-up"):
        net.link_down(args.a, args.b) if kind == "link-down" else net.link_up(args.a, args.b)
    elif kind in ("partition", "heal"):
        status = await admin.call(state.controller_addresses, commands.Status(), credentials=state.operator())
        links = _backbone(status["links"])
        cut = _partition_cut(args.groups, links) if kind == "partition" else links
        for a, b in cut:
            net.link_down(a, b) if kind == "partition" else net.link_up(a, b)
        what = ", ".join(f"{a}-{b}" for a, b in cut) or "nothing"
        _say(f"{'cut' if kind == 'partition' else 'restored'}: {what}")
    elif kind == "loss":
        net.set_loss(args.a, args.b, args.percent)
    elif kind == "delay":
        await net.set_delay(args.a, args.b, args.ms)
    elif kind == "kill":
        net.kill(args.node)
    elif kind == "restart":
        await net.restart(args.node)
    _say(f"[green]done[/]: {kind}")
    return 0


async def _fault_embedded(args: argparse.Namespace, state: NetworkState) -> int:
    """Embedded: our link emulation (``LinkSettings``) and the controller's link state."""
    kind = args.fault
    controller = state.controller_addresses
    operator = state.operator()
    status = await admin.call(controller, commands.Status(), credentials=operator)
    dcs = set(status["datacenters"])

    async def set_link(a: str, b: str, up: bool) -> None:
        await admin.call(controller, commands.LinkSettings(a, b, up=up), credentials=operator)
        if a in dcs and b in dcs:  # nothing detects an emulated cut: tell the controller
            await admin.call(controller, commands.Link(a, b, up), credentials=operator)

    if kind in ("link-down", "link-up"):
        await set_link(args.a, args.b, kind == "link-up")
    elif kind in ("partition", "heal"):
        links = _backbone(status["links"])
        cut = _partition_cut(args.groups, links) if kind == "partition" else links
        for a, b in cut:
            await set_link(a, b, kind == "heal")
    elif kind == "loss":
        if not 0 <= args.percent <= 100:
            raise UsageError(f"loss must be between 0 and 100 %, got {args.percent}")
        await admin.call(
            controller, commands.LinkSettings(args.a, args.b, loss=args.percent / 100), credentials=operator
        )
    elif kind == "delay":
        await admin.call(
            controller, commands.LinkSettings(args.a, args.b, delay_ms=args.ms), credentials=operator
        )
    else:
        raise UsageError(f"`fault {kind}` needs a network started with `scaffold up --netns`")
    _say(f"[green]done[/]: {kind}")
    return 0
