"""The outbound byte stream: send buffer, send offsets and our FIN (docs/protocol.md §4.2.3).

``data`` holds stream bytes ``[una, una + len(data))``: what the application wrote and the
peer has not acknowledged yet. ``nxt`` is the next sequence number to send for the first
time; a FIN occupies one sequence number after the last data byte. The buffer is allocated
on the first write and released whenever the peer has acknowledged all of it.
"""

from __future__ import annotations

import msgspec

__all__ = ["SendState", "SendStream"]


class SendState(msgspec.Struct, frozen=True, kw_only=True):
    """The outbound stream in a snapshot."""

    una: int
    nxt: int
    data: bytes
    shutdown: bool
    fin_sent: bool
    fin_acked: bool
    blocked: bool
    bytes_sent: int = 0
    bytes_retransmitted: int = 0
    bytes_acked: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.una <= self.nxt <= self.una + len(self.data) + 1:
            raise ValueError("send offsets out of order")
        if (self.fin_acked and not self.fin_sent) or (self.fin_sent and not self.shutdown):
            raise ValueError("inconsistent FIN flags")


class SendStream:
    """Our direction of the stream."""

    __slots__ = (
        "blocked",
        "bytes_acked",
        "bytes_retransmitted",
        "bytes_sent",
        "data",
        "fin_acked",
        "fin_sent",
        "nxt",
        "shutdown",
        "una",
    )

    def __init__(self) -> None:
        #: oldest unacknowledged sequence number.
        self.una = 0
        #: next sequence number sent for the first time.
        self.nxt = 0
        self.data: bytearray | None = None
        #: the application shut our direction down: a FIN follows the buffered data.
        self.shutdown = False
        self.fin_sent = False
        self.fin_acked = False
        #: a write came up short (or overflowed with ``force``): tell the application when
        #: half the buffer is free again.
        self.blocked = False
        self.bytes_sent = 0
        self.bytes_retransmitted = 0
        self.bytes_acked = 0

    @property
    def buffered(self) -> int:
        """Bytes held: unsent plus sent but unacknowledged."""
        data = self.data
        return len(data) if data is not None else 0

    @property
    def data_end(self) -> int:
        """Stream offset the next written byte gets (after our FIN is acknowledged, the FIN's)."""
        return self.una + self.buffered if not self.fin_acked else self.una - 1

    def write(self, data: bytes, limit: int, force: bool) -> int:
        """Append up to ``limit - buffered`` bytes (all with ``force``); how many were taken."""
        held = self.data  # ``buffered`` inline (per write)
        space = limit - (len(held) if held is not None else 0)
        size = len(data)
        if space < size and not force:
            self.blocked = True
            size = max(space, 0)
            data = data[:size]
        elif space < size:
            self.blocked = True
        if size:
            if self.data is None:
                self.data = bytearray(data)
            else:
                self.data += data
        return size

    def payload(self, start: int, end: int) -> bytes:
        """Stream bytes ``[start, end)``, all still buffered."""
        data = self.data
        if data is None or end <= start:
            return b""
        una = self.una
        return bytes(data[start - una : end - una])

    def acknowledge(self, ack: int) -> None:
        """The peer acknowledged every sequence number below ``ack`` (> ``una``)."""
        data = self.data
        una = self.una
        # ``data_end`` inline (per acknowledgment: no property and ``buffered`` calls)
        data_end = una + (len(data) if data is not None else 0) if not self.fin_acked else una - 1
        if data is not None:
            del data[: min(ack, data_end) - una]
            if not data:
                self.data = None
        self.bytes_acked += ack - una
        self.una = ack
        if self.fin_sent and ack > data_end:
            self.fin_acked = True

    def rewind(self) -> None:
        """Resend from ``una`` (RESUME, §4.2.5)."""
        self.nxt = self.una
        self.fin_sent = self.fin_acked

    def export_state(self) -> SendState:
        return SendState(
            una=self.una,
            nxt=self.nxt,
            data=bytes(self.data or b""),
            shutdown=self.shutdown,
            fin_sent=self.fin_sent,
            fin_acked=self.fin_acked,
            blocked=self.blocked,
            bytes_sent=self.bytes_sent,
            bytes_retransmitted=self.bytes_retransmitted,
            bytes_acked=self.bytes_acked,
        )

    def restore(self, state: SendState) -> None:
        self.una = state.una
        self.nxt = state.nxt
        self.data = bytearray(state.data) if state.data else None
        self.shutdown = state.shutdown
        self.fin_sent = state.fin_sent
        self.fin_acked = state.fin_acked
        self.blocked = state.blocked
        self.bytes_sent = state.bytes_sent
        self.bytes_retransmitted = state.bytes_retransmitted
        self.bytes_acked = state.bytes_acked
