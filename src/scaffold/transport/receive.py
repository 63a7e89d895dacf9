"""The inbound byte stream: reassembly, receive buffer and the peer's FIN (docs/protocol.md §4.2.4).

``data`` holds in-order stream bytes ``[read_offset, rcv_nxt)`` the application has not
read. Data above a gap is kept as disjoint pieces keyed by their start, bookkept in a
:class:`RangeSet`, and moved into ``data`` when the gap fills; the same ranges give the SACK
blocks. Buffers and the out-of-order store are allocated when needed and released when
drained, so an idle connection holds none.
"""

from __future__ import annotations

import msgspec

from ..wire.stream import MAX_SACK_BLOCKS
from .rangeset import RangeSet

__all__ = ["DUPLICATE", "GAP_FILLED", "IN_ORDER", "OUT_OF_ORDER", "ReceiveState", "ReceiveStream"]

# How a segment's payload fit (:meth:`ReceiveStream.on_data`); the ACK policy depends on it.
#: nothing new.
DUPLICATE = 0
#: in order, nothing held above it.
IN_ORDER = 1
#: in order, and out-of-order data was held (the gap may have closed).
GAP_FILLED = 2
#: above a gap: held.
OUT_OF_ORDER = 3


class ReceiveState(msgspec.Struct, frozen=True, kw_only=True):
    """The inbound stream in a snapshot."""

    rcv_nxt: int
    read_offset: int
    data: bytes
    out_of_order: list[tuple[int, bytes]]
    peer_fin: int | None
    discard: bool
    bytes_received: int = 0
    duplicate_segments: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.read_offset <= self.rcv_nxt or len(self.data) > self.rcv_nxt - self.read_offset:
            raise ValueError("receive offsets out of order")
        if self.peer_fin is not None and self.peer_fin < 0:
            raise ValueError("negative FIN offset")
        if any(start <= self.rcv_nxt for start, _ in self.out_of_order):
            raise ValueError("out-of-order data below the next expected byte")


