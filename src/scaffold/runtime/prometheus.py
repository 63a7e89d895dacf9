"""Prometheus exposition of the nodes' metric samples (docs/operations.md §1).

Nodes keep counting the cheap way and read out ``Sample`` snapshots (``core/metrics.py``);
nothing here counts on the hot path. At each scrape, :class:`SampleCollector` asks its
*source* for ``Batch``es -- the samples of one node (or gateway) with the labels that say
whose they are (``node``, ``role``; a gateway adds ``object``) -- and turns them into metric
families of ``prometheus-client``: the catalogue gives each name its kind, help text and unit,
the exporter adds the ``scaffold_`` prefix. The source runs on the event loop that owns the
nodes (the HTTP server of ``prometheus-client`` answers on a thread of its own), so no node
is ever read while the loop changes it.

Samples that come from other processes (``NodeStats``) are not trusted to be well formed: a
name outside the catalogue, labels other than the metric's, a non-finite value or a second
sample with the same labels is left out, never an error of the scrape.

:class:`MetricsEndpoint` serves one source on ``HOST:PORT`` (``/metrics``; the process's own
``process_*`` metrics come along).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..core.metrics import MetricKind, Sample, metric_of
from ..errors import ConfigError

__all__ = ["PREFIX", "Batch", "MetricsEndpoint", "SampleCollector", "Source", "families"]

PREFIX = "scaffold_"
#: how long a scrape waits for the event loop to take the snapshot
SNAPSHOT_TIMEOUT = 5.0
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Batch:
    """The samples of one node (or gateway) and the labels that tell whose they are."""

    labels: Mapping[str, str]
    samples: Sequence[Sample] = field(default_factory=list)


#: what a collector reads at each scrape, on the loop that owns the nodes
Source = Callable[[], Iterable[Batch]]


@dataclass(slots=True)
class _Family:
    name: str
    kind: MetricKind
    help: str
    unit: str
    label_names: tuple[str, ...]
    #: label values -> value (counters, gauges) or (buckets by le, sum) (histograms)
    values: dict[tuple[str, ...], Any] = field(default_factory=dict)


def families(batches: Iterable[Batch], prefix: str = PREFIX) -> list[Metric]:
    """The batches' samples as Prometheus metric families, one per catalogue metric, in name
    order. Malformed samples are left out (see the module's docstring)."""
    found: dict[str, _Family] = {}
    for batch in batches:
        const = {k: str(v) for k, v in batch.labels.items() if _LABEL.match(k) and not k.startswith("__")}
        for sample in batch.samples:
            _add(found, const, sample)
    out: list[Metric] = []
    for name in sorted(found):
        family = found[name]
        if family.kind is MetricKind.HISTOGRAM:
            out.append(_histogram(prefix, family))
            continue
        cls = CounterMetricFamily if family.kind is MetricKind.COUNTER else GaugeMetricFamily
        metric = cls(prefix + family.name, family.help, labels=family.label_names, unit=family.unit)
        for values, value in family.values.items():
            metric.add_metric(list(values), value)
        out.append(metric)
    return out


def _add(found: dict[str, _Family], const: Mapping[str, str], sample: Sample) -> None:
    metric = metric_of(sample.name)
    value = sample.value
    if metric is None or not isinstance(value, int | float) or not math.isfinite(value):
        return
    labels = dict(sample.labels)
    le = labels.pop("le", None) if sample.name.endswith("_bucket") else None
    if sorted(labels) != sorted(metric.labels) or any(k in const for k in labels):
        return
    if metric.kind is MetricKind.HISTOGRAM and sample.name.endswith("_bucket") and le is None:
        return
    family = found.get(metric.name)
    if family is None:
        names = (*sorted(const), *metric.labels)
        family = found[metric.name] = _Family(metric.name, metric.kind, metric.help, metric.unit, names)
    merged = {**const, **labels}
    key = tuple(merged.get(n, "") for n in family.label_names)
    if metric.kind is not MetricKind.HISTOGRAM:
        family.values.setdefault(key, value)  # the first sample of a label set wins
        return
    buckets, total = family.values.setdefault(key, ({}, None))
    if sample.name.endswith("_bucket"):
        try:
            bound = float(str(le))
        except ValueError:
            return
        buckets.setdefault(bound, value)
    elif sample.name.endswith("_sum") and total is None:
        family.values[key] = (buckets, value)


def _histogram(prefix: str, family: _Family) -> Metric:
    metric = HistogramMetricFamily(
        prefix + family.name, family.help, labels=family.label_names, unit=family.unit
    )
    for values, (buckets, total) in family.values.items():
        if math.inf not in buckets or total is None:
            continue  # a histogram without its count or sum is not one
        ordered = sorted(buckets.items())
        # Cumulative counts never go down; a report where they do is not a histogram either.
        if any(a[1] > b[1] for a, b in itertools.pairwise(ordered)):
            continue
        metric.add_metric(list(values), [(_le(b), n) for b, n in ordered], total)
    return metric


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.005``, ``+Inf``)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


class SampleCollector(Collector):
    """A ``prometheus-client`` collector over a :data:`Source`. With ``loop``, the source is
    read on that event loop (a scrape comes on the HTTP server's thread); without, directly."""

    def __init__(self, source: Source, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.source = source
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot())

    def _snapshot(self) -> list[Batch]:
        loop = self.loop
        if loop is None or loop.is_closed():
            return [] if loop is not None else list(self.source())
        try:
            if asyncio.get_running_loop() is loop:
                return list(self.source())
        except RuntimeError:
            pass  # no loop runs in this thread: the scrape came on the server's thread

        async def take() -> list[Batch]:
            return list(self.source())

        try:
            return asyncio.run_coroutine_threadsafe(take(), loop).result(SNAPSHOT_TIMEOUT)
        except (TimeoutError, RuntimeError):
            return []  # the loop is stopping or stuck: an empty scrape, not a crash


class MetricsEndpoint:
    """An HTTP endpoint for Prometheus (``GET /metrics``) serving ``source`` and the process's
    own metrics, on a thread of its own; ``address`` is where it listens (port 0 picks one)."""

    def __init__(self, source: Source, bind: tuple[str, int]) -> None:
        self.source = source
        self.bind = bind
        self.address: tuple[str, int] = bind
        self.registry = CollectorRegistry(auto_describe=False)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Listen; the source is read on ``loop`` (default: the running one).

        Raises:
            ConfigError: the address cannot be bound.
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        self.registry.register(SampleCollector(self.source, loop))
        self.registry.register(ProcessCollector(registry=None))
        try:
            self._server, self._thread = start_http_server(self.bind[1], self.bind[0], registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics endpoint cannot listen on {self.bind[0]}:{self.bind[1]}: {exc.strerror or exc}"
            ) from None
        host, port = self._server.server_address[:2]
        self.address = (str(host), int(port))

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}/metrics"

    def close(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
