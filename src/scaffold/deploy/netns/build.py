"""Creating and removing the kernel objects of a namespace-testbed run, as its state lists them.

``create`` makes the namespaces, veth pairs, management bridge, addresses and routes that
``plan`` named, and the topology's link properties the kernel can give: loss is an nftables
``numgen random mod 100 < P drop`` rule on the sender's device, bandwidth a ``tbf`` qdisc on
both ends. Delay is not a kernel object: the kernels have no ``netem``, so it is our own
egress stage in each node process (``--link PEER=MS``, changed with ``LinkSettings`` by
``scaffold fault delay``). A link is cut with ``ip link set DEV down`` (``NetnsNetwork``);
border switches watch their backbone ports and report the change to the controller.

Everything created is written to the state file before it is created, and ``teardown``
removes exactly that: the processes (by pid and start time), then the namespaces (which takes
their veths, bridge, routes and nftables rules with them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..state_file import NetworkState, load_state, remove_state
from . import kernel
from .plan import mgmt_dev

__all__ = ["create", "leftovers", "loss_script", "teardown"]


def create(state: NetworkState) -> None:
    """Create the namespaces, veth pairs, bridge, addresses, routes, qdiscs and nftables
    rules ``state`` lists (``plan`` made it).

    Raises:
        KernelError: a command failed (what was created stays listed in ``state``, so
            ``teardown`` removes it).
    """
    mgmt = state.mgmt_namespace
    bridge = f"br{state.run_id}"
    root: list[str] = [f"netns add {ns}" for ns in state.namespaces]
    root.append(f"link add {bridge} netns {mgmt} type bridge")
    root.append(f"link add {state.access_dev} type veth peer name {state.access_dev}b netns {mgmt}")
    for node in state.nodes.values():
        root.append(
            f"link add {mgmt_dev(state, node)} netns {node.namespace} type veth "
            f"peer name {mgmt_dev(state, node, True)} netns {mgmt}"
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
            f"link set {mgmt_dev(state, node, True)} master {bridge}",
            f"link set {mgmt_dev(state, node, True)} up",
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
        dev = mgmt_dev(state, node)
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
        kernel.nft(ns, loss_script(state, ns))


def loss_script(state: NetworkState, namespace: str) -> str:
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


def leftovers(run_id: str) -> list[str]:
    """Namespaces and root-namespace interfaces of run ``run_id`` that still exist."""
    out = [f"namespace {ns}" for ns in kernel.namespaces() if ns.startswith(f"sc{run_id}-")]
    with contextlib.suppress(OSError):
        out += [f"interface {dev}" for dev in os.listdir("/sys/class/net") if run_id in dev]
    return out
