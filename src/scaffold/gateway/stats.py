"""Counters of one ingress or publisher: connections, bytes, errors by reason, retries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GatewayStats"]


@dataclass(slots=True)
class GatewayStats:
    """What a gateway did so far. ``errors`` counts by a short stable reason token."""

    connections: int = 0  # accepted (ingress: TCP clients; publisher: SCAFFOLD streams)
    active: int = 0  # open right now
    bytes_in: int = 0  # towards the service (client -> replica)
    bytes_out: int = 0  # back to the client (replica -> client)
    requests: int = 0  # HTTP requests answered (HTTP ingress only)
    retries: int = 0  # HTTP requests sent again on a new stream after a broken one
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, reason: str) -> None:
        self.errors[reason] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "active": self.active,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "requests": self.requests,
            "retries": self.retries,
            "errors": dict(sorted(self.errors.items())),
        }
