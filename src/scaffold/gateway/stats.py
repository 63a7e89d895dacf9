"""Counters of one ingress or publisher: connections, bytes, errors by reason, retries, and
the two latencies a gateway adds (opening the far side, answering an HTTP request).

Counted as plain ints (and one histogram bisect) on the data path; ``metrics()`` reads them as
samples of the metric catalogue (``core/metrics.py``), like every node's, and ``as_json()``
for the CLI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..core.metrics import LATENCY_BUCKETS, Histogram, MetricKind, Sample, define

__all__ = ["GatewayStats"]

CONNECTIONS = define(
    "gateway_connections_total",
    MetricKind.COUNTER,
    "Connections a gateway accepted (ingress: TCP clients; publisher: SCAFFOLD streams).",
)
ACTIVE = define("gateway_active_connections", MetricKind.GAUGE, "Connections a gateway holds open now.")
TRANSFERRED = define(
    "gateway_transferred_bytes_total",
    MetricKind.COUNTER,
    "Bytes a gateway relayed, by direction (to-service: client -> replica; to-client: back).",
    unit="bytes",
    labels=("direction",),
)
REQUESTS = define("gateway_requests_total", MetricKind.COUNTER, "HTTP requests an HTTP ingress answered.")
RETRIES = define(
    "gateway_retries_total",
    MetricKind.COUNTER,
    "HTTP requests sent again on a new stream after a broken one; raw ingress: a stream opened "
    "ahead that ended before answering, its client's bytes sent again on a new one.",
)
REUSED = define(
    "gateway_reused_streams_total",
    MetricKind.COUNTER,
    "HTTP ingress: requests sent on an idle stream that an earlier client connection opened.",
)
IN_CALLBACKS = define(
    "gateway_callback_requests_total",
    MetricKind.COUNTER,
    "HTTP ingress: keep-alive requests answered in the protocols' callbacks, with no task "
    "woken (a request that came whole and alone, on an open idle stream).",
)
PRECONNECTED = define(
    "gateway_preconnected_total",
    MetricKind.COUNTER,
    "Raw ingress: client connections given a stream opened ahead of them (--preconnect).",
)
ERRORS = define(
    "gateway_errors_total",
    MetricKind.COUNTER,
    "Connections or requests that failed, by reason.",
    labels=("reason",),
)
CONNECT_LATENCY = define(
    "gateway_connect_duration_seconds",
    MetricKind.HISTOGRAM,
    "Time to open the far side of a connection: ingress, the SCAFFOLD stream to a replica "
    "(retries included); publisher, the TCP connection to the target.",
    unit="seconds",
    buckets=LATENCY_BUCKETS,
)
REQUEST_LATENCY = define(
    "gateway_request_duration_seconds",
    MetricKind.HISTOGRAM,
    "HTTP ingress: from a request read in full to its response written to the client "
    "(retries and error answers included).",
    unit="seconds",
    buckets=LATENCY_BUCKETS,
)


@dataclass(slots=True)
class GatewayStats:
    """What a gateway did so far. ``errors`` counts by a short stable reason token."""

    connections: int = 0  # accepted (ingress: TCP clients; publisher: SCAFFOLD streams)
    active: int = 0  # open right now
    bytes_in: int = 0  # towards the service (client -> replica)
    bytes_out: int = 0  # back to the client (replica -> client)
    requests: int = 0  # HTTP requests answered (HTTP ingress only)
    retries: int = 0  # requests (HTTP) or a client's first bytes (raw, Replay) sent again
    reused: int = 0  # HTTP requests sent on an idle stream an earlier client connection opened
    in_callbacks: int = 0  # HTTP requests answered in the protocols' callbacks (no task woken)
    preconnected: int = 0  # raw clients given a stream opened ahead of them
    errors: Counter[str] = field(default_factory=Counter)
    connect_latency: Histogram = field(default_factory=lambda: Histogram(CONNECT_LATENCY))
    request_latency: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY))

    def error(self, reason: str) -> None:
        self.errors[reason] += 1

    def metrics(self) -> list[Sample]:
        """A snapshot as samples (names in ``core/metrics.CATALOGUE``)."""
        return [
            CONNECTIONS.sample(self.connections),
            ACTIVE.sample(self.active),
            TRANSFERRED.sample(self.bytes_in, direction="to-service"),
            TRANSFERRED.sample(self.bytes_out, direction="to-client"),
            REQUESTS.sample(self.requests),
            RETRIES.sample(self.retries),
            REUSED.sample(self.reused),
            IN_CALLBACKS.sample(self.in_callbacks),
            PRECONNECTED.sample(self.preconnected),
            *ERRORS.by(self.errors),
            *self.connect_latency.samples(),
            *self.request_latency.samples(),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "active": self.active,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "requests": self.requests,
            "retries": self.retries,
            "reused": self.reused,
            "in_callbacks": self.in_callbacks,
            "preconnected": self.preconnected,
            "errors": dict(sorted(self.errors.items())),
        }
