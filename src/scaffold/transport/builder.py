"""Building our segments: the ACK fields, the timestamp clock, the count (docs/protocol.md §4.2).

Every segment we send carries our receive window and, with the ACK flag, ``rcv_nxt`` and up
to four SACK blocks (§4.2.4); building one tells the ACK policy that an ACK went out. The
timestamp clock is RFC 7323 style, microseconds modulo 2**32 (0 is never sent: an echo of
0 means "nothing to echo"); a restored connection continues the old host's clock, so the
peer's echoes of pre-migration values still give sane RTT samples.
"""

from __future__ import annotations

import msgspec

from ..wire import stream as wire
from ..wire.stream import StreamFlags, StreamSegment, StreamType
from .acks import AckPolicy
from .receive import ReceiveStream

__all__ = ["BuilderState", "SegmentBuilder"]

_TS_MASK = 0xFFFFFFFF
_ACK = int(StreamFlags.ACK)  # a plain int: IntFlag arithmetic builds enum members per call


class BuilderState(msgspec.Struct, frozen=True, kw_only=True):
    """The builder in a snapshot."""

    #: the last timestamp value sent: the restoring host's clock continues from it.
    ts_last: int
    segments_sent: int


class SegmentBuilder:
    """Encodes one connection's outgoing segments."""

    __slots__ = ("_acks", "_nonce", "_receive", "_recv_buffer", "_ts_offset", "segments_sent", "ts_last")

    def __init__(self, nonce: int, recv_buffer: int, receive: ReceiveStream, acks: AckPolicy) -> None:
        self._nonce = nonce
        self._recv_buffer = recv_buffer
        self._receive = receive
        self._acks = acks
        self._ts_offset = 0
        self.ts_last = 0
        self.segments_sent = 0

    def timestamp(self, now: float) -> int:
        return ((int(now * 1_000_000) + self._ts_offset) & _TS_MASK) or 1

    def rtt_of(self, ts_echo: int, now: float) -> float | None:
        """The RTT a timestamp echo measures (seconds), or None: no echo, or one from the
        future (not ours, or a clock jump)."""
        if not ts_echo:
            return None
        # ``timestamp`` inline (per segment received)
        elapsed = ((((int(now * 1_000_000) + self._ts_offset) & _TS_MASK) or 1) - ts_echo) & _TS_MASK
        return elapsed / 1_000_000 if elapsed < 1 << 31 else None

    def build(
        self, kind: StreamType, seq: int, flags: int, now: float, payload: bytes = b"", token: int = 0
    ) -> bytes:
        """One segment; without the ACK flag its ``ack`` field carries ``token`` (a SYN's
        retry token, docs/protocol.md §4.2.8)."""
        receive = self._receive
        # ``receive.window`` inline (per segment sent)
        window = receive.read_offset + self._recv_buffer - receive.rcv_nxt
        window = window if window > 0 else 0
        ack = token
        sack: tuple[tuple[int, int], ...] = ()
        if flags & _ACK:
            ack = receive.rcv_nxt
            self._acks.on_sent(ack + window)
            if receive.out_of_order is not None:
                sack = receive.sack_blocks()
        # ``timestamp`` inline (per segment sent)
        self.ts_last = ts = ((int(now * 1_000_000) + self._ts_offset) & _TS_MASK) or 1
        self.segments_sent += 1
        echo = self._acks.ts_recent
        if sack:
            return wire.encode(
                StreamSegment(kind, self._nonce, seq, ack, window, flags, ts, echo, sack, payload)
            )
        # Most segments carry no SACK option: packed straight, without a StreamSegment (the
        # fields are ours and in range; wire.encode checks what a caller hands it).
        return (
            wire.FIXED.pack(kind, flags, len(payload), window, self._nonce, seq, ack, ts, echo, 0) + payload
        )

    def export_state(self) -> BuilderState:
        return BuilderState(ts_last=self.ts_last, segments_sent=self.segments_sent)

    def restore(self, state: BuilderState, now: float) -> None:
        self.ts_last = state.ts_last
        self._ts_offset = state.ts_last - int(now * 1_000_000)
        self.segments_sent = state.segments_sent
