"""The end-host SCAFFOLD stack (docs/protocol.md §3.4, §4, §5), split by job.

``stack.py`` is the facade (``HostStack``: control plane, timers, datagram sockets, demux),
on ``base.py`` (state and shared primitives); ``streams.py`` drives the stream transports,
``churn.py`` drains, migrates and relocates, ``timers.py`` keeps deadlines in a heap,
``flows.py`` and ``events.py`` hold the records, ``stats.py`` the metrics.
"""

from .events import (
    DatagramReceived,
    DrainCompleted,
    FlowAccepted,
    FlowClosed,
    FlowsMigrated,
    FlowUnreachable,
    HostEvent,
    HostRegistered,
    HostRelocated,
    ObjectNotFoundEvent,
    StreamEventFor,
)
from .flows import Flow, Listener, Role
from .stack import STRAGGLER_WINDOW, HostStack

__all__ = [
    "STRAGGLER_WINDOW",
    "DatagramReceived",
    "DrainCompleted",
    "Flow",
    "FlowAccepted",
    "FlowClosed",
    "FlowUnreachable",
    "FlowsMigrated",
    "HostEvent",
    "HostRegistered",
    "HostRelocated",
    "HostStack",
    "Listener",
    "ObjectNotFoundEvent",
    "Role",
    "StreamEventFor",
]
