"""The plan of a namespace-testbed run: the name and address of everything it creates.

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

``plan`` is pure; only ``free_second_octet`` asks the kernel (which ranges are routed here).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ...core.topology import Topology
from ...errors import ConfigError, ScaffoldError
from ..serve_spec import Service, format_serve
from ..state_file import LinkState, NetworkState, NodeState
from . import kernel

__all__ = [
    "CONTROL_PORT",
    "DATA_PORT",
    "ETCD_CLIENT_PORT",
    "Octets",
    "free_second_octet",
    "mgmt_dev",
    "node_command",
    "plan",
]

DATA_PORT = 7000
CONTROL_PORT = 7400
#: an etcd member in a replica's namespace listens on its management IP here (and +1 for peers)
ETCD_CLIENT_PORT = 2379
PYTHON = sys.executable


@dataclass(frozen=True, slots=True)
class Octets:
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


def free_second_octet() -> int:
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


def plan(
    topology: Topology,
    name: str,
    run_id: str,
    second: int,
    run_dir: str,
    *,
    controllers: int = 1,
    etcd: list[str] | None = None,
) -> NetworkState:
    """Names, addresses and links of a run (pure: creates nothing). With ``controllers`` > 1
    the controller is replicated: replicas ``controller-2``... in namespaces of their own, on
    the etcd cluster ``etcd`` (default: one member in each replica's namespace, on its
    management IP, started by ``NetnsNetwork``).

    Raises:
        ConfigError: too many nodes, or fewer than one controller.
    """
    octets = Octets(second)
    if len(topology.nodes()) + controllers > 16000:
        raise ConfigError("the namespace testbed takes at most 16000 nodes")
    if controllers < 1:
        raise ConfigError("a network needs at least one controller")
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
    replicas = [topology.controller] + [f"{topology.controller}-{k}" for k in range(2, controllers + 1)]
    for k, replica in enumerate(replicas[1:]):
        index = len(topology.nodes()) + 2 + k
        nodes[replica] = NodeState(
            replica,
            "controller",
            address=(octets.mgmt(index), CONTROL_PORT),
            namespace=f"sc{run_id}-{replica}",
            mgmt_ip=octets.mgmt(index),
        )
    addresses = [nodes[r].address for r in replicas] if controllers > 1 else []
    if controllers > 1 and not etcd:
        etcd = [f"{nodes[r].mgmt_ip}:{ETCD_CLIENT_PORT}" for r in replicas]
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
        controllers=[a for a in addresses if a is not None],
        etcd=list(etcd or []) if controllers > 1 else [],
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


def mgmt_dev(state: NetworkState, node: NodeState, bridge_side: bool = False) -> str:
    index = list(state.nodes).index(node.name)
    return f"m{state.run_id}{index}{'b' if bridge_side else ''}"


def node_command(
    state: NetworkState, node: NodeState, topology: Topology, topology_path: str, log_debug: bool
) -> list[str]:
    base = [PYTHON, "-m", "scaffold"]
    # Each node's credentials were issued into the network's store (``NetnsNetwork.start``).
    credentials = str(Path(state.credentials) / "nodes" / node.name)
    # Each daemon serves its metrics in its own namespace, reached on its management address.
    metrics = [] if node.metrics is None else ["--metrics", f"0.0.0.0:{node.metrics[1]}"]
    tls = ["--credentials", credentials, "--crl", str(Path(state.credentials) / "ca" / "crl.pem")]
    if node.role == "controller" and state.etcd:
        return [
            *base,
            "controller",
            "--name",
            node.name,
            "--topology",
            topology_path,
            "--listen",
            f"0.0.0.0:{CONTROL_PORT}",
            "--advertise",
            node.mgmt_ip,
            "--network",
            f"{state.name}-{state.run_id}",
            "--etcd",
            ",".join(state.etcd),
            *tls,
            *metrics,
        ]
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
            str(Path(state.run_dir) / "controller.sqlite3"),
            *tls,
            *metrics,
        ]
    controller = ",".join(f"{h}:{p}" for h, p in state.controller_addresses)
    common = [
        "--name",
        node.name,
        "--controller",
        controller,
        "--credentials",
        credentials,
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
    common += metrics
    if node.role == "host":
        serve = [
            "--serve="
            + format_serve(Service(obj.name, weight, obj.resumable, obj.policy, obj.capacity_of(host)))
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
