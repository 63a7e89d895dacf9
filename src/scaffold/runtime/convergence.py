"""How long the switches take to apply what the controller sends them: convergence time.

Every flush of the controller runtime that sends table records (``TableSync``,
``TableDelta``, docs/protocol.md §6.2) is one *push*: a version for each switch it went to.
Switches report the version they applied in ``NodeStats``, right after applying it
(docs/deployment.md §1). A push has converged when every switch it went to reported at least
that version; the time from sending to then is one observation of
``controller_convergence_seconds``. A switch that disconnects is struck off the pushes that
wait for it. At most ``limit`` pushes wait; an older one is given up and counted in
``controller_unconfirmed_pushes_total`` (a switch that never reports, or reports rarely).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.metrics import LATENCY_BUCKETS, Histogram, MetricKind, Sample, define

__all__ = ["CONVERGENCE", "UNCONFIRMED", "ConvergenceTracker"]

CONVERGENCE = define(
    "controller_convergence_seconds",
    MetricKind.HISTOGRAM,
    "From the controller sending new tables to every switch they went to reporting them "
    "applied (one observation per push).",
    unit="seconds",
    buckets=LATENCY_BUCKETS,
)
UNCONFIRMED = define(
    "controller_unconfirmed_pushes_total",
    MetricKind.COUNTER,
    "Table pushes the controller stopped waiting for before every switch reported them applied.",
)


@dataclass(slots=True)
class _Push:
    at: float
    #: switch -> the version it was sent, until it reports that version or a later one
    waiting: dict[str, int]


class ConvergenceTracker:
    """Pushes in flight and the time each took to converge (sans-IO: it is handed ``now``)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.histogram = Histogram(CONVERGENCE)
        self.unconfirmed = 0
        self._pushes: deque[_Push] = deque()

    def sent(self, versions: Mapping[str, int], now: float) -> None:
        """Tables went out at ``now``: ``versions`` by switch."""
        if not versions:
            return
        self._pushes.append(_Push(now, dict(versions)))
        while len(self._pushes) > self.limit:
            self._pushes.popleft()
            self.unconfirmed += 1

    def applied(self, switch: str, version: int, now: float) -> None:
        """``switch`` reported that it applied ``version``."""
        converged = []
        for push in self._pushes:
            sent = push.waiting.get(switch)
            if sent is not None and version >= sent:
                del push.waiting[switch]
                if not push.waiting:
                    converged.append(push)
        for push in converged:
            self.histogram.observe(now - push.at)
            self._pushes.remove(push)

    def disconnected(self, switch: str) -> None:
        """``switch`` went away: no push waits for it any more (a push that waited only for
        it is not an observation: it never converged)."""
        for push in self._pushes:
            push.waiting.pop(switch, None)
        self._pushes = deque(p for p in self._pushes if p.waiting)

    def metrics(self) -> list[Sample]:
        return [*self.histogram.samples(), UNCONFIRMED.sample(self.unconfirmed)]
