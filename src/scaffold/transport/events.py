"""What a stream connection tells its application: events, and its statistics record
(docs/protocol.md §4.2).

Events are immutable, slotted records popped with ``StreamConnection.next_event()``, from an
:class:`EventQueue` that merges consecutive :class:`DataReceived` and holds no list while
empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Connected",
    "ConnectionTerminated",
    "DataReceived",
    "EndOfStream",
    "EventQueue",
    "Reset",
    "Resumed",
    "SendSpaceAvailable",
    "StreamEvent",
    "StreamStats",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake completed; the stream is open in both directions."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """``length`` new in-order bytes can be ``read()``."""

    length: int


@dataclass(frozen=True, slots=True)
class SendSpaceAvailable:
    """A short ``send()`` can continue: ``space`` bytes now fit."""

    space: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer shut down its direction (FIN); every byte it sent has been received."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer aborted the flow (RST). A :class:`ConnectionTerminated` follows."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The flow was re-synchronized with a new peer host (RESUME exchange, §4.2.5).

    ``send_offset`` is the stream offset from which this side (re)sends; ``receive_offset``
    the offset of the next byte this side expects. A new host's application decides from
    them whether it can continue, and calls ``abort()`` if not.
    """

    send_offset: int
    receive_offset: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is CLOSED; ``reason`` is a ``TerminationReason`` token."""

    reason: str


StreamEvent = (
    Connected  # handshake done
    | DataReceived  # bytes to read
    | SendSpaceAvailable  # a short send() may continue
    | EndOfStream  # peer FIN
    | Reset  # peer RST
    | Resumed  # re-synchronized with a new peer host
    | ConnectionTerminated  # CLOSED, with a reason
)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of counters and congestion state (``StreamConnection.stats``)."""

    bytes_sent: int
    bytes_retransmitted: int
    bytes_acked: int
    bytes_received: int
    segments_sent: int
    segments_received: int
    duplicate_segments: int
    retransmit_timeouts: int
    loss_episodes: int
    srtt: float | None
    rttvar: float | None
    min_rtt: float | None
    rto: float
    cwnd: int
    ssthresh: int | None
    bytes_in_flight: int
    peer_window: int


class EventQueue:
    """Pending events of one connection, oldest first."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: list[StreamEvent] | None = None

    def push(self, event: StreamEvent) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def data_received(self, length: int) -> None:
        """``length`` more bytes are readable: grow a :class:`DataReceived` not popped yet."""
        events = self._events
        if events is None:  # ``push`` inline (per delivery)
            self._events = [DataReceived(length)]
        elif events and isinstance(events[-1], DataReceived):
            events[-1] = DataReceived(events[-1].length + length)
        else:
            events.append(DataReceived(length))

    def pop_all(self) -> Sequence[StreamEvent]:
        """Every pending event, oldest first; the queue is empty after."""
        events = self._events
        if events is None:
            return ()
        self._events = None
        return events

    def pop(self) -> StreamEvent | None:
        events = self._events
        if not events:
            return None
        event = events.pop(0)
        if not events:
            self._events = None
        return event