class ReceiveStream:
    """The peer's direction of the stream."""

    __slots__ = (
        "bytes_received",
        "data",
        "discard",
        "duplicate_segments",
        "last_out_of_order",
        "out_of_order",
        "peer_fin",
        "pieces",
        "rcv_nxt",
        "read_offset",
    )

    def __init__(self) -> None:
        #: next sequence number expected (past the FIN once it was received).
        self.rcv_nxt = 0
        #: stream offset of the next byte the application reads.
        self.read_offset = 0
        self.data: bytearray | None = None
        #: ranges held above ``rcv_nxt``, and their bytes by start (None when empty).
        self.out_of_order: RangeSet | None = None
        self.pieces: dict[int, bytes] | None = None
        #: where the latest out-of-order arrival started (its SACK block goes first).
        self.last_out_of_order = 0
        #: sequence number of the peer's FIN, once known.
        self.peer_fin: int | None = None
        #: the application closed: acknowledge, but drop incoming data.
        self.discard = False
        self.bytes_received = 0
        self.duplicate_segments = 0

    @property
    def readable(self) -> int:
        data = self.data
        return len(data) if data is not None else 0

    @property
    def fin_consumed(self) -> bool:
        """Every byte and the FIN of the peer's stream arrived."""
        return self.peer_fin is not None and self.rcv_nxt > self.peer_fin

    @property
    def stream_rcv_nxt(self) -> int:
        """``rcv_nxt`` as a stream offset (not counting the FIN's sequence number)."""
        return self.rcv_nxt - 1 if self.fin_consumed else self.rcv_nxt

    def window(self, buffer: int) -> int:
        """Free space above ``rcv_nxt`` in a receive buffer of ``buffer`` bytes."""
        return max(0, self.read_offset + buffer - self.rcv_nxt)

    def on_data(self, seq: int, payload: bytes, right_edge: int) -> int:
        """Take ``payload`` at ``seq`` (which starts below ``right_edge``); how it fit."""
        rcv_nxt = self.rcv_nxt
        end = seq + len(payload)
        if end <= rcv_nxt:
            return DUPLICATE
        if end > right_edge:
            payload = payload[: right_edge - seq]
        if seq > rcv_nxt:
            self._hold(seq, payload)
            return OUT_OF_ORDER
        if seq < rcv_nxt:
            payload = payload[rcv_nxt - seq :]
        self._deliver(payload)
        if self.out_of_order is None:
            return IN_ORDER
        self._drain()
        return GAP_FILLED

    def check_fin(self, end: int, fin: bool) -> bool:
        """Learn the peer's FIN from a segment ending at ``end``. False when the segment
        contradicts the FIN already known (``bad-fin``: it moves the FIN or has data past it)."""
        peer_fin = self.peer_fin
        if fin:
            if peer_fin is None:
                self.peer_fin = end
                return True
            if peer_fin != end:
                return False
        return peer_fin is None or end <= peer_fin

    def consume_fin(self) -> bool:
        """True (once) when every byte before the peer's FIN has arrived: the FIN takes its
        sequence number."""
        if self.peer_fin is not None and self.rcv_nxt == self.peer_fin:
            self.rcv_nxt += 1
            return True
        return False

    def rewind(self) -> None:
        """The peer's host lost the flow (RESUME, §4.2.5): what it sent beyond ``rcv_nxt``
        is dropped; the new host resends it."""
        self.clear_out_of_order()
        if self.peer_fin is not None and not self.fin_consumed:
            self.peer_fin = None

    def resume_at(self, seq: int, peer_ended: bool) -> None:
        """A new host continues our flow (RESUME-ACK, §4.2.5): the peer's next byte is ``seq``
        (its FIN at ``seq - 1`` was acknowledged already when ``peer_ended``)."""
        self.rcv_nxt = self.read_offset = seq
        if peer_ended:
            self.peer_fin = self.read_offset = seq - 1

    def read(self, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order bytes."""
        data = self.data
        if data is None:
            return b""
        if max_bytes < 0 or max_bytes >= len(data):
            self.data = None
            out = bytes(data)
        else:
            out = bytes(data[:max_bytes])
            del data[:max_bytes]
        self.read_offset += len(out)
        return out

    def discard_input(self) -> None:
        """From now on drop what arrives (it is still acknowledged), and what is held."""
        self.discard = True
        self.data = None
        self.clear_out_of_order()
        self.read_offset = self.rcv_nxt

    def clear_out_of_order(self) -> None:
        self.out_of_order = None
        self.pieces = None

    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """Up to ``MAX_SACK_BLOCKS`` held ranges: the one holding the latest arrival first,
        then the highest others (RFC 2018 §4)."""
        ranges = self.out_of_order
        if ranges is None:
            return ()
        latest = self.last_out_of_order
        first = ranges.find(latest)
        blocks = [first] if first is not None else []
        for block in reversed(ranges):
            if len(blocks) >= MAX_SACK_BLOCKS:
                break
            if block != first:
                blocks.append(block)
        return tuple(blocks)

    def _deliver(self, payload: bytes) -> None:
        size = len(payload)
        self.rcv_nxt += size
        self.bytes_received += size
        if self.discard:
            self.read_offset = self.rcv_nxt
        elif self.data is None:
            self.data = bytearray(payload)
        else:
            self.data += payload

    def _hold(self, seq: int, payload: bytes) -> None:
        ranges = self.out_of_order
        pieces = self.pieces
        if ranges is None or pieces is None:
            ranges = self.out_of_order = RangeSet()
            pieces = self.pieces = {}
        # Keep only the parts not held yet, so the stored pieces stay disjoint.
        for start, stop in ranges.gaps(seq, seq + len(payload)):
            pieces[start] = payload[start - seq : stop - seq]
        ranges.add(seq, seq + len(payload))
        self.last_out_of_order = seq

    def _drain(self) -> None:
        ranges = self.out_of_order
        pieces = self.pieces
        assert ranges is not None and pieces is not None
        while ranges and ranges.first()[0] <= self.rcv_nxt:
            start, stop = ranges.shift()
            position = start
            while position < stop:
                chunk = pieces.pop(position)
                chunk_end = position + len(chunk)
                if chunk_end > self.rcv_nxt:
                    self._deliver(chunk[self.rcv_nxt - position :])
                position = chunk_end
        if not ranges:
            self.clear_out_of_order()

    def export_state(self) -> ReceiveState:
        return ReceiveState(
            rcv_nxt=self.rcv_nxt,
            read_offset=self.read_offset,
            data=bytes(self.data or b""),
            out_of_order=sorted((self.pieces or {}).items()),
            peer_fin=self.peer_fin,
            discard=self.discard,
            bytes_received=self.bytes_received,
            duplicate_segments=self.duplicate_segments,
        )

    def restore(self, state: ReceiveState) -> None:
        self.rcv_nxt = state.rcv_nxt
        self.read_offset = state.read_offset
        self.data = bytearray(state.data) if state.data else None
        self.clear_out_of_order()
        for start, chunk in state.out_of_order:
            if chunk:
                self._hold(start, chunk)
        self.peer_fin = state.peer_fin
        self.discard = state.discard
        self.bytes_received = state.bytes_received
        self.duplicate_segments = state.duplicate_segments
