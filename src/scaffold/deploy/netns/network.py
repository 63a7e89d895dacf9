"""``NetnsNetwork``: a SCAFFOLD network with every node a process in its own network namespace
(docs/deployment.md §4).

It plans a run (``plan.py``: names and addresses), writes the plan to the state file before
creating anything, creates the kernel objects (``build.py``), starts one process per node
(``ip netns exec NS python -m scaffold ...``), waits until the network is up, and drives
faults: SIGKILL and restart by pid, links set down, nftables loss, delay through the
controller. ``close`` (and ``scaffold down``, through ``build.teardown``) removes exactly
what the state file lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...api.host import Host
from ...api.join import join
from ...core.controller.commands import Counters, LinkSettings, Status
from ...core.topology import Topology
from ...errors import ConfigError, ScaffoldError, UsageError
from ...runtime import admin
from ...runtime.aio import wait_until
from ...runtime.tls import Credentials, CredentialStore
from ..state_file import (
    DEFAULT_STATE,
    LinkState,
    NetworkState,
    NodeState,
    credentials_dir,
    load_state,
    save_state,
)
from ..topology_file import TopologyFile, dump_topology
from . import kernel
from .build import create, loss_script, teardown
from .kernel import entered
from .plan import ETCD_CLIENT_PORT, Octets, free_second_octet, node_command, plan

__all__ = ["NetnsNetwork"]


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
        controllers: int = 1,
        etcd: list[str] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        """``external_hosts`` get their namespace and links but no process: a program joins
        as them with ``join_host`` (say, the demo's clients). ``host_options`` are extra flags
        of every host daemon (``["--service", "pattern"]``). ``extra_links`` are spare links
        (host, flow switch) that are not in the topology: a veth with addresses and routes,
        unused until the host is re-attached there (``migrate-host``, ``move-host``). With
        ``metrics_port`` every daemon serves Prometheus metrics on that port of its management
        address (``NodeState.metrics``). ``controllers`` > 1 replicates the controller on etcd:
        ``etcd`` lists an existing cluster; by default a member runs in each replica's namespace
        (docs/deployment.md §7)."""
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
        self.metrics_port = metrics_port
        self._run_dir_given = run_dir
        self.controllers = controllers
        self.etcd = list(etcd or [])
        self.state: NetworkState | None = None
        self._procs: dict[str, Any] = {}

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> NetnsNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def controller(self) -> list[tuple[str, int]]:
        """Every controller replica's address (one without replication)."""
        return self._state.controller_addresses

    def replicas(self) -> list[str]:
        """The names of the controller replicas."""
        return [n.name for n in self._state.nodes.values() if n.role == "controller"]

    @property
    def operator(self) -> Credentials:
        """The operator's credentials for this network's controller."""
        return self._state.operator()

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
        second = free_second_octet()
        self.state = plan(
            self.topology,
            self.loaded.name,
            run_id,
            second,
            str(run_dir),
            controllers=self.controllers,
            etcd=self.etcd,
        )
        octets = Octets(second)
        for a, b in self.extra_links:
            k = len(self.state.links)
            self.state.links.append(
                LinkState(a, b, f"v{run_id}{k}a", f"v{run_id}{k}b", octets.link(k, 0), octets.link(k, 1))
            )
        self.state.topology_file = self.loaded.path
        if self.metrics_port is not None:
            for node in self.state.nodes.values():
                if node.name not in self.external_hosts:
                    node.metrics = (node.mgmt_ip, self.metrics_port)
        self.state.run_dir_temporary = self._run_dir_given is None
        # Every node's certificate names the node IP it announces (docs/security.md).
        store = CredentialStore(credentials_dir(self.state_path))
        self.state.credentials = str(store.directory)
        for node in self.state.nodes.values():
            store.node(node.name, node.role, [node.node_ip] if node.node_ip else [])
        save_state(self.state, self.state_path)
        try:
            await asyncio.to_thread(create, self.state)
            if self.controllers > 1 and not self.etcd:
                self._start_etcd()
            for name in self.replicas():
                self._spawn(self.state.nodes[name])
            await self._wait(self._controller_up, 15.0, "the controller to listen")
            for node in list(self.state.nodes.values()):
                if (
                    node.role in ("host", "flow-switch", "object-switch")
                    and node.name not in self.external_hosts
                ):
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

    def _spawn(self, node: NodeState, argv: list[str] | None = None, log_name: str = "") -> None:
        import subprocess

        state = self._state
        if argv is None:
            topology_path = self.loaded.path
            if not topology_path or not Path(topology_path).exists():
                raise UsageError(
                    "the namespace testbed needs the topology as a file (the controller reads it)"
                )
            command = node_command(state, node, self.topology, topology_path, self.debug)
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

    def _start_etcd(self) -> None:
        """One etcd member in each controller replica's namespace, on its management IP."""
        from ..etcd import EtcdMember, member_command

        state = self._state
        token = f"sc{state.run_id}"
        members = [
            EtcdMember(
                f"{token}-{name}",
                state.nodes[name].mgmt_ip,
                ETCD_CLIENT_PORT,
                ETCD_CLIENT_PORT + 1,
                str(Path(state.run_dir) / f"etcd-{name}"),
            )
            for name in self.replicas()
        ]
        for name, member in zip(self.replicas(), members, strict=True):
            replica = state.nodes[name]
            entry = NodeState(f"{name}:etcd", "etcd", namespace=replica.namespace, mgmt_ip=replica.mgmt_ip)
            state.nodes[entry.name] = entry
            argv = ["ip", "netns", "exec", replica.namespace, *member_command(member, members, token)]
            self._spawn(entry, argv, f"{name}-etcd")
        save_state(state, self.state_path)

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        # Conditions ask the controller's admin port: poll it gently. The logs say why not.
        await wait_until(condition, timeout, f"{what} (logs: {self._state.run_dir})", interval=0.05)

    async def _controller_up(self) -> bool:
        try:
            await admin.call(self.controller, Status(), timeout=1.0, credentials=self.operator)
        except ScaffoldError:
            return False
        return True

    async def ready(self) -> bool:
        """Every switch connected with tables applied, every host and replica registered."""
        try:
            status = await admin.call(self.controller, Status(), timeout=2.0, credentials=self.operator)
            counters = await admin.call(self.controller, Counters(), timeout=2.0, credentials=self.operator)
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
        result: dict[str, Any] = await admin.call(self.controller, Status(), credentials=self.operator)
        result["counters"] = await admin.call(self.controller, Counters(), credentials=self.operator)
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
        if state.role in ("program", "etcd"):
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
        store = self._state.credential_store()
        with entered(state.namespace):
            return await join(
                node,
                gateway=state.gateway,
                controller=self.controller,
                credentials=store.node(node, "host", [state.node_ip]),
                operator=store.operator(),
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
            kernel.nft(ns, loss_script(state, ns))
        link.loss = percent / 100
        save_state(state, self.state_path)

    async def set_delay(self, a: str, b: str, ms: float) -> None:
        """Set the one-way delay of a link (the nodes' own egress stage, via the controller)."""
        link = self._ends(a, b)
        await admin.call(
            self.controller, LinkSettings(link.a, link.b, delay_ms=ms), credentials=self.operator
        )
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
