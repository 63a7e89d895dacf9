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

:func:`paused_collector` keeps the collector off while a process builds a large long-lived
structure at once -- a controller restored with a million objects (docs/protocol.md §6.4) --
and freezes what it built: collections triggered as it grows would walk it again and again
(measured: building a million rows took 13x as long with the collector on).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

__all__ = ["FREEZE_INTERVAL", "calm_collector", "freeze_survivors", "paused_collector"]

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


def freeze_survivors() -> None:
    """Collect the young generations (cheap; their cycles are not kept) and freeze what
    survived: what ``calm_collector`` does every interval (a loop without asyncio, such as a
    benchmark's, calls it itself)."""
    gc.collect(1)
    gc.freeze()


def _freeze(loop: asyncio.AbstractEventLoop, interval: float) -> None:
    freeze_survivors()
    loop.call_later(interval, _freeze, loop, interval)


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    """No collection in this block; what survives it is frozen (it is meant to live long:
    no later collection walks it) and the collector is on again after it, if it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
