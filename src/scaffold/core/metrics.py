"""Metrics: one catalogue of definitions and one snapshot shape for every node (docs/protocol.md §7).

Nodes count on the hot path the cheap way -- a ``Counter`` increment or an int attribute --
and turn that into samples only when asked: ``metrics()`` on an engine or a runtime returns
a list of ``Sample(name, value, labels)``, computed on demand, never per packet.

Every metric is defined once, with :func:`define`, in the module that counts it; the
definitions land in :data:`CATALOGUE`, which an exporter walks to describe them. Names follow
Prometheus conventions: lower case, counters end in ``_total``, the unit is part of the name
(``_bytes``, ``_seconds``); an exporter adds the ``scaffold_`` prefix and the node's name and
role as labels. The metrics every core shares are defined here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..errors import UsageError
from ..wire.control import MetricSample

__all__ = [
    "ACTIONS",
    "CATALOGUE",
    "DROPS",
    "Metric",
    "MetricKind",
    "Sample",
    "by_label",
    "define",
    "total",
]

#: one value of one metric; the record ``NodeStats`` carries (a msgspec struct)
Sample = MetricSample

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_UNITS = frozenset({"bytes", "seconds", "packets", "segments"})


class MetricKind(StrEnum):
    """Prometheus' two basic kinds: a counter only grows (until its node restarts)."""

    COUNTER = "counter"
    GAUGE = "gauge"


@dataclass(frozen=True, slots=True)
class Metric:
    """The definition of one metric: stable name, kind, unit, help text and label names."""

    name: str
    kind: MetricKind
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()

    def sample(self, value: float, **labels: str) -> Sample:
        """One sample of this metric.

        Raises:
            UsageError: the labels are not exactly the metric's label names.
        """
        if tuple(sorted(labels)) != tuple(sorted(self.labels)):
            raise UsageError(f"metric {self.name} takes labels {self.labels}, not {tuple(labels)}")
        return Sample(self.name, value, labels)

    def by(self, counts: Mapping[str, float]) -> list[Sample]:
        """One sample per entry of ``counts`` (label value -> value), in label order (stable
        snapshots).

        Raises:
            UsageError: the metric does not have exactly one label.
        """
        if len(self.labels) != 1:
            raise UsageError(f"metric {self.name} has labels {self.labels}, not one")
        label = self.labels[0]
        return [Sample(self.name, counts[key], {label: key}) for key in sorted(counts)]


#: every metric defined so far, by name
CATALOGUE: dict[str, Metric] = {}


def define(name: str, kind: MetricKind, help: str, *, unit: str = "", labels: tuple[str, ...] = ()) -> Metric:
    """Define a metric once (at import time of the module that counts it).

    Raises:
        UsageError: a name that breaks the conventions (lower case; counters end in
            ``_total``; a unit appears in the name), or a second, different definition.
    """
    if not _NAME.match(name):
        raise UsageError(f"metric name {name!r} must be lower case letters, digits and _")
    if (kind is MetricKind.COUNTER) != name.endswith("_total"):
        raise UsageError(f"metric {name!r}: counters, and only counters, end in _total")
    if unit and (unit not in _UNITS or f"_{unit}" not in name):
        raise UsageError(f"metric {name!r}: unit {unit!r} must be one of {sorted(_UNITS)} and in the name")
    metric = Metric(name, kind, help, unit, labels)
    known = CATALOGUE.setdefault(name, metric)
    if known != metric:
        raise UsageError(f"metric {name!r} is defined twice, differently")
    return metric


def total(samples: Iterable[Sample], name: str) -> float:
    """The sum of every sample of metric ``name`` (over all its label values); 0 if none."""
    return sum(s.value for s in samples if s.name == name)


def by_label(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    """Metric ``name`` keyed by the value of its label ``label`` (summed over other labels)."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == name:
            key = s.labels.get(label, "")
            out[key] = out.get(key, 0) + s.value
    return out


# -- metrics every core shares -------------------------------------------------------------------

DROPS = define(
    "drops_total",
    MetricKind.COUNTER,
    "Packets and control records a core refused, by reason (docs/protocol.md §7).",
    labels=("reason",),
)
ACTIONS = define(
    "actions_total",
    MetricKind.COUNTER,
    "Notable things a core did to packets or flows it did not drop (redirects, corrections, "
    "takeovers, migrations), by action (docs/protocol.md §7).",
    labels=("action",),
)
