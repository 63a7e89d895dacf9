"""A SCAFFOLD network with every node in its own network namespace (docs/deployment.md).

Layout of one run (``RID`` = 6 random hex digits, ``X`` = a free second octet of 10/8)::

    root namespace ── aRID ═══ aRIDb ─┐          management namespace scRID-mgmt
    (10.X.63.254/18, + a /32 route    │  bridge brRID:  every node's mRIDk, 10.X.0.0/18
     to every node IP via its         │
     management IP)                   ├── mRIDkb ═══ mRIDk  scRID-controller (10.X.0.1)
                                      ├── mRIDkb ═══ mRIDk  scRID-east-fs1 ...
    data plane, along Topology.node_links(): one veth pair per link, /31 from 10.X.128.0/17
         scRID-east-h1 ── vRIDka ═══ vRIDkb ── scRID-east-fs1 ── ... ── scRID-west-fs1

* Each node has a **node IP** (``10.X.64.0/18``, a /32 on the namespace's ``lo``) that it
  announces to the controller; its UDP socket binds ``0.0.0.0:7000``. Each namespace has a
  /32 route to each neighbour's node IP via that link's peer address, with ``src`` its own
  node IP: the kernel routes the underlay, and only between neighbours, so a link set down
  really cuts the path (the SCAFFOLD switches, not the kernel, forward between links; IP
  forwarding stays off).
* The control plane (TCP to the controller) uses the management bridge, so cutting a data
  link never cuts a node off its controller. The root namespace reaches the bridge through
  one veth (for ``scaffold status``, ``fault`` and hosts that join from outside, which reach
  their gateway's node IP through it).
* Delay is our own egress stage in each node process (``--link PEER=MS``, changed with
  ``LinkSettings`` by ``scaffold fault delay``): the kernels have no ``netem``. Loss is an
  nftables ``numgen random mod 100 < P drop`` rule on the sender's device; bandwidth a
  ``tbf`` qdisc on both ends; link-down is ``ip link set DEV down`` on one end (the peer loses
  carrier). Border switches watch their backbone ports and report changes to the controller.

Everything created is written to the state file before it is created, and ``teardown``
removes exactly that: the processes (by pid and start time), then the namespaces (which takes
their veths, bridge, routes and nftables rules with them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...api.host import Host
from ...api.join import join
from ...core.topology import Topology
from ...errors import ConfigError, ScaffoldError, UsageError
from ...runtime import admin
from ..state_file import (
    DEFAULT_STATE,
    LinkState,
    NetworkState,
    NodeState,
    load_state,
    remove_state,
    save_state,
)
from ..topology_file import TopologyFile, dump_topology
from . import kernel

__all__ = ["CONTROL_PORT", "DATA_PORT", "NetnsNetwork", "entered", "leftovers", "teardown"]

DATA_PORT = 7000
CONTROL_PORT = 7400
PYTHON = sys.executable
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class _Octets:
    second: int

    def mgmt(self, index: int) -> str:  # 10.X.0.0/18; index 1 = controller
        return f"10.{self.second}.{index >> 8}.{index & 255}"

    @property
    def access(self) -> str:
        return f"10.{self.second}.63.254"

    def node(self, index: int) -> str:  # 10.X.64.0/18
        return f"10.{self.second}.{64 + (index >> 8)}.{index & 255}"

    def link(self, index: int, end: int) -> str:  # 10.X.128.0/17, a /31 per link
        value = 2 * index + end
        return f"10.{self.second}.{128 + (value >> 8)}.{value & 255}"


def _free_second_octet() -> int:
    """A second octet X such that no route of this namespace overlaps 10.X.0.0/16."""
    used = []
    for line in kernel.run(["ip", "-4", "route", "show", "table", "all"], check=False).splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "throw"):
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(word if word != "default" else "0.0.0.0/0", strict=False))
    for _ in range(200):
        second = 100 + secrets.randbelow(150)
        net = ipaddress.ip_network(f"10.{second}.0.0/16")
        if not any(net.overlaps(u) and u.prefixlen > 0 for u in used):
            return second
    raise ScaffoldError("no free 10.X.0.0/16 range for the namespace testbed")


def plan(topology: Topology, name: str, run_id: str, second: int, run_dir: str) -> NetworkState:
    """Names, addresses and links of a run (pure: creates nothing)."""
    octets = _Octets(second)
    if len(topology.nodes()) > 16000:
        raise ConfigError("the namespace testbed takes at most 16000 nodes")
    nodes: dict[str, NodeState] = {}
    nodes[topology.controller] = NodeState(
        topology.controller,
        "controller",
        address=(octets.mgmt(1), CONTROL_PORT),
        namespace=f"sc{run_id}-{topology.controller}",
        mgmt_ip=octets.mgmt(1),
    )
    gateways = {h.name: h.gateway for h in topology.hosts()}
    for index, (node, role) in enumerate(topology.nodes().items(), start=2):
        node_ip = octets.node(index)
        nodes[node] = NodeState(
            node,
            role,
            dc=topology.dc_of(node),
            gateway=gateways.get(node, ""),
            address=(node_ip, DATA_PORT),
            namespace=f"sc{run_id}-{node}",
            node_ip=node_ip,
            mgmt_ip=octets.mgmt(index),
        )
    backbone = {(l.a, l.b): l for l in topology.backbone}
    links = []
    for k, link in enumerate(topology.node_links()):
        dc_a, dc_b = topology.dc_of(link.a), topology.dc_of(link.b)
        links.append(
            LinkState(
                link.a,
                link.b,
                f"v{run_id}{k}a",
                f"v{run_id}{k}b",
                octets.link(k, 0),
                octets.link(k, 1),
                backbone=dc_a != dc_b and ((dc_a, dc_b) in backbone or (dc_b, dc_a) in backbone),
                delay=link.delay,
                loss=link.loss,
                bandwidth=link.bandwidth,
            )
        )
    return NetworkState(
        name=name,
        mode="netns",
        controller=(octets.mgmt(1), CONTROL_PORT),
        run_id=run_id,
        pid=os.getpid(),
        created=time.time(),
        nodes=nodes,
        links=links,
        namespaces=[n.namespace for n in nodes.values()] + [f"sc{run_id}-mgmt"],
        mgmt_namespace=f"sc{run_id}-mgmt",
        access_dev=f"a{run_id}",
        access_ip=octets.access,
        run_dir=run_dir,
    )


def _mgmt_dev(state: NetworkState, node: NodeState, bridge_side: bool = False) -> str:
    index = list(state.nodes).index(node.name)
    return f"m{state.run_id}{index}{'b' if bridge_side else ''}"


def _loss_script(state: NetworkState, namespace: str) -> str:
    rules = [
        f'    oifname "{key.split("/", 1)[1]}" numgen random mod 100 < {round(percent)} counter drop'
        for key, percent in sorted(state.losses.items())
        if key.split("/", 1)[0] == namespace and round(percent) > 0
    ]
    body = "\n".join(rules)
    return (
        "table inet scaffold\n"
        "delete table inet scaffold\n"
        "table inet scaffold {\n  chain loss {\n    type filter hook output priority 0; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


def _tbf(dev: str, bandwidth: float) -> list[str]:
    rate = max(8000, int(bandwidth))
    burst = max(32 * 1024, rate // 8 // 100)  # 10 ms at line rate, at least 32 KiB
    return [
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        f"{rate}bit",
        "burst",
        str(burst),
        "latency",
        "50ms",
    ]


def _node_command(
    state: NetworkState, node: NodeState, topology: Topology, topology_path: str, log_debug: bool
) -> list[str]:
    base = [PYTHON, "-m", "scaffold"]
    if node.role == "controller":
        return [
            *base,
            "controller",
            "--name",
            node.name,
            "--topology",
            topology_path,
            "--listen",
            f"0.0.0.0:{CONTROL_PORT}",
            "--store",
            str(Path(state.run_dir) / "controller-store.json"),
        ]
    controller = f"{state.controller[0]}:{state.controller[1]}"
    common = [
        "--name",
        node.name,
        "--controller",
        controller,
        "--listen",
        f"0.0.0.0:{DATA_PORT}",
        "--advertise",
        node.node_ip,
    ]
    for link in state.links:
        if node.name in (link.a, link.b) and link.delay > 0:
            peer = link.b if link.a == node.name else link.a
            common += ["--link", f"{peer}={link.delay * 1000:g}"]
    if log_debug:
        common.append("--debug")
    if node.role == "host":
        serve = [
            f"--serve={obj.name}:{weight}{':resume' if obj.resumable else ''}"
            for obj in topology.objects
            for host, weight in obj.replicas
            if host == node.name
        ]
        return [*base, "host", *common, "--gateway", node.gateway, *serve]
    argv = [
        *base,
        "switch",
        *common,
        "--role",
        "flow" if node.role == "flow-switch" else "object",
        "--dc",
        node.dc,
    ]
    for link in state.links:
        if link.backbone and node.name in (link.a, link.b):
            peer, dev = (link.b, link.dev_a) if link.a == node.name else (link.a, link.dev_b)
            argv += ["--port", f"{peer}={dev}"]
    return argv


def teardown(
    state: NetworkState, state_path: str | Path | None = None, *, keep_logs: bool = False
) -> list[str]:
    """Remove exactly what ``state`` lists: stop its processes (SIGTERM, then SIGKILL), delete
    its namespaces (with their veths, bridge, routes and rules), the run directory if ``up``
    made it (unless ``keep_logs``), and the state file. Returns what could not be removed
    (empty when all went)."""
    problems: list[str] = []
    nodes = list(state.nodes.values())
    # Data-plane nodes first, the controller last, so nodes do not log a lost controller.
    nodes.sort(key=lambda n: n.role == "controller")
    for node in nodes:
        if node.pid:
            kernel.stop_process(node.pid, node.start_time, grace=3.0)
            if kernel.alive(node.pid, node.start_time):
                problems.append(f"process {node.pid} ({node.name})")
    existing = set(kernel.namespaces())
    ours = [ns for ns in state.namespaces if ns in existing]
    with contextlib.suppress(kernel.KernelError):
        kernel.ip_batch([f"netns del {ns}" for ns in ours], check=False)
    left = set(kernel.namespaces())
    for ns in ours:
        if ns in left:
            try:
                kernel.run(["ip", "netns", "del", ns])
            except kernel.KernelError as exc:
                problems.append(f"namespace {ns}: {exc}")
    if state.access_dev and Path(f"/sys/class/net/{state.access_dev}").exists():
        with contextlib.suppress(kernel.KernelError):
            kernel.run(["ip", "link", "del", state.access_dev])
    if state.run_dir_temporary and not keep_logs and state.run_dir:
        shutil.rmtree(state.run_dir, ignore_errors=True)
    if state_path is not None:
        with contextlib.suppress(OSError):
            current = load_state(state_path)
            if current.run_id == state.run_id:
                remove_state(state_path)
    return problems


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run this thread in network namespace ``namespace`` (``setns``) for the block: sockets
    created inside belong to it for good. The block should create sockets and return quickly:
    other asyncio tasks that run meanwhile are in that namespace too.

    Raises:
        KernelError: the namespace does not exist or ``setns`` failed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except OSError as exc:
        raise kernel.KernelError(f"no namespace {namespace!r}: {exc.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise kernel.KernelError(f"setns({namespace}): {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail for our own
                raise kernel.KernelError(f"setns back: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(target)
        os.close(home)


def leftovers(run_id: str) -> list[str]:
    """Namespaces and root-namespace interfaces of run ``run_id`` that still exist."""
    out = [f"namespace {ns}" for ns in kernel.namespaces() if ns.startswith(f"sc{run_id}-")]
    with contextlib.suppress(OSError):
        out += [f"interface {dev}" for dev in os.listdir("/sys/class/net") if run_id in dev]
    return out


class NetnsNetwork:
    """Start, drive and remove a network with one namespace and one process per node.

    ``async with NetnsNetwork(topology_file) as net:`` -- or ``await net.start()`` and
    ``await net.close()``. The state file (``state_path``) is written before anything is
    created, so ``scaffold down`` can always remove what exists.
    """

    def __init__(
        self,
        source: TopologyFile | Topology | str | Path,
        *,
        state_path: str | Path = DEFAULT_STATE,
        run_dir: str | Path | None = None,
        debug: bool = False,
        external_hosts: frozenset[str] | set[str] = frozenset(),
        host_options: list[str] | None = None,
        extra_links: list[tuple[str, str]] | None = None,
    ) -> None:
        """``external_hosts`` get their namespace and links but no process: a program joins
        as them with ``join_host`` (say, the demo's clients). ``host_options`` are extra flags
        of every host daemon (``["--service", "pattern"]``). ``extra_links`` are spare links
        (host, flow switch) that are not in the topology: a veth with addresses and routes,
        unused until the host is re-attached there (``migrate-host``, ``move-host``)."""
        from ..topology_file import load_topology

        if isinstance(source, Topology):
            source = TopologyFile("scaffold", source, "")
        self.loaded = source if isinstance(source, TopologyFile) else load_topology(source)
        self.topology = self.loaded.topology
        unknown = set(external_hosts) - {h.name for h in self.topology.hosts()}
        if unknown:
            raise ConfigError(
                f"external hosts that are not hosts of the topology: {', '.join(sorted(unknown))}"
            )
        self.state_path = Path(state_path)
        self.debug = debug
        self.external_hosts = frozenset(external_hosts)
        self.host_options = list(host_options or [])
        nodes = self.topology.nodes()
        for a, b in extra_links or []:
            if a not in nodes or b not in nodes or {nodes[a], nodes[b]} != {"host", "flow-switch"}:
                raise ConfigError(f"extra link {a}-{b}: want a host and a flow switch of the topology")
        self.extra_links = list(extra_links or [])
        self._run_dir_given = run_dir
        self.state: NetworkState | None = None
        self._procs: dict[str, Any] = {}

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> NetnsNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def controller(self) -> tuple[str, int]:
        return self._state.controller

    @property
    def _state(self) -> NetworkState:
        if self.state is None:
            raise UsageError("the namespace network is not started")
        return self.state

    async def start(self, timeout: float = 60.0) -> None:
        """Create namespaces, links and addresses, start every node, wait until the network
        is up (every switch has tables, every host and replica is registered).

        Raises:
            KernelError: a namespace, link or rule could not be created (all is removed).
            TimeoutError: the network did not come up within ``timeout`` (all is removed).
        """
        reason = kernel.available()
        if reason is not None:
            raise ScaffoldError(f"cannot run the namespace testbed: {reason}")
        run_id = secrets.token_hex(3)
        run_dir = Path(self._run_dir_given or tempfile.mkdtemp(prefix=f"scaffold-{run_id}-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.loaded.path:  # the controller daemon reads the topology from a file
            path = run_dir / "topology.toml"
            path.write_text(dump_topology(self.topology, self.loaded.name))
            self.loaded = TopologyFile(self.loaded.name, self.topology, str(path))
        second = _free_second_octet()
        self.state = plan(self.topology, self.loaded.name, run_id, second, str(run_dir))
        octets = _Octets(second)
        for a, b in self.extra_links:
            k = len(self.state.links)
            self.state.links.append(
                LinkState(a, b, f"v{run_id}{k}a", f"v{run_id}{k}b", octets.link(k, 0), octets.link(k, 1))
            )
        self.state.topology_file = self.loaded.path
        self.state.run_dir_temporary = self._run_dir_given is None
        save_state(self.state, self.state_path)
        try:
            await asyncio.to_thread(self._create)
            self._spawn(self.state.nodes[self.topology.controller])
            await self._wait(self._controller_up, 15.0, "the controller to listen")
            for node in self.state.nodes.values():
                if node.role != "controller" and node.name not in self.external_hosts:
                    self._spawn(node)
            save_state(self.state, self.state_path)
            await self.wait_ready(timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every process and remove every namespace of this run (idempotent)."""
        if self.state is None:
            return
        state = self._merged_state()
        problems = await asyncio.to_thread(teardown, state, self.state_path)
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        self.state = None
        if problems:
            raise ScaffoldError("could not remove: " + ", ".join(problems))

    def _merged_state(self) -> NetworkState:
        """Our state, with pids that other commands (``fault restart``) wrote to the file."""
        state = self._state
        with contextlib.suppress(ConfigError):
            saved = load_state(self.state_path)
            if saved.run_id == state.run_id:
                for name, node in saved.nodes.items():
                    if name in state.nodes and node.pid and node.pid != state.nodes[name].pid:
                        state.nodes[name].pid, state.nodes[name].start_time = node.pid, node.start_time
        return state

    # -- creating --------------------------------------------------------------------------

    def _create(self) -> None:
        state = self._state
        mgmt = state.mgmt_namespace
        bridge = f"br{state.run_id}"
        root: list[str] = [f"netns add {ns}" for ns in state.namespaces]
        root.append(f"link add {bridge} netns {mgmt} type bridge")
        root.append(f"link add {state.access_dev} type veth peer name {state.access_dev}b netns {mgmt}")
        for node in state.nodes.values():
            root.append(
                f"link add {_mgmt_dev(state, node)} netns {node.namespace} type veth "
                f"peer name {_mgmt_dev(state, node, True)} netns {mgmt}"
            )
        for link in state.links:
            ns_a, ns_b = state.nodes[link.a].namespace, state.nodes[link.b].namespace
            root.append(f"link add {link.dev_a} netns {ns_a} type veth peer name {link.dev_b} netns {ns_b}")
        kernel.ip_batch(root)
        # management namespace: the bridge and its ports
        lines = ["link set lo up", f"link set {bridge} up", f"link set {state.access_dev}b master {bridge}"]
        lines.append(f"link set {state.access_dev}b up")
        for node in state.nodes.values():
            lines += [
                f"link set {_mgmt_dev(state, node, True)} master {bridge}",
                f"link set {_mgmt_dev(state, node, True)} up",
            ]
        kernel.ip_batch(lines, mgmt)
        # root namespace: the access veth and a route to every node IP via its management IP
        lines = [f"addr add {state.access_ip}/18 dev {state.access_dev}", f"link set {state.access_dev} up"]
        lines += [
            f"route add {n.node_ip}/32 via {n.mgmt_ip} dev {state.access_dev}"
            for n in state.nodes.values()
            if n.node_ip
        ]
        kernel.ip_batch(lines)
        # every node namespace
        for node in state.nodes.values():
            dev = _mgmt_dev(state, node)
            lines = ["link set lo up", f"addr add {node.mgmt_ip}/18 dev {dev}", f"link set {dev} up"]
            if node.node_ip:
                lines += [
                    f"addr add {node.node_ip}/32 dev lo",
                    f"route add {state.access_ip}/32 dev {dev} src {node.node_ip}",
                ]
            for link in state.links:
                if node.name not in (link.a, link.b):
                    continue
                mine, theirs = (link.dev_a, link.ip_a), (link.dev_b, link.ip_b)
                peer = state.nodes[link.b if link.a == node.name else link.a]
                if link.a != node.name:
                    mine, theirs = theirs, mine
                lines += [
                    f"addr add {mine[1]}/31 dev {mine[0]}",
                    f"link set {mine[0]} up",
                    f"route add {peer.node_ip}/32 via {theirs[1]} dev {mine[0]} src {node.node_ip}",
                ]
            kernel.ip_batch(lines, node.namespace)
        for link in state.links:
            for name, dev in ((link.a, link.dev_a), (link.b, link.dev_b)):
                ns = state.nodes[name].namespace
                if link.bandwidth:
                    kernel.run(["ip", "netns", "exec", ns, *_tbf(dev, link.bandwidth)])
                if link.loss:
                    state.losses[f"{ns}/{dev}"] = link.loss * 100
        for ns in {key.split("/", 1)[0] for key in state.losses}:
            kernel.nft(ns, _loss_script(state, ns))

    def _spawn(self, node: NodeState, argv: list[str] | None = None, log_name: str = "") -> None:
        import subprocess

        state = self._state
        if argv is None:
            topology_path = self.loaded.path
            if not topology_path or not Path(topology_path).exists():
                raise UsageError(
                    "the namespace testbed needs the topology as a file (the controller reads it)"
                )
            command = _node_command(state, node, self.topology, topology_path, self.debug)
            if node.role == "host":
                command += self.host_options
            argv = ["ip", "netns", "exec", node.namespace, *command]
        log_path = Path(state.run_dir) / f"{log_name or node.name}.log"
        with open(log_path, "ab") as log:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env
            )
        self._procs[node.name] = proc
        node.pid = proc.pid
        node.command = argv
        deadline = time.monotonic() + 2.0
        # ``ip netns exec`` execs the node in the same process: wait for its start time.
        node.start_time = kernel.process_start_time(proc.pid)
        while node.start_time == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
            node.start_time = kernel.process_start_time(proc.pid)
        # ... and until it has entered its namespace, so callers see it there.
        home = os.stat("/proc/self/ns/net").st_ino
        while time.monotonic() < deadline:
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino != home:
                    break
            except OSError:
                break  # it already exited; its log says why
            time.sleep(0.002)

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, condition: Any, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await condition():
                return
            if loop.time() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.0f} s waiting for {what} (logs: {self._state.run_dir})"
                )
            await asyncio.sleep(0.05)

    async def _controller_up(self) -> bool:
        try:
            await admin.call(self.controller, "status", timeout=1.0)
        except ScaffoldError:
            return False
        return True

    async def ready(self) -> bool:
        """Every switch connected with tables applied, every host and replica registered."""
        try:
            status = await admin.call(self.controller, "status", timeout=2.0)
            counters = await admin.call(self.controller, "counters", timeout=2.0)
        except ScaffoldError:
            return False
        hosts = {h["name"]: h for h in status["hosts"]}
        for node in self._state.nodes.values():
            if node.name in self.external_hosts:
                continue
            if node.role == "host" and not (node.name in hosts and hosts[node.name]["alive"]):
                return False
        for switch in status["switches"]:
            if (
                not switch["connected"]
                or counters.get(switch["name"], {}).get("version", 0) < switch["version"]
            ):
                return False
        registered = {(r["host"], o["name"]) for o in status["objects"] for r in o["replicas"] if r["alive"]}
        return all(
            (host, obj.name) in registered
            for obj in self.topology.objects
            for host, _ in obj.replicas
            if host not in self.external_hosts
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Raises ``TimeoutError`` if the network is not ready within ``timeout``."""
        await self._wait(self.ready, timeout, "the network to come up")

    # -- driving ---------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The controller's status plus every node's counters (``counters``)."""
        result: dict[str, Any] = await admin.call(self.controller, "status")
        result["counters"] = await admin.call(self.controller, "counters")
        return result

    def pid(self, node: str) -> int:
        return self._state.node(node).pid

    def alive(self, node: str) -> bool:
        state = self._state.node(node)
        return kernel.alive(state.pid, state.start_time)

    def kill(self, node: str) -> None:
        """SIGKILL the process of ``node`` (a crash: no goodbye to anyone)."""
        state = self._state.node(node)
        kernel.stop_process(state.pid, state.start_time, kill=True, grace=2.0)
        proc = self._procs.get(node)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)

    async def restart(self, node: str) -> None:
        """Start ``node``'s process again (after ``kill``), in the same namespace."""
        state = self._state.node(node)
        if state.role == "program":
            raise UsageError(f"{node} is a program started with popen; start it again with popen")
        if kernel.alive(state.pid, state.start_time):
            raise UsageError(f"{node} is still running (pid {state.pid})")
        self._spawn(state)
        save_state(self._state, self.state_path)

    async def join_host(self, node: str, **options: Any) -> Host:
        """Join the network as host ``node`` from this process, over ``node``'s own veth:
        the host's UDP socket and control connection are opened inside its namespace (its
        control connection reopens from this namespace, through the management bridge, if the
        controller restarts). Meant for ``external_hosts``; ``options`` go to ``join``.

        Raises:
            ConfigError: ``node`` is not a host of the topology.
        """
        state = self._state.node(node)
        if state.role != "host":
            raise ConfigError(f"{node!r} is not a host")
        # Sockets belong to the namespace they were created in; switch only around creation.
        with entered(state.namespace):
            return await join(
                node,
                gateway=state.gateway,
                controller=self.controller,
                bind=("0.0.0.0", 0),
                advertise=state.node_ip,
                **options,
            )

    def popen(self, node: str, argv: list[str], *, log_name: str | None = None) -> int:
        """Run a program in ``node``'s namespace (a client workload, say): its process is
        recorded in the state file and stopped with the network. Returns its pid; its output
        goes to ``LOG_NAME.log`` in the run directory.

        In a host's namespace a program can join the network as another host through the
        same gateway, over the same veth: ``join(name, gateway=..., controller=net.controller,
        bind=("0.0.0.0", 0), advertise=node_ip)`` with ``node_ip`` that host's node IP.

        Raises:
            ConfigError: no such node.
        """
        state = self._state
        target = state.node(node)
        count = sum(1 for name in state.nodes if name.startswith(f"{node}:"))
        entry = NodeState(f"{node}:{count + 1}", "program", dc=target.dc, namespace=target.namespace)
        entry.node_ip, entry.mgmt_ip = target.node_ip, target.mgmt_ip
        state.nodes[entry.name] = entry
        argv = ["ip", "netns", "exec", target.namespace, *argv]
        self._spawn(entry, argv, log_name or entry.name.replace(":", "-"))
        save_state(state, self.state_path)
        return entry.pid

    def _ends(self, a: str, b: str) -> LinkState:
        state = self._state
        topo = self.topology
        names = {dc.name for dc in topo.datacenters}
        if a in names and b in names:
            a, b = topo.datacenter(a).border, topo.datacenter(b).border
        return state.link(a, b)

    def link_down(self, a: str, b: str) -> None:
        """Set the link between nodes (or datacenters) ``a`` and ``b`` down: its ``a`` end
        goes administratively down, the other end loses carrier."""
        self._set_link(a, b, False)

    def link_up(self, a: str, b: str) -> None:
        self._set_link(a, b, True)

    def _set_link(self, a: str, b: str, up: bool) -> None:
        link = self._ends(a, b)
        state = self._state
        for name, dev in ((link.a, link.dev_a), (link.b, link.dev_b)):
            kernel.ip_batch([f"link set {dev} {'up' if up else 'down'}"], state.nodes[name].namespace)
        if up:  # routes via a device go away with it; put them back
            for name, dev, peer_ip, peer in (
                (link.a, link.dev_a, link.ip_b, link.b),
                (link.b, link.dev_b, link.ip_a, link.a),
            ):
                node = state.nodes[name]
                route = f"route replace {state.nodes[peer].node_ip}/32 via {peer_ip} dev {dev}"
                kernel.ip_batch([f"{route} src {node.node_ip}"], node.namespace)
        link.up = up
        save_state(state, self.state_path)

    def set_loss(self, a: str, b: str, percent: float) -> None:
        """Drop ``percent`` % of the packets sent either way on a link (nftables)."""
        if not 0 <= percent <= 100:
            raise UsageError(f"loss must be between 0 and 100 %, got {percent}")
        link = self._ends(a, b)
        state = self._state
        for name, dev in ((link.a, link.dev_a), (link.b, link.dev_b)):
            ns = state.nodes[name].namespace
            state.losses[f"{ns}/{dev}"] = percent
            kernel.nft(ns, _loss_script(state, ns))
        link.loss = percent / 100
        save_state(state, self.state_path)

    async def set_delay(self, a: str, b: str, ms: float) -> None:
        """Set the one-way delay of a link (the nodes' own egress stage, via the controller)."""
        link = self._ends(a, b)
        await admin.call(self.controller, "link-settings", a=link.a, b=link.b, delay_ms=ms)
        link.delay = ms / 1000
        save_state(self._state, self.state_path)

    @classmethod
    def attach(cls, state_path: str | Path = DEFAULT_STATE) -> NetnsNetwork:
        """Drive a network another process started (``scaffold fault``, ``down``).

        Raises:
            ConfigError: no state file, or it is not a namespace network's.
        """
        state = load_state(state_path)
        if state.mode != "netns":
            raise ConfigError(f"network {state.name!r} runs in {state.mode} mode, not netns")
        from ..topology_file import load_topology

        net = cls(load_topology(state.topology_file), state_path=state_path)
        net.state = state
        return net
