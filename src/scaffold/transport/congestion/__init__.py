"""Congestion control algorithms, one module each, behind one interface (docs/protocol.md §4.2.4).

``StreamOptions.congestion`` names the algorithm; :func:`create` builds it. Adding one (say
CUBIC): a module with a :class:`CongestionControl` and a :class:`CongestionState` subclass,
an entry in ``_ALGORITHMS``, and its state class in :data:`AnyCongestionState` (the
snapshot decodes the tagged union).
"""

from __future__ import annotations

from .base import CongestionControl, CongestionState
from .newreno import NewReno, NewRenoState

__all__ = [
    "AnyCongestionState",
    "CongestionControl",
    "CongestionState",
    "NewReno",
    "NewRenoState",
    "algorithms",
    "create",
]

_ALGORITHMS: dict[str, type[CongestionControl]] = {NewReno.name: NewReno}

#: every algorithm's state record, as the connection snapshot holds it (a tagged union).
AnyCongestionState = NewRenoState


def algorithms() -> frozenset[str]:
    """The names ``StreamOptions.congestion`` accepts."""
    return frozenset(_ALGORITHMS)


def create(name: str, mss: int, initial_window: int) -> CongestionControl:
    """A new controller of algorithm ``name`` (validated by ``StreamOptions``)."""
    return _ALGORITHMS[name](mss, initial_window)
