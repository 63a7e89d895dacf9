"""Loss recovery: the scoreboard of sent segments (docs/protocol.md §4.2.4).

Every transmission of a range of the stream gets a new transmission number (``pn``), as
RFC 9002 does with packet numbers. Cumulative ACKs and SACK blocks (RFC 2018) take segments
off the scoreboard; a segment is deemed lost once one sent ``PACKET_THRESHOLD``
transmissions after it is acknowledged (the SACK analogue of three duplicate ACKs) and is
then retransmitted by the sender; a retransmission timeout deems everything in flight lost.
The congestion controller is told once per ACK, loss batch and timeout.
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

from .congestion import CongestionControl

__all__ = ["PACKET_THRESHOLD", "Recovery", "RecoveryState", "SentSegment"]

#: a segment is lost when one sent this many transmissions later is acknowledged.
PACKET_THRESHOLD = 3


class SentSegment:
    """One transmitted range ``[start, end)``; ``end`` counts the FIN's sequence number."""

    __slots__ = ("end", "fin", "lost", "pn", "start")

    def __init__(self, start: int, end: int, fin: bool, pn: int, lost: bool = False) -> None:
        self.start = start
        self.end = end
        self.fin = fin
        self.pn = pn
        self.lost = lost

    def __repr__(self) -> str:
        lost = ", lost" if self.lost else ""
        return f"SentSegment([{self.start}, {self.end}){', fin' if self.fin else ''}, pn={self.pn}{lost})"


class SentRecord(msgspec.Struct, frozen=True, array_like=True):
    """A :class:`SentSegment` in a snapshot."""

    start: int
    end: int
    fin: bool
    pn: int
    lost: bool


class RecoveryState(msgspec.Struct, frozen=True, kw_only=True):
    """The scoreboard in a snapshot; its segments count as sent when restored."""

    segments: list[SentRecord]
    next_pn: int
    largest_acked: int
    retransmit_timeouts: int = 0
    loss_episodes: int = 0

    def __post_init__(self) -> None:
        position = -1
        for record in self.segments:
            if not position <= record.start < record.end or not 0 <= record.pn < self.next_pn:
                raise ValueError("sent segments out of order")
            position = record.end
        if self.largest_acked < -1 or self.largest_acked >= self.next_pn:
            raise ValueError("largest acknowledged transmission out of range")


def _start_of(segment: SentSegment) -> int:
    return segment.start


