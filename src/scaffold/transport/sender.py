"""Our direction of the transfer: cutting segments, ACK processing, RTO and persist timers
(docs/protocol.md §4.2.4), the segment size (§4.2.6).

:class:`Sender` composes the send stream (``send.py``), the scoreboard (``recovery.py``),
the congestion controller (``congestion/``), the RTT estimator (``rtt.py``) and the
path-MTU search (``pmtu.py``). Each call to :meth:`Sender.write` first retransmits segments
deemed lost, oldest first -- cut to the current ``mss`` if it shrank since they were sent
--, then cuts new data (and the FIN) into segments of at most ``mss`` bytes while
``min(cwnd, peer window)`` has room, avoiding small segments while ACKs will open room. A
zero window with nothing in flight is probed on the persist timer, backed off up to
``max_probe_interval``. A retransmission timeout with ``mss`` above the floor is also a
path-MTU black hole suspect: the ``mss`` drops to the floor (``PathMtu.on_black_hole``).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ..wire.stream import MAX_PAYLOAD, StreamFlags, StreamType
from . import congestion
from .congestion import AnyCongestionState
from .events import EventQueue, SendSpaceAvailable
from .options import StreamOptions
from .pmtu import SEARCH_GRANULARITY, PathMtu
from .recovery import Recovery, RecoveryState
from .rtt import RttEstimator, RttState
from .send import SendState, SendStream

__all__ = ["Builder", "Sender", "SenderState"]

#: ``build(kind, seq, flags, now, payload)``: one encoded segment, with our ACK fields.
Builder = Callable[[StreamType, int, int, float, bytes], bytes]

_DATA = StreamType.DATA
_FIN = StreamType.FIN
_ACK = int(StreamFlags.ACK)  # a plain int: IntFlag arithmetic builds enum members per call


class SenderState(msgspec.Struct, frozen=True, kw_only=True):
    """The sending half in a snapshot."""

    #: the segment size in use (it may differ from ``options.mss`` after a path-MTU change).
    mss: int
    #: the highest sequence number (exclusive) the peer allowed us to send.
    peer_right_edge: int
    stream: SendState
    recovery: RecoveryState
    rtt: RttState
    congestion: AnyCongestionState

    def __post_init__(self) -> None:
        segments = self.recovery.segments
        if segments and not self.stream.una <= segments[0].start <= segments[-1].end <= self.stream.nxt:
            raise ValueError("sent segments outside the outstanding sequence numbers")
        if not 1 <= self.mss <= MAX_PAYLOAD:
            raise ValueError(f"mss {self.mss} out of range")


class Sender:
    """Sends one connection's stream reliably within the peer's window and ``cwnd``."""

    __slots__ = (
        "cc",
        "events",
        "max_probe_interval",
        "mss",
        "options",
        "peer_right_edge",
        "persist_backoff",
        "persist_deadline",
        "persist_probes",
        "recovery",
        "rto_deadline",
        "rtt",
        "search",
        "search_ceiling",
        "send_buffer",
        "stream",
    )

    def __init__(
        self, options: StreamOptions, events: EventQueue, now: float = 0.0, mss_ceiling: int = 0
    ) -> None:
        self.events = events
        self.options = options
        self.send_buffer = options.send_buffer
        self.stream = SendStream()
        self.cc = congestion.create(options.congestion, options.mss, options.initial_window)
        self.recovery = Recovery(self.cc)
        self.rtt = RttEstimator(options.initial_rto, options.min_rto, options.max_rto)
        self.mss = options.mss
        #: the path-MTU search (§4.2.6), built when first needed (:attr:`pmtu`): most streams
        #: never probe -- a short request and its answer fit in one segment each
        self.search: PathMtu | None = None
        #: a ceiling whose search has not begun yet (0: none): until its first probe, a
        #: search started from the floor is this number alone
        self.search_ceiling = 0
        if mss_ceiling:
            self.set_ceiling(mss_ceiling, now)
        self.max_probe_interval = options.max_probe_interval
        self.peer_right_edge = 0
        self.rto_deadline: float | None = None
        self.persist_deadline: float | None = None
        self.persist_backoff = 0
        self.persist_probes = 0

    @property
    def pmtu(self) -> PathMtu:
        """The path-MTU search, built now if it was not yet."""
        search = self.search
        if search is None:
            search = self.search = PathMtu(self.options.mss, self.options.pmtu_raise_interval)
            if self.search_ceiling:
                # Deferred at its start (see ``set_ceiling``): it starts as it would have then
                # (pending its first probe, with no timer: ``now`` plays no part).
                search.set_ceiling(self.search_ceiling, 0.0)
                self.search_ceiling = 0
        return search

    def set_ceiling(self, ceiling: int, now: float) -> None:
        """The largest ``mss`` the host's interface towards the peer allows: the search
        starts over from the floor, up to it (docs/protocol.md §4.2.6)."""
        floor = self.options.mss
        if self.search is None and ceiling - floor >= SEARCH_GRANULARITY:
            # A search from the floor with room to search is only pending until its first
            # probe (no timer, nothing sent): keep its ceiling, build it then.
            self.search_ceiling = ceiling
            if self.mss != floor:
                self.set_mss(floor)
            return
        self.set_mss(self.pmtu.set_ceiling(ceiling, now))

    def probe_pending(self) -> bool:
        """A path-MTU probe should go out with the next segments."""
        search = self.search
        return search.pending if search is not None else self.search_ceiling != 0

    def _new_path(self) -> None:
        """The flow continues on another path: the ``mss`` restarts from the floor and the
        search from the ceiling (a search not begun is at that start already)."""
        search = self.search
        self.set_mss(search.new_path() if search is not None else self.options.mss)

    def set_mss(self, mss: int) -> None:
        """Cut segments of at most ``mss`` bytes from now on (the window keeps its size in
        segments); what is outstanding is cut to it when retransmitted."""
        if mss != self.mss:
            self.mss = mss
            self.cc.set_mss(mss)

    def arm_rto(self, now: float) -> None:
        """Start the retransmission timer unless it runs."""
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.interval()

    def stop_timers(self) -> None:
        self.rto_deadline = None
        self.persist_deadline = None

    def on_answer(self) -> None:
        """The handshake (or RESUME) was answered: no retransmission pending, no backoff."""
        self.rto_deadline = None
        self.rtt.backoff = 0

    def on_ack(
        self, ack: int, window: int, sack: tuple[tuple[int, int], ...], rtt: float | None, now: float
    ) -> bool:
        """Process the ACK fields of a segment (``ack`` at most what we sent); ``rtt`` is
        its timestamp's RTT sample, if any. True when it acknowledged anything new;
        then a writer blocked on a full buffer hears of the space once half of it is free."""
        stream = self.stream
        una = stream.una
        progressed = self.recovery.on_ack(ack, una, stream.nxt, sack)
        if ack >= una:
            if ack > una:
                stream.acknowledge(ack)
            edge = ack + window
            self.peer_right_edge = max(self.peer_right_edge, edge)
        # Any acknowledgment proves the peer alive: restart zero-window probing from scratch.
        self.persist_probes = 0
        self.persist_backoff = 0
        if self.persist_deadline is not None and self.peer_right_edge > stream.nxt:
            self.persist_deadline = None
        if not progressed:
            return False
        if rtt is not None:
            self.rtt.on_sample(rtt)
        self.rtt.backoff = 0
        recovery = self.recovery
        if recovery.in_flight or recovery.lost_count:
            self.rto_deadline = now + self.rtt.interval()
        else:
            self.rto_deadline = None
        if stream.blocked:
            space = 0 if stream.shutdown else self.send_buffer - stream.buffered
            if space >= self.send_buffer // 2:
                stream.blocked = False
                self.events.push(SendSpaceAvailable(space))
        return True

    def on_handshake_timeout(self, max_retries: int) -> bool:
        """The RTO expired before SYN, SYN-ACK or RESUME was answered: resend it, backed
        off. False when the retry limit is exceeded."""
        self.rtt.backoff += 1
        return self.rtt.backoff <= max_retries

    def on_retransmission_timeout(self, max_retries: int, now: float) -> bool:
        """The RTO expired after the handshake. False when the retry limit is exceeded."""
        if self.recovery.segments is None:
            return True  # nothing outstanding: not a failed retry
        self.rtt.backoff += 1
        if self.rtt.backoff > max_retries:
            return False
        self.recovery.on_timeout()
        # (A search not begun has its ``mss`` at the floor: no black hole to suspect.)
        if self.search is not None and (mss := self.search.on_black_hole(now)) is not None:
            self.set_mss(mss)
        return True

    def on_persist_timeout(self, max_retries: int) -> bool:
        """The persist timer expired: probe the window. False when the retry limit is exceeded."""
        self.persist_deadline = None
        self.persist_probes += 1
        if self.persist_probes > max_retries:
            return False
        self.persist_backoff += 1
        return True

    def rewind(self, window: int) -> None:
        """The peer's host lost the flow (RESUME, §4.2.5): resend everything from ``una`` on
        a new path, with a fresh congestion controller and path-MTU search."""
        self._new_path()
        self.recovery.reset()
        self.stream.rewind()
        self.stop_timers()
        self.rtt.backoff = 0
        self.peer_right_edge = self.stream.una + window

    def resume_at(self, ack: int, window: int, fin_received: bool) -> None:
        """A new host continues our flow (RESUME-ACK, §4.2.5): send from ``ack``; when
        ``fin_received`` the old host's FIN had already ended our direction."""
        self.on_answer()
        self._new_path()
        stream = self.stream
        if fin_received:
            stream.data = None
            stream.shutdown = stream.fin_sent = stream.fin_acked = True
        stream.una = stream.nxt = ack
        self.peer_right_edge = ack + window

    def write(self, now: float, out: list[bytes], build: Builder) -> None:
        """Append to ``out`` the segments that may go out now."""
        stream, recovery, cc = self.stream, self.recovery, self.cc
        mss = self.mss
        # 1. Repair: retransmit segments deemed lost, oldest first, within cwnd.
        if recovery.lost_count and recovery.segments is not None:
            for segment in recovery.segments:
                if not segment.lost:
                    continue
                if segment.end - segment.start - segment.fin > mss:
                    recovery.split(segment, segment.start + mss)  # the mss shrank (§4.2.6)
                size = segment.end - segment.start
                if recovery.in_flight and recovery.in_flight + size > cc.cwnd:
                    break
                recovery.on_retransmitted(segment)
                payload = stream.payload(segment.start, segment.end - segment.fin)
                out.append(build(_FIN if segment.fin else _DATA, segment.start, _ACK, now, payload))
                stream.bytes_retransmitted += len(payload)
                self.arm_rto(now)
                if not recovery.lost_count:
                    break
        # 2. New data, then the FIN, within min(cwnd, peer window).
        window_blocked = False
        # Sending moves only ``nxt``: where the buffered data ends holds for the whole loop.
        data = stream.data  # (``stream.buffered`` inline: once per pump of every stream)
        data_end = stream.una + (len(data) if data is not None else 0) if not stream.fin_sent else 0
        while not stream.fin_sent:
            nxt = stream.nxt
            left = data_end - nxt
            if left <= 0 and not stream.shutdown:
                break
            window_room = self.peer_right_edge - nxt
            cwnd_room = cc.cwnd - recovery.in_flight
            size = min(mss, left, window_room, cwnd_room)
            if left > 0:
                if size <= 0:
                    window_blocked = window_room <= 0
                    break
                if size < min(mss, left) and recovery.in_flight:
                    # Avoid silly small segments while acknowledgments will open room.
                    window_blocked = window_room < min(mss, left)
                    break
            elif recovery.in_flight and cwnd_room <= 0:
                break
            size = max(size, 0)
            fin = stream.shutdown and nxt + size == data_end
            end = nxt + size + fin
            payload = stream.payload(nxt, nxt + size)
            recovery.on_sent(nxt, end, fin)
            stream.nxt = end
            stream.bytes_sent += size
            out.append(build(_FIN if fin else _DATA, nxt, _ACK, now, payload))
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rtt.interval()
            if fin:
                stream.fin_sent = True
        # 3. Zero window with nothing in flight: probe it on the persist timer (§4.2.4).
        if window_blocked and recovery.segments is None:
            if self.persist_deadline is None:
                rto = self.rtt.rto
                interval = min(rto * (1 << self.persist_backoff), self.max_probe_interval)
                self.persist_deadline = now + max(interval, rto)
        else:
            self.persist_deadline = None

    def export_state(self) -> SenderState:
        congestion = self.cc.export_state()
        assert isinstance(congestion, AnyCongestionState)  # every algorithm is in the union
        return SenderState(
            mss=self.mss,
            peer_right_edge=self.peer_right_edge,
            stream=self.stream.export_state(),
            recovery=self.recovery.export_state(),
            rtt=self.rtt.export_state(),
            congestion=congestion,
        )

    def restore(self, state: SenderState) -> None:
        """Load a snapshot (the timers stay stopped). The path is new (this host's): the
        ``mss`` starts again from the floor and the search from the ceiling (§4.2.6).

        Raises:
            MalformedPacket: ``bad-flow-state``, the congestion state is another algorithm's.
        """
        self.mss = self.cc.mss = state.mss
        self.peer_right_edge = state.peer_right_edge
        self.stream.restore(state.stream)
        self.recovery.restore(state.recovery)
        self.rtt.restore(state.rtt)
        self.cc.restore(state.congestion)
        self._new_path()
