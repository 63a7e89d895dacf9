"""The one interface every sans-IO core offers its runtime (docs/architecture.md §2).

A core is driven the way aioquic drives a ``QuicConnection``: the runtime feeds it inputs
with the current time, then *flushes* it -- takes its events, the packets and control
records it queued, and re-arms one timer at ``get_timer()``. Every core has the same
methods, so ``runtime/sim.py`` and ``runtime/aio/`` each have one flush loop and never ask
which kind of core they drive:

* :class:`Engine` -- what every core has: ``name``, ``role``, ``get_timer()``,
  ``handle_timer(now)``, ``next_event()`` and a ``metrics()`` snapshot (``core/metrics.py``).
* :class:`NodeEngine` -- a node of the data plane (flow switch, object switch, host stack):
  packets in and out by neighbour name (``port``), control records in and out on its one
  connection to the controller, ``hello`` to (re)open it, ``ready`` once the controller
  answered, its refinement ``trace``, and ``set_path_limit`` (the largest datagram the
  runtime can send to a neighbour).
* :class:`ControllerEngine` -- the controller core has no packets, and its control I/O is
  per node: ``receive_message(node, message, now)``, ``node_disconnected(node, now)`` and
  ``messages_to_send()`` as ``(node, message)`` pairs; timers, events and metrics as above.

:class:`NodeCore` is the small base class of the node cores: queues, drop and action
counters, and the parts of the interface that are the same for all of them.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from ..wire.control import ControlMessage
from .events import Address, Datagram, Packet, TraceHop
from .metrics import ACTIONS, DROPS, Sample

__all__ = ["ControllerEngine", "Engine", "NodeCore", "NodeEngine"]

EventT = TypeVar("EventT")


@runtime_checkable
class Engine(Protocol):
    """What every core offers its runtime: identity, one timer, events, metrics."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str:
        """``"flow-switch"``, ``"object-switch"``, ``"host"`` or ``"controller"``."""
        ...

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must be called next (absolute time), or None."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now`` (calling it early is harmless)."""
        ...

    def next_event(self) -> object | None:
        """The oldest event the runtime or the application has not taken yet, or None."""
        ...

    def metrics(self) -> list[Sample]:
        """A snapshot of the core's metrics (names defined in ``core/metrics.py``)."""
        ...


@runtime_checkable
class NodeEngine(Engine, Protocol):
    """A data-plane node: packets by neighbour name, control records on one connection."""

    @property
    def ready(self) -> bool:
        """The controller answered: a switch holds tables, a host is registered."""
        ...

    @property
    def trace(self) -> list[TraceHop]: ...

    def hello(self, address: Address | None = None) -> None:
        """Queue what (re)opens the connection to the controller; ``address`` is this node's
        own UDP address, which the controller hands to its neighbours."""
        ...

    def receive_datagram(self, data: Packet, port: str, now: float) -> None:
        """One packet from neighbour ``port`` (untrusted; never raises)."""
        ...

    def set_path_limit(self, port: str, max_datagram: int, now: float) -> None:
        """The runtime's word on the largest datagram it can send towards neighbour ``port``
        (its interface's MTU): a host bounds its streams' path-MTU search by it
        (docs/protocol.md §4.2.6); switches ignore it."""
        ...

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """The ``(port, packet)`` pairs queued since the last call."""
        ...

    def receive_control(self, message: ControlMessage, now: float) -> None:
        """One record from the controller."""
        ...

    def control_to_send(self) -> list[ControlMessage]:
        """The records for the controller queued since the last call."""
        ...


@runtime_checkable
class ControllerEngine(Engine, Protocol):
    """The controller core: control records per node, no packets."""

    def receive_message(self, node: str, message: ControlMessage, now: float) -> None: ...

    def node_disconnected(self, node: str, now: float) -> None: ...

    def messages_to_send(self) -> list[tuple[str, ControlMessage]]: ...


class NodeCore(Generic[EventT]):
    """Base of the node cores: output queues, events, ``drops`` and ``counters``.

    Counting stays as cheap as a ``Counter`` increment on the hot path; ``metrics()`` reads
    the counters into samples only when asked. Subclasses with timers override
    ``get_timer`` / ``handle_timer``.
    """

    role: ClassVar[str] = "node"

    def __init__(self, name: str) -> None:
        self.name = name
        #: packets and records refused, by reason (docs/protocol.md §7)
        self.drops: Counter[str] = Counter()
        #: notable things done to packets or flows that were not dropped, by action
        self.counters: Counter[str] = Counter()
        self.trace: list[TraceHop] = []
        self._out: list[Datagram] = []
        self._control_out: list[ControlMessage] = []
        self._events: deque[EventT] = deque()

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def control_to_send(self) -> list[ControlMessage]:
        out, self._control_out = self._control_out, []
        return out

    def next_event(self) -> EventT | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None

    def set_path_limit(self, port: str, max_datagram: int, now: float) -> None:
        return None

    def metrics(self) -> list[Sample]:
        return [*DROPS.by(self.drops), *ACTIONS.by(self.counters)]