class Recovery:
    """The scoreboard of one connection's sent, unacknowledged segments, in stream order.

    ``segments`` is None while nothing is outstanding (an idle connection holds no list).
    """

    __slots__ = (
        "cc",
        "in_flight",
        "largest_acked",
        "loss_episodes",
        "lost_count",
        "next_pn",
        "retransmit_timeouts",
        "segments",
    )

    def __init__(self, cc: CongestionControl) -> None:
        self.cc = cc
        self.segments: list[SentSegment] | None = None
        #: sequence numbers sent, not acknowledged and not deemed lost.
        self.in_flight = 0
        #: segments deemed lost and not retransmitted yet.
        self.lost_count = 0
        self.next_pn = 0
        self.largest_acked = -1
        self.retransmit_timeouts = 0
        self.loss_episodes = 0

    def on_sent(self, start: int, end: int, fin: bool) -> None:
        """A new range went out."""
        segment = SentSegment(start, end, fin, self.next_pn)
        self.next_pn += 1
        self.in_flight += end - start
        if self.segments is None:
            self.segments = [segment]
        else:
            self.segments.append(segment)

    def on_retransmitted(self, segment: SentSegment) -> None:
        """A lost segment went out again, with a new transmission number."""
        segment.lost = False
        segment.pn = self.next_pn
        self.next_pn += 1
        self.lost_count -= 1
        self.in_flight += segment.end - segment.start

    def split(self, segment: SentSegment, at: int) -> None:
        """Cut a lost segment in two at sequence number ``at`` (the segment size shrank,
        docs/protocol.md §4.2.6): both halves are lost and will be retransmitted."""
        assert segment.lost and segment.start < at < segment.end and self.segments is not None
        tail = SentSegment(at, segment.end, segment.fin, segment.pn, lost=True)
        segment.end = at
        segment.fin = False
        self.segments.insert(self.segments.index(segment) + 1, tail)
        self.lost_count += 1

    def on_ack(self, ack: int, una: int, nxt: int, sack: tuple[tuple[int, int], ...]) -> bool:
        """Process a cumulative ``ack`` (``una`` the previous one) and SACK blocks.

        Returns True when anything new was acknowledged. Detects losses and tells the
        congestion controller.
        """
        segments = self.segments
        progressed = ack > una
        if segments is None:
            return progressed
        cc = self.cc
        recovery_start = cc.recovery_start
        in_flight_before = in_flight = self.in_flight
        lost_count = self.lost_count
        cc_acked = 0
        largest = -1
        if progressed:
            una = ack
            count = 0
            for segment in segments:
                if segment.end > ack:
                    break
                count += 1
                size = segment.end - segment.start
                if segment.lost:
                    lost_count -= 1
                else:
                    in_flight -= size
                pn = segment.pn
                largest = max(largest, pn)
                if pn >= recovery_start:
                    cc_acked += size
            del segments[:count]
            if segments and segments[0].start < ack:
                segment = segments[0]
                if not segment.lost:
                    in_flight -= ack - segment.start
                segment.start = ack
        for start, stop in sack:
            if stop <= una or start >= nxt:
                continue
            index = bisect_left(segments, start, key=_start_of)
            while index < len(segments) and segments[index].end <= stop:
                segment = segments.pop(index)
                progressed = True
                size = segment.end - segment.start
                if segment.lost:
                    lost_count -= 1
                else:
                    in_flight -= size
                pn = segment.pn
                largest = max(largest, pn)
                if pn >= recovery_start:
                    cc_acked += size
        self.in_flight = in_flight
        self.lost_count = lost_count
        if largest > self.largest_acked:
            self.largest_acked = largest
            self._detect_losses()
        if cc_acked:
            cc.on_ack(cc_acked, in_flight_before)
        if not segments:
            self.segments = None
        return progressed

    def _detect_losses(self) -> None:
        threshold = self.largest_acked - PACKET_THRESHOLD
        if threshold < 0 or self.segments is None:
            return
        largest_lost = -1
        for segment in self.segments:
            if not segment.lost and segment.pn <= threshold:
                segment.lost = True
                self.lost_count += 1
                self.in_flight -= segment.end - segment.start
                largest_lost = max(largest_lost, segment.pn)
        if largest_lost >= 0 and self.cc.on_loss(largest_lost, self.next_pn):
            self.loss_episodes += 1

    def on_timeout(self) -> None:
        """The retransmission timer expired with segments outstanding: deem them all lost."""
        if self.segments is None:
            return
        self.retransmit_timeouts += 1
        flight = self.in_flight
        for segment in self.segments:
            if not segment.lost:
                segment.lost = True
                self.lost_count += 1
        self.in_flight = 0
        self.cc.on_retransmission_timeout(flight, self.next_pn)

    def reset(self) -> None:
        """A new path (RESUME, §4.2.5): forget what was sent; congestion control restarts."""
        self.clear()
        self.largest_acked = self.next_pn - 1
        self.cc.reset(self.next_pn)

    def clear(self) -> None:
        self.segments = None
        self.in_flight = 0
        self.lost_count = 0

    def export_state(self) -> RecoveryState:
        return RecoveryState(
            segments=[SentRecord(s.start, s.end, s.fin, s.pn, s.lost) for s in self.segments or ()],
            next_pn=self.next_pn,
            largest_acked=self.largest_acked,
            retransmit_timeouts=self.retransmit_timeouts,
            loss_episodes=self.loss_episodes,
        )

    def restore(self, state: RecoveryState) -> None:
        segments = [SentSegment(r.start, r.end, r.fin, r.pn, r.lost) for r in state.segments]
        self.segments = segments or None
        self.in_flight = sum(s.end - s.start for s in segments if not s.lost)
        self.lost_count = sum(1 for s in segments if s.lost)
        self.next_pn = state.next_pn
        self.largest_acked = state.largest_acked
        self.retransmit_timeouts = state.retransmit_timeouts
        self.loss_episodes = state.loss_episodes
