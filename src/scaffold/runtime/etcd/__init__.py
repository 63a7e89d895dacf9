"""Replicated controllers on etcd (docs/protocol.md §6.8): ``Etcd`` (a cluster reached at any
member), ``EtcdStore`` (the leader's fenced rows), ``ControllerReplica`` (election through a
lease, hot standby through a watch)."""

from .client import Etcd, EtcdError, Keys, parse_endpoints
from .replica import LEASE_TTL, ControllerReplica, ReplicaInfo
from .store import EtcdStore

__all__ = [
    "LEASE_TTL",
    "ControllerReplica",
    "Etcd",
    "EtcdError",
    "EtcdStore",
    "Keys",
    "ReplicaInfo",
    "parse_endpoints",
]
