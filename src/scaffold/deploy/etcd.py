"""The etcd cluster of replicated controllers: members as processes (docs/deployment.md §6).

``plan_cluster`` names the members and their URLs; ``member_command`` is the ``etcd`` command
line of one (Debian's ``etcd-server`` 3.4, installed by ``scripts/system-deps``); a runner
starts each wherever it belongs -- on loopback for ``scaffold up --controllers N``, or in a
controller replica's namespace with ``--netns``. The members run with a short heartbeat and
election timeout, so that a lease of ``LEASE_TTL`` (1 s) is allowed and a dead leader's lease
expires quickly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["ETCD", "EtcdMember", "available", "member_command", "plan_cluster"]

ETCD = "etcd"
#: raft heartbeat and election timeout (ms): the minimum lease is 1.5 election timeouts
HEARTBEAT_MS = 50
ELECTION_MS = 500


@dataclass(frozen=True, slots=True)
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: str

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


def available() -> str | None:
    """Why etcd cannot run here (None: it can)."""
    if shutil.which(ETCD) is None:
        return "etcd is not installed (scripts/system-deps installs Debian's etcd-server)"
    return None


def plan_cluster(
    hosts: list[str], ports: list[tuple[int, int]], run_dir: str | Path, token: str
) -> list[EtcdMember]:
    """One member per host, with (client, peer) ports, data under ``run_dir``.

    Raises:
        ConfigError: hosts and ports do not pair up.
    """
    if len(hosts) != len(ports) or not hosts:
        raise ConfigError("an etcd cluster needs one (client, peer) port pair per member")
    return [
        EtcdMember(f"{token}-etcd{k + 1}", host, client, peer, str(Path(run_dir) / f"etcd{k + 1}"))
        for k, (host, (client, peer)) in enumerate(zip(hosts, ports, strict=True))
    ]


def member_command(member: EtcdMember, cluster: list[EtcdMember], token: str) -> list[str]:
    """The command line of ``member`` in a new cluster of ``cluster``."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster)
    return [
        ETCD,
        "--name",
        member.name,
        "--data-dir",
        member.data_dir,
        "--listen-client-urls",
        member.client_url,
        "--advertise-client-urls",
        member.client_url,
        "--listen-peer-urls",
        member.peer_url,
        "--initial-advertise-peer-urls",
        member.peer_url,
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        token,
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        str(HEARTBEAT_MS),
        "--election-timeout",
        str(ELECTION_MS),
        "--max-txn-ops",
        "1024",
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ]
