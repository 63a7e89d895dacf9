"""Serving the unmodified world: the ingress proxy and the publisher (docs/gateway.md).

* ``Ingress`` -- plain TCP clients in, one SCAFFOLD stream per connection to an object out
  (anycast with flow affinity per TCP connection; with ``preconnect`` opened ahead of its
  client); or HTTP/1.1 clients (``http=True``), whose requests go on streams that outlive
  the connection that opened them (a later client's idempotent requests reuse them).
* ``Publisher`` -- an unmodified TCP server registered as a replica of an object, with
  health checks that withdraw and re-register it.
"""

from .http import IDEMPOTENT_METHODS, HttpOptions
from .ingress import Ingress
from .publisher import Publisher, TargetUnavailable
from .stats import GatewayStats

__all__ = ["IDEMPOTENT_METHODS", "GatewayStats", "HttpOptions", "Ingress", "Publisher", "TargetUnavailable"]
