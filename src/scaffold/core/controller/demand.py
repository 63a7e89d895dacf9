"""The measured demand per object: the object switches' reports, summed (docs/protocol.md §3.5).

Each object switch (each worker process of one run as several, ``Demand.worker``) reports,
about once a second, the first packets it resolved at the wide-area level per object and
source DC (``Demand``): only for objects whose replicas declare a capacity, which it knows
from their ``spill`` entry. The first packet of a flow reaches one object switch only, so the
demand of an object is the sum over the switches' latest reports.
``report`` keeps each switch's latest rates and answers the objects whose summed demand moved
by more than ``HYSTERESIS`` since it was last handed out: the controller replans only those
(``Tables.demand_changed``), so counting noise does not make every report a table change.
Bounded: a report lists at most ``DEMAND_OBJECTS`` objects; objects not watched and sources
that are no DC are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from ...wire.control import Demand

__all__ = ["HYSTERESIS", "DemandBook"]

#: a source's rate must move by this fraction of the object's total (or a source appear or
#: go) before the plan is recomputed
HYSTERESIS = 0.1

Rates = dict[int, float]


class DemandBook:
    """Every object switch's latest demand and the sums handed out to the planner."""

    def __init__(self, watched: Callable[[str], bool], sources: Container[int]) -> None:
        #: whether an object is planned for (it has a spill entry): others are ignored
        self._watched = watched
        #: the DC IDs a source may be (a report's other keys are ignored: the plan's work
        #: grows with the sources)
        self._sources = sources
        #: (switch, worker) -> object -> source DC ID -> new flows per second
        self._by_switch: dict[tuple[str, int], dict[str, Rates]] = {}
        #: object -> the summed rates last handed out
        self.published: dict[str, Rates] = {}

    def report(self, switch: str, demand: Demand) -> dict[str, Rates]:
        """Take ``switch``'s report; the objects whose demand changed enough, with it."""
        rates = {
            key: {
                src: count / demand.interval
                for src, count in counts.items()
                if count and src in self._sources
            }
            for key, counts in demand.flows.items()
            if self._watched(key)
        }
        origin = (switch, demand.worker)
        before = self._by_switch.get(origin, {})
        if rates:
            self._by_switch[origin] = rates
        else:
            self._by_switch.pop(origin, None)
        return self._changed(before.keys() | rates.keys())

    def forget(self, switch: str) -> dict[str, Rates]:
        """``switch`` is gone: its share of the demand (all its workers') goes with it."""
        keys: set[str] = set()
        for origin in [o for o in self._by_switch if o[0] == switch]:
            keys |= self._by_switch.pop(origin).keys()
        return self._changed(keys)

    def _changed(self, keys: set[str]) -> dict[str, Rates]:
        out: dict[str, Rates] = {}
        for key in sorted(keys):
            total: Rates = {}
            for rates in self._by_switch.values():
                for src, rate in rates.get(key, {}).items():
                    total[src] = total.get(src, 0.0) + rate
            if _moved(self.published.get(key, {}), total):
                out[key] = total
                if total:
                    self.published[key] = total
                else:
                    self.published.pop(key, None)
        return out


def _moved(old: Rates, new: Rates) -> bool:
    if old.keys() != new.keys():
        return True
    scale = max(sum(old.values()), sum(new.values()), 1e-9)
    return any(abs(new[src] - old[src]) > HYSTERESIS * scale for src in new)
