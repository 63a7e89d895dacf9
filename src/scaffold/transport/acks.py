"""When to acknowledge, and what our ACKs advertise (docs/protocol.md §4.2.4).

Delayed ACKs: one ACK per ``ack_every`` in-order segments, or ``ack_delay`` after the first
unacknowledged one (RFC 1122 §4.2.3.2, RFC 5681 §4.2); the connection asks for an
immediate one on out-of-order data, a filled gap, a FIN, duplicates and KEEPALIVE. Every
segment carrying the ACK flag resets the policy and records the right edge it advertised,
which never moves left. A window update is sent when reading opened a small window by a
useful amount (silly-window-syndrome avoidance, RFC 1122 §4.2.3.3). ``ts_recent`` is the
peer's timestamp our segments echo.
"""

from __future__ import annotations

import msgspec

__all__ = ["AckPolicy", "AckState"]


class AckState(msgspec.Struct, frozen=True, kw_only=True):
    """The ACK policy in a snapshot (a restored connection acknowledges at once)."""

    pending: int
    advertised_edge: int
    ts_recent: int


class AckPolicy:
    """The ACK state of one connection."""

    __slots__ = ("ack_delay", "ack_every", "advertised_edge", "deadline", "immediate", "pending", "ts_recent")

    def __init__(self, ack_every: int, ack_delay: float) -> None:
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        #: in-order segments received since our last ACK.
        self.pending = 0
        #: an ACK must go out with the next segments.
        self.immediate = False
        #: when the delayed ACK is due, or None.
        self.deadline: float | None = None
        #: the right edge (``ack + window``) our last ACK advertised.
        self.advertised_edge = 0
        #: the peer's timestamp value our segments echo.
        self.ts_recent = 0

    def on_in_order(self, now: float) -> None:
        """An in-order segment arrived (no gap below or above it)."""
        self.pending += 1
        if self.pending >= self.ack_every:
            self.immediate = True
        elif self.deadline is None:
            self.deadline = now + self.ack_delay

    def on_timestamp(self, ts_value: int) -> None:
        """A data segment arrived: echo the timestamp of the oldest one not acknowledged yet
        (RFC 7323 §4.3)."""
        if not self.pending and not self.immediate:
            self.ts_recent = ts_value

    def on_sent(self, edge: int) -> None:
        """A segment with the ACK flag went out, advertising ``edge``."""
        self.advertised_edge = edge
        self.pending = 0
        self.immediate = False
        self.deadline = None

    def on_read(self, edge: int, rcv_nxt: int, buffer: int, mss: int) -> None:
        """The application read: the receive buffer's right edge is now ``edge``.

        Tell a sender that may have stalled, but only once the window grew usefully.
        """
        advertised = self.advertised_edge - rcv_nxt
        if advertised < buffer // 2 and edge - self.advertised_edge >= min(2 * mss, buffer // 2):
            self.immediate = True

    def export_state(self) -> AckState:
        return AckState(pending=self.pending, advertised_edge=self.advertised_edge, ts_recent=self.ts_recent)

    def restore(self, state: AckState) -> None:
        self.pending = state.pending
        self.advertised_edge = state.advertised_edge
        self.ts_recent = state.ts_recent
