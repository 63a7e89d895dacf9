"""What a runtime counts for the node it drives, as metrics, and the operator's view of them.

A runtime counts in one ``Counter`` on its hot path (a packet it could not send, a
datagram from an unknown address, a lost control connection); ``runtime_metrics`` splits it
into drops and notable actions, like a core's ``drops`` and ``counters`` (docs/protocol.md
§7). ``node_summary`` turns a node's samples into what ``scaffold status`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.flow_switch import FORWARDED
from ..core.metrics import ACTIONS, DROPS, MetricKind, Sample, by_label, define, total
from ..core.switch import TABLE_ENTRIES, TABLE_VERSION

__all__ = ["RUNTIME_ACTIONS", "RUNTIME_DROPS", "node_summary", "runtime_metrics"]

RUNTIME_DROPS = define(
    "runtime_drops_total",
    MetricKind.COUNTER,
    "Datagrams and control frames a node's runtime dropped or could not send, by reason "
    "(docs/protocol.md §7).",
    labels=("reason",),
)
RUNTIME_ACTIONS = define(
    "runtime_actions_total",
    MetricKind.COUNTER,
    "Events a runtime counted that lost nothing: a control connection lost, unreachable or "
    "reconnected; a store commit that failed (its records wait for the retry); trains of "
    "datagrams read, sent, and forwarded whole; GSO turned off after the kernel refused a train.",
    labels=("action",),
)
#: the runtime counts that are not drops (docs/protocol.md §7, "Counters")
_ACTIONS = frozenset(
    {
        "controller-lost",
        "controller-unreachable",
        "controller-reconnected",
        "store-failed",
        "trains-received",
        "trains-sent",
        "trains-forwarded",
        "gso-fallback",
    }
)


def runtime_metrics(stats: Mapping[str, int]) -> list[Sample]:
    """A runtime's ``stats`` counter as samples of ``RUNTIME_DROPS`` and ``RUNTIME_ACTIONS``."""
    return [
        *RUNTIME_DROPS.by({k: v for k, v in stats.items() if k not in _ACTIONS}),
        *RUNTIME_ACTIONS.by({k: v for k, v in stats.items() if k in _ACTIONS}),
    ]


def node_summary(role: str, samples: Sequence[Sample]) -> dict[str, Any]:
    """The operator's view of one node's metrics (admin ``counters``, ``scaffold status``,
    the daemons' exit log): the few totals people look at, then every sample.

    Keys: ``role``, ``version`` (applied tables), ``forwarded``, ``table_entries``, ``drops``
    and ``counters`` (the core's, by reason / action), ``runtime`` (the runtime's), ``metrics``
    (``[name, value, labels]`` each).
    """
    return {
        "role": role,
        "version": int(total(samples, TABLE_VERSION.name)),
        "forwarded": int(total(samples, FORWARDED.name)),
        "table_entries": int(total(samples, TABLE_ENTRIES.name)),
        "drops": by_label(samples, DROPS.name, "reason"),
        "counters": by_label(samples, ACTIONS.name, "action"),
        "runtime": {
            **by_label(samples, RUNTIME_DROPS.name, "reason"),
            **by_label(samples, RUNTIME_ACTIONS.name, "action"),
        },
        "metrics": [[s.name, s.value, dict(s.labels)] for s in samples],
    }
