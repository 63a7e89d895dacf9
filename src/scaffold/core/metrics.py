"""Metrics: one catalogue of definitions and one snapshot shape for every node (docs/protocol.md §7).

Nodes count on the hot path the cheap way -- a ``Counter`` increment or an int attribute --
and turn that into samples only when asked: ``metrics()`` on an engine or a runtime returns
a list of ``Sample(name, value, labels)``, computed on demand, never per packet.

Every metric is defined once, with :func:`define`, in the module that counts it; the
definitions land in :data:`CATALOGUE`, which an exporter walks to describe them. Names follow
Prometheus conventions: lower case, counters end in ``_total``, the unit is part of the name
(``_bytes``, ``_seconds``); an exporter adds the ``scaffold_`` prefix and the node's name and
role as labels (``runtime/prometheus.py``). The metrics every core shares are defined here.

Latencies are histograms: a :class:`Histogram` counts observations into the metric's fixed
buckets (one ``bisect`` per observation) and reads out as Prometheus reads a histogram --
``NAME_bucket`` samples with a cumulative count per upper bound ``le``, ``NAME_sum`` and
``NAME_count`` -- so a histogram travels in ``NodeStats`` like any other sample
(:func:`metric_of` finds its definition from a sample's name).
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..errors import UsageError
from ..wire.control import MetricSample

__all__ = [
    "ACTIONS",
    "CATALOGUE",
    "DROPS",
    "LATENCY_BUCKETS",
    "Histogram",
    "Metric",
    "MetricKind",
    "Sample",
    "by_label",
    "define",
    "metric_of",
    "total",
]

#: one value of one metric; the record ``NodeStats`` carries (a msgspec struct)
Sample = MetricSample

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_UNITS = frozenset({"bytes", "seconds", "packets", "segments"})
#: upper bounds (seconds) for latencies from a loopback round trip to a slow failover
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: the samples a histogram reads out as, after its name
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


class MetricKind(StrEnum):
    """Prometheus' kinds: a counter only grows (until its node restarts); a gauge goes up and
    down; a histogram counts observations (latencies) into buckets."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Metric:
    """The definition of one metric: stable name, kind, unit, help text and label names."""

    name: str
    kind: MetricKind
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()
    #: a histogram's bucket upper bounds, ascending (``+Inf`` is implied)
    buckets: tuple[float, ...] = ()

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


def define(
    name: str,
    kind: MetricKind,
    help: str,
    *,
    unit: str = "",
    labels: tuple[str, ...] = (),
    buckets: tuple[float, ...] = (),
) -> Metric:
    """Define a metric once (at import time of the module that counts it).

    Raises:
        UsageError: a name that breaks the conventions (lower case; counters end in
            ``_total``; a unit appears in the name; a histogram ends in its unit and has
            ascending buckets, nothing else has buckets), or a second, different definition.
    """
    if not _NAME.match(name):
        raise UsageError(f"metric name {name!r} must be lower case letters, digits and _")
    if (kind is MetricKind.COUNTER) != name.endswith("_total"):
        raise UsageError(f"metric {name!r}: counters, and only counters, end in _total")
    if unit and (unit not in _UNITS or f"_{unit}" not in name):
        raise UsageError(f"metric {name!r}: unit {unit!r} must be one of {sorted(_UNITS)} and in the name")
    if kind is MetricKind.HISTOGRAM:
        ascending = all(a < b for a, b in itertools.pairwise(buckets))
        if not buckets or not ascending or not all(math.isfinite(b) for b in buckets):
            raise UsageError(f"histogram {name!r} needs finite buckets in ascending order")
        if not unit or not name.endswith(f"_{unit}") or "le" in labels:
            raise UsageError(f"histogram {name!r} must end in its unit and not use the label 'le'")
    elif buckets:
        raise UsageError(f"metric {name!r}: only histograms have buckets")
    metric = Metric(name, kind, help, unit, labels, buckets)
    known = CATALOGUE.setdefault(name, metric)
    if known != metric:
        raise UsageError(f"metric {name!r} is defined twice, differently")
    return metric


def metric_of(sample_name: str) -> Metric | None:
    """The definition behind a sample's name -- a histogram's ``_bucket``, ``_sum`` and
    ``_count`` samples included -- or None if the catalogue has none."""
    metric = CATALOGUE.get(sample_name)
    if metric is not None:
        return metric
    for part in _HISTOGRAM_PARTS:
        if sample_name.endswith(part):
            metric = CATALOGUE.get(sample_name[: -len(part)])
            if metric is not None and metric.kind is MetricKind.HISTOGRAM:
                return metric
    return None


class Histogram:
    """Observations of one histogram metric for one set of label values.

    ``observe`` is one ``bisect`` and three additions; ``samples`` reads it out as Prometheus
    does: a cumulative count per bucket (label ``le``, ``+Inf`` last), the sum, the count.
    Making one raises ``UsageError`` if ``metric`` is not a histogram or the labels are not
    its label names.
    """

    __slots__ = ("count", "counts", "labels", "metric", "sum")

    def __init__(self, metric: Metric, **labels: str) -> None:
        if metric.kind is not MetricKind.HISTOGRAM:
            raise UsageError(f"metric {metric.name} is a {metric.kind}, not a histogram")
        if tuple(sorted(labels)) != tuple(sorted(metric.labels)):
            raise UsageError(f"metric {metric.name} takes labels {metric.labels}, not {tuple(labels)}")
        self.metric = metric
        self.labels = labels
        self.counts = [0] * (len(metric.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (a negative one counts as 0: clocks do not run backwards)."""
        value = max(0.0, value)
        self.counts[bisect_left(self.metric.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self) -> list[Sample]:
        name = self.metric.name
        out = []
        cumulative = 0
        for bound, n in zip(self.metric.buckets, self.counts, strict=False):
            cumulative += n
            out.append(Sample(f"{name}_bucket", cumulative, {**self.labels, "le": f"{bound:g}"}))
        out.append(Sample(f"{name}_bucket", self.count, {**self.labels, "le": "+Inf"}))
        out.append(Sample(f"{name}_sum", self.sum, dict(self.labels)))
        out.append(Sample(f"{name}_count", self.count, dict(self.labels)))
        return out


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
