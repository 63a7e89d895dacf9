"""The state file of a running network: how other commands and programs find it.

``scaffold up`` writes it (default ``./.scaffold/state.json``, or ``--state PATH``);
``scaffold status``, ``fault``, ``down`` and ``joining.join_from_state`` read it. It records
the network's name and mode (``embedded`` or ``netns``), the controller's address, every
node's data-plane address and -- in ``netns`` mode -- exactly what ``up`` created: the
namespaces, the veth links with their interface names, and each node's process (pid and
kernel start time, so a recycled pid is never signalled). ``scaffold down`` removes exactly
that. The file is JSON, replaced atomically. Beside it, ``credentials/`` is the network's
credential store (its CA, the nodes' and the operator's credentials, owner-only); commands
and programs on this machine find their credentials there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import msgspec

from ..errors import ConfigError
from ..runtime.atomic_file import write_atomic
from ..runtime.tls import Credentials, CredentialStore

__all__ = [
    "DEFAULT_STATE",
    "LinkState",
    "NetworkState",
    "NodeState",
    "credentials_dir",
    "load_state",
    "remove_state",
    "save_state",
]

DEFAULT_STATE = Path(".scaffold") / "state.json"
Address = tuple[str, int]


class NodeState(msgspec.Struct):
    """One node of the network."""

    name: str
    role: str  # "controller" | "flow-switch" | "object-switch" | "host" | "etcd" | "program"
    dc: str = ""
    gateway: str = ""  # hosts
    address: Address | None = None  # data plane (controller: its control address)
    namespace: str = ""  # netns mode
    node_ip: str = ""  # netns: the address on the namespace's loopback, routed by the kernel
    mgmt_ip: str = ""  # netns: the address on the management bridge
    pid: int = 0  # netns: the node's process
    start_time: int = 0  # netns: /proc/PID/stat start time of that process
    command: list[str] = []  # netns: how the process was started (for a restart)
    metrics: Address | None = None  # netns: where its daemon serves Prometheus metrics


class LinkState(msgspec.Struct):
    """One veth link between two node namespaces (netns mode)."""

    a: str
    b: str
    dev_a: str
    dev_b: str
    ip_a: str
    ip_b: str
    backbone: bool = False  # between two datacenters' border switches
    delay: float = 0.0
    loss: float = 0.0
    bandwidth: float | None = None
    up: bool = True


class NetworkState(msgspec.Struct):
    """What ``scaffold up`` started."""

    name: str
    mode: str  # "embedded" | "netns"
    controller: Address
    #: every controller replica, when several share the network through etcd
    controllers: list[Address] = []
    #: the etcd cluster of the replicas (HOST:PORT each)
    etcd: list[str] = []
    run_id: str = ""
    topology_file: str = ""
    pid: int = 0  # the ``scaffold up`` process (embedded: it runs the whole network)
    created: float = 0.0
    nodes: dict[str, NodeState] = {}
    links: list[LinkState] = []
    #: netns: every namespace created, the management one last
    namespaces: list[str] = []
    #: netns: the management namespace and its bridge
    mgmt_namespace: str = ""
    #: netns: the veth end left in this (the root) namespace to reach the management bridge
    access_dev: str = ""
    access_ip: str = ""
    #: netns: where the controller keeps its store and the nodes write their logs
    run_dir: str = ""
    #: netns: ``up`` made ``run_dir`` (a temporary directory), so ``down`` removes it
    run_dir_temporary: bool = False
    #: netns: loss in percent by (namespace, device), as applied with nftables
    losses: dict[str, float] = {}
    #: the network's credential store (``runtime.tls.CredentialStore``): its CA, every
    #: node's credentials and the operator's, readable by the owner only
    credentials: str = ""
    #: embedded: the one Prometheus endpoint of the whole network (netns: each node's own)
    metrics: Address | None = None

    def operator(self) -> Credentials:
        """The operator's credentials for this network's controller.

        Raises:
            ConfigError: the network has no credentials (or they cannot be read).
        """
        return self.credential_store().operator()

    def credential_store(self) -> CredentialStore:
        """This network's credential store (its CA issues more credentials).

        Raises:
            ConfigError: the network has none, or it cannot be read.
        """
        if not self.credentials:
            raise ConfigError(f"network {self.name!r} has no credentials in its state file")
        try:
            return CredentialStore(self.credentials)
        except OSError as exc:
            raise ConfigError(f"cannot read the credentials of network {self.name!r}: {exc}") from None

    @property
    def controller_addresses(self) -> list[Address]:
        """Every controller replica's address (the one controller's, if not replicated)."""
        return list(self.controllers) or [self.controller]

    def metrics_targets(self) -> list[Address]:
        """Every Prometheus endpoint of the network (docs/operations.md §1)."""
        own = [self.metrics] if self.metrics is not None else []
        return own + [n.metrics for n in self.nodes.values() if n.metrics is not None]

    def node(self, name: str) -> NodeState:
        """The node called ``name``.

        Raises:
            ConfigError: the network has no such node.
        """
        node = self.nodes.get(name)
        if node is None:
            raise ConfigError(f"network {self.name!r} has no node {name!r}")
        return node

    def link(self, a: str, b: str) -> LinkState:
        """The link between nodes ``a`` and ``b`` (either order).

        Raises:
            ConfigError: there is none.
        """
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link
        raise ConfigError(f"network {self.name!r} has no link between {a!r} and {b!r}")


def load_state(path: str | os.PathLike[str] = DEFAULT_STATE) -> NetworkState:
    """Read a state file.

    Raises:
        ConfigError: there is no state file there (no network is up) or it is not one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no state file (is a network up? start one with `scaffold up`)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the state file: {exc.strerror or exc}") from None
    try:
        return msgspec.json.decode(data, type=NetworkState)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: not a scaffold state file: {exc}") from None


def save_state(state: NetworkState, path: str | os.PathLike[str] = DEFAULT_STATE) -> None:
    """Write a state file atomically (write, fsync, rename, fsync the directory).

    Raises:
        OSError: it cannot be written.
    """
    write_atomic(path, msgspec.json.format(msgspec.json.encode(state), indent=2) + b"\n")


def credentials_dir(path: str | os.PathLike[str] = DEFAULT_STATE) -> Path:
    """Where ``scaffold up`` keeps the credential store of the network of state file ``path``
    (an absolute path: programs in other directories find it through the state file)."""
    return Path(path).resolve().parent / "credentials"


def remove_state(path: str | os.PathLike[str] = DEFAULT_STATE) -> None:
    """Delete a state file and the credentials beside it (and their directory if that is
    left empty)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    shutil.rmtree(credentials_dir(path), ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
