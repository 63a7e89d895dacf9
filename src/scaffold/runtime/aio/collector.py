"""Short garbage-collector pauses in a process that holds many flows (docs/architecture.md §3.2).

CPython's cyclic collector walks every container object in the generations it collects. A
full (generation 2) collection comes whenever the objects that survived into it since the
last one reach a quarter of those it kept then -- that is, again and again while a process
grows -- and with tens of thousands of streams it walks millions of objects: 0.5 s and more
of a stopped event loop, longer than a host's presence window (docs/protocol.md §6.2). The
gateway then reports the host down and its flows are re-resolved or reset.

:func:`calm_collector` moves what survived start-up, and then every ``interval`` what survived
since (after a collection of the young generations has reclaimed its recent cyclic garbage),
into the permanent generation (``gc.freeze``), which no collection walks: a full collection
walks at most one interval's survivors. Objects freed by reference counting -- all of a
closed stream's (``tests/test_collector.py``) -- are freed as before; what is lost is the
reclaiming of reference *cycles* among frozen objects, so it suits a daemon whose long-lived
objects die without cycles, not arbitrary application code.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

__all__ = ["FREEZE_INTERVAL", "calm_collector"]

#: seconds between two freezes: a full collection walks at most this long's survivors
FREEZE_INTERVAL = 1.0

_calmed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def calm_collector(interval: float = FREEZE_INTERVAL) -> None:
    """Freeze the survivors of this process's start-up now, and every ``interval`` seconds
    those since, while the running event loop runs (once per loop; later calls do nothing).

    Raises:
        RuntimeError: no event loop is running.
    """
    loop = asyncio.get_running_loop()
    if loop in _calmed:
        return
    _calmed.add(loop)
    gc.collect()  # start-up's garbage, once, before it would be kept for good
    gc.freeze()
    loop.call_later(interval, _freeze, loop, interval)


def _freeze(loop: asyncio.AbstractEventLoop, interval: float) -> None:
    gc.collect(1)  # the young generations: cheap, and their cycles are not frozen
    gc.freeze()
    loop.call_later(interval, _freeze, loop, interval)
