"""The congestion controller interface every algorithm implements (docs/protocol.md §4.2.4).

A controller owns the congestion window (``cwnd``, bytes), the slow-start threshold and the
start of the current recovery episode. It is told about acknowledgments, losses and
retransmission timeouts in bulk -- once per ACK, not once per segment -- and never sees
segments, buffers or clocks. Recovery episodes are delimited by transmission numbers (the
scoreboard's ``pn``): a loss of a segment sent before ``recovery_start`` belongs to the
episode that is already being handled (RFC 6582, restated by RFC 9002 §7.3.2).

An algorithm is one module (``newreno.py``) with a subclass of :class:`CongestionControl`
and of :class:`CongestionState`, registered in ``congestion/__init__.py``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import msgspec

from ...errors import MalformedPacket

__all__ = ["CongestionControl", "CongestionState"]


class CongestionState(msgspec.Struct, frozen=True, kw_only=True, tag_field="algorithm"):
    """The serialized state of a controller; each algorithm adds its own fields and tag."""

    cwnd: int
    ssthresh: int | None
    recovery_start: int

    def __post_init__(self) -> None:
        if self.cwnd < 1 or (self.ssthresh is not None and self.ssthresh < 1) or self.recovery_start < 0:
            raise ValueError("congestion state out of range")


class CongestionControl(abc.ABC):
    """One connection's congestion controller.

    ``mss`` is read on every decision; a path-MTU change goes through :meth:`set_mss`.
    """

    __slots__ = ("cwnd", "initial_window", "mss", "recovery_start", "ssthresh")

    #: the name ``StreamOptions.congestion`` selects it by.
    name: ClassVar[str]
    #: its :class:`CongestionState` subclass.
    state_type: ClassVar[type[CongestionState]]

    def __init__(self, mss: int, initial_window: int) -> None:
        self.mss = mss
        #: in segments (RFC 6928).
        self.initial_window = initial_window
        self.cwnd = initial_window * mss
        self.ssthresh: int | None = None
        #: transmission number at which the current recovery episode began.
        self.recovery_start = 0

    def set_mss(self, mss: int) -> None:
        """The segment size changed (path-MTU discovery, §4.2.6): the window keeps its size in
        segments, as the slow-start threshold does."""
        old, self.mss = self.mss, mss
        self.cwnd = max(mss, self.cwnd * mss // old)
        if self.ssthresh is not None:
            self.ssthresh = max(2 * mss, self.ssthresh * mss // old)

    @abc.abstractmethod
    def on_ack(self, acked: int, in_flight_before: int) -> None:
        """``acked`` bytes sent since ``recovery_start`` were newly acknowledged by one ACK.

        ``in_flight_before`` is what was in flight before that ACK: a window that was not
        used must not grow.
        """

    @abc.abstractmethod
    def on_congestion_event(self) -> None:
        """A new recovery episode began (a loss): reduce the window."""

    @abc.abstractmethod
    def on_timeout(self, flight: int) -> None:
        """The retransmission timer expired with ``flight`` bytes in flight."""

    def on_loss(self, largest_lost: int, next_pn: int) -> bool:
        """Segments up to transmission number ``largest_lost`` were deemed lost.

        Returns True when that starts a new recovery episode (the window was reduced once);
        losses of segments sent before the episode began are part of it.
        """
        if largest_lost < self.recovery_start:
            return False
        self.recovery_start = next_pn
        self.on_congestion_event()
        return True

    def on_retransmission_timeout(self, flight: int, next_pn: int) -> None:
        """RTO: cut the window; the first retransmission starts a new episode, so the next
        losses reduce the window again."""
        self.recovery_start = next_pn
        self.on_timeout(flight)

    def reset(self, next_pn: int) -> None:
        """A new path (RESUME, §4.2.5): start again from the initial window in slow start."""
        self.cwnd = self.initial_window * self.mss
        self.ssthresh = None
        self.recovery_start = next_pn

    @abc.abstractmethod
    def export_state(self) -> CongestionState:
        """The controller's state, for the connection snapshot."""

    def restore(self, state: CongestionState) -> None:
        """Load a state exported by :meth:`export_state`.

        Raises:
            MalformedPacket: ``bad-flow-state``, the state belongs to another algorithm.
        """
        if type(state) is not self.state_type:
            raise MalformedPacket("bad-flow-state", f"congestion state is not {self.name}")
        self.cwnd = state.cwnd
        self.ssthresh = state.ssthresh
        self.recovery_start = state.recovery_start
