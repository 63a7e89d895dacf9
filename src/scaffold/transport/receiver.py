"""The peer's direction of the transfer: sequence check, data and FIN, ACK policy, reads
(docs/protocol.md §4.2.4).

:class:`Receiver` composes the receive stream (``receive.py``: reassembly and the receive
buffer) and the ACK policy (``acks.py``), and reports what arrived as events. Data must not
start at or beyond the advertised right edge (``out-of-window``, answered with an ACK); a
FIN that moves, or data past it, is ``bad-fin``. In-order data is acknowledged by the
delayed-ACK rule; a gap that appears or closes, a FIN and a duplicate at once.
"""

from __future__ import annotations

import msgspec

from ..wire.stream import StreamSegment, StreamType
from .acks import AckPolicy, AckState
from .events import EndOfStream, EventQueue
from .options import StreamOptions
from .receive import DUPLICATE, IN_ORDER, ReceiveState, ReceiveStream

__all__ = ["BAD_FIN", "FIN_ARRIVED", "Receiver", "ReceiverState"]

# What :meth:`Receiver.on_data` reports beyond its events.
#: the segment contradicts the peer's FIN: dropped.
BAD_FIN = -1
#: the peer's stream ended with this segment (the connection moves on, §4.2.3).
FIN_ARRIVED = 1


class ReceiverState(msgspec.Struct, frozen=True, kw_only=True):
    """The receiving half in a snapshot."""

    stream: ReceiveState
    acks: AckState


class Receiver:
    """Receives one connection's peer stream."""

    __slots__ = ("acks", "events", "recv_buffer", "stream")

    def __init__(self, options: StreamOptions, events: EventQueue) -> None:
        self.stream = ReceiveStream()
        self.acks = AckPolicy(options.ack_every, options.ack_delay)
        self.events = events
        self.recv_buffer = options.recv_buffer

    def in_window(self, seq: int, payload: bytes) -> bool:
        """Whether a segment carrying data (or a FIN) at ``seq`` passes the sequence check;
        if not, an ACK of the current state must answer it."""
        right_edge = self.stream.read_offset + self.recv_buffer
        if seq > right_edge or (payload and seq >= right_edge):
            self.acks.immediate = True
            return False
        return True

    def on_data(self, segment: StreamSegment, now: float) -> int:
        """Take the payload and FIN of an in-window DATA or FIN segment: :data:`BAD_FIN`,
        :data:`FIN_ARRIVED` or 0."""
        stream, acks = self.stream, self.acks
        payload = segment.payload
        if not stream.check_fin(segment.seq + len(payload), segment.type is StreamType.FIN):
            return BAD_FIN
        acks.on_timestamp(segment.ts_value)
        fresh = False
        if payload:
            before = stream.rcv_nxt
            fit = stream.on_data(segment.seq, payload, stream.read_offset + self.recv_buffer)
            if fit == IN_ORDER:
                fresh = True
                acks.on_in_order(now)
            elif fit != DUPLICATE:  # a gap appeared or closed: tell the sender at once (SACK)
                fresh = True
                acks.immediate = True
            if stream.rcv_nxt > before and not stream.discard:
                self.events.data_received(stream.rcv_nxt - before)
        outcome = 0
        if stream.consume_fin():
            fresh = True
            self.events.push(EndOfStream())
            acks.immediate = True
            outcome = FIN_ARRIVED
        if not fresh:
            stream.duplicate_segments += 1
            acks.immediate = True
        return outcome

    def on_probe(self, ts_value: int) -> None:
        """A KEEPALIVE (or a handshake segment) asks for an immediate ACK."""
        self.acks.ts_recent = ts_value
        self.acks.immediate = True

    def read(self, max_bytes: int, synchronized: bool, mss: int) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order bytes; a synchronized
        connection may owe the peer a window update then."""
        stream = self.stream
        data = stream.read(max_bytes)
        if data and synchronized:
            buffer = self.recv_buffer
            self.acks.on_read(stream.read_offset + buffer, stream.rcv_nxt, buffer, mss)
        return data

    def export_state(self) -> ReceiverState:
        return ReceiverState(stream=self.stream.export_state(), acks=self.acks.export_state())

    def restore(self, state: ReceiverState) -> None:
        self.stream.restore(state.stream)
        self.acks.restore(state.acks)
