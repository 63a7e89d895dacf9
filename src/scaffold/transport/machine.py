"""``StreamMachine``: the protocol engine of a stream connection (docs/protocol.md §4.2).

Segments in (:meth:`~StreamMachine.receive_segment`), segments out
(:meth:`~StreamMachine.segments_to_send`), timers (:meth:`~StreamMachine.get_timer`,
:meth:`~StreamMachine.handle_timer`) and the moves through the state tables of
``state.py``: the handshake (§4.2.3), RESUME (§4.2.5, ``resume.py``), the close (§4.2.3),
liveness (§4.2.4). It delegates our direction to :class:`~.sender.Sender` (send stream,
scoreboard, congestion control, RTT), the peer's to :class:`~.receiver.Receiver`
(reassembly, ACK policy), encoding to :class:`~.builder.SegmentBuilder` and keepalives to
:class:`~.liveness.Liveness`. ``connection.py`` adds the application's side on top.

Sequence numbers are stream offsets from 0 in each direction; the flow's nonce keeps blind
and stale segments out (§4.2.2). Path-MTU probes (PROBE, answered by PROBE-ACK, §4.2.6) go
out with the segments of a synchronized connection; the search is the sender's
(``pmtu.py``). Nothing here reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

from typing import Literal

from ..errors import BrokenPathError, MalformedPacket, ScaffoldError
from ..wire import stream as wire
from ..wire.stream import StreamFlags, StreamSegment, StreamType
from . import resume
from .builder import SegmentBuilder
from .events import Connected, ConnectionTerminated, EndOfStream, EventQueue, Reset
from .liveness import Liveness
from .options import StreamOptions
from .receiver import BAD_FIN, FIN_ARRIVED, Receiver
from .sender import Sender
from .state import (
    HANDSHAKE,
    HANDSHAKE_SEGMENT,
    HANDSHAKING,
    PATH_FAILURES,
    SENDING,
    SYNCHRONIZED,
    Happening,
    StreamState,
    TerminationReason,
    after_close_step,
)

__all__ = ["Role", "StreamMachine"]

Role = Literal["client", "server"]

_IDLE = StreamState.IDLE
_CLOSED = StreamState.CLOSED
_TIME_WAIT = StreamState.TIME_WAIT
_DATA = StreamType.DATA
_FIN = StreamType.FIN
_PROBE = StreamType.PROBE
_PROBE_ACK = StreamType.PROBE_ACK
#: the probe's padding: the probed segment size and room for the largest SACK option
_SACK_ROOM = 32
_ACK = int(StreamFlags.ACK)  # a plain int: IntFlag arithmetic builds enum members per call


class StreamMachine:
    """The protocol side of one end of a stream flow; :class:`~.connection.StreamConnection`
    is what applications and the host stack use."""

    __slots__ = (
        "_builder",
        "_closed_last",
        "_control",
        "_error",
        "_error_reason",
        "_events",
        "_keepalive_pending",
        "_liveness",
        "_nonce",
        "_opt",
        "_probe_ack",
        "_receiver",
        "_role",
        "_rst_pending",
        "_segments_received",
        "_sender",
        "_state",
        "_time_wait_deadline",
        "_timer",
        "_timer_stale",
        "drops",
    )

    def __init__(self, role: Role, nonce: int, now: float, options: StreamOptions) -> None:
        self._role: Role = role
        self._nonce = nonce
        self._opt = options
        self._state = _IDLE
        self._events = EventQueue()
        self.drops: dict[str, int] = {}
        self._error: ScaffoldError | None = None
        self._error_reason: str | None = None
        self._sender = Sender(options, self._events)
        self._receiver = receiver = Receiver(options, self._events)
        self._builder = SegmentBuilder(nonce, options.recv_buffer, receiver.stream, receiver.acks)
        self._liveness = Liveness(options, now)
        self._segments_received = 0
        self._control: StreamType | None = None  # SYN, SYN-ACK, RESUME or RESUME-ACK to send
        self._keepalive_pending = False
        self._rst_pending = False
        self._probe_ack = 0  # a PROBE's size to answer with PROBE-ACK
        self._closed_last = False  # we shut down after the peer's FIN: no TIME_WAIT
        self._time_wait_deadline: float | None = None
        # get_timer() caches the earliest deadline until one of our methods may change one
        self._timer: float | None = None
        self._timer_stale = True

    # -- network side ------------------------------------------------------------------------------

    def receive_segment(self, data: bytes | memoryview, now: float) -> None:
        """Process one transport segment from the network.

        Never raises for bad input: malformed, wrong-nonce, out-of-window or unexpected
        segments are dropped and counted in :attr:`drops` by reason.
        """
        try:
            segment = wire.parse(data)
        except MalformedPacket as exc:
            self._drop(exc.reason)
            return
        if segment.nonce != self._nonce:
            self._drop("bad-nonce")
            return
        if self._state is _CLOSED:
            self._drop("closed")
            return
        self._segments_received += 1
        self._timer_stale = True
        self._sender.pmtu.heard = True  # the path works (path-MTU probes, §4.2.6)
        kind = segment.type
        if kind is _DATA or kind is _FIN or kind is StreamType.KEEPALIVE:
            self._on_stream_segment(segment, now)
        elif kind is StreamType.RST:
            self._on_reset()
        elif kind is StreamType.SYN:
            self._on_syn(segment, now)
        elif kind is StreamType.SYN_ACK:
            self._on_syn_ack(segment, now)
        elif kind is StreamType.RESUME:
            self._on_resume(segment, now)
        elif kind is StreamType.RESUME_ACK:
            self._on_resume_ack(segment, now)
        else:
            self._on_path_probe(segment, now)

    def segments_to_send(self, now: float) -> list[bytes]:
        """The segments to put on the wire now (window and congestion limited)."""
        out: list[bytes] = []
        if self._rst_pending:
            self._rst_pending = False
            out.append(self._builder.build(StreamType.RST, self._sender.stream.nxt, _ACK, now))
            return out
        state = self._state
        if state is _IDLE or state is _CLOSED:
            return out
        self._timer_stale = True
        build = self._builder.build
        if self._control is not None:
            self._send_control(self._control, now, out)
            self._control = None
        if state in SYNCHRONIZED:
            if state is not _TIME_WAIT:
                self._sender.write(now, out, build)
            if self._keepalive_pending:
                self._keepalive_pending = False
                out.append(build(StreamType.KEEPALIVE, self._sender.stream.nxt, _ACK, now))
            if self._probe_ack:
                out.append(build(_PROBE_ACK, self._probe_ack, 0, now))
                self._probe_ack = 0
            sender = self._sender
            pmtu = sender.pmtu
            # Probe only when larger segments would carry something: more than one segment
            # is buffered (a request and its response of a few bytes never pay for a probe).
            if pmtu.pending and state is not _TIME_WAIT and sender.stream.buffered > sender.mss:
                size = pmtu.next_probe(now, sender.rtt.interval())
                out.append(build(_PROBE, size, 0, now, bytes(size + _SACK_ROOM)))
            if self._receiver.acks.immediate:
                out.append(build(_DATA, self._sender.stream.nxt, _ACK, now))
        return out

    def get_timer(self) -> float | None:
        """Absolute time at which :meth:`handle_timer` must be called, or None.

        O(1): the earliest deadline is cached until one of this connection's own methods
        changes one, so a host may compare it after every call to see whether it moved.
        """
        if self._timer_stale:
            self._timer = self._next_deadline()
            self._timer_stale = False
        return self._timer

    def _next_deadline(self) -> float | None:
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return None
        sender = self._sender
        deadlines = (
            self._liveness.idle_deadline(),
            sender.rto_deadline,
            sender.persist_deadline,
            self._receiver.acks.deadline,
            self._time_wait_deadline,
            self._keepalive_deadline(),
            sender.pmtu.deadline,
        )
        return min(at for at in deadlines if at is not None)

    def handle_timer(self, now: float) -> None:
        """Run every timer that expired at ``now``."""
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return
        self._timer_stale = True
        sender = self._sender
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._terminate(TerminationReason.CLOSED)
            return
        if now >= self._liveness.idle_deadline():
            self._terminate(TerminationReason.IDLE_TIMEOUT)
            return
        if sender.rto_deadline is not None and now >= sender.rto_deadline:
            sender.rto_deadline = None
            self._on_retransmission_timeout(now)
            if self._state is _CLOSED:
                return
        if sender.persist_deadline is not None and now >= sender.persist_deadline:
            if not sender.on_persist_timeout(self._opt.max_retries):
                self._terminate(TerminationReason.RETRY_LIMIT)
                return
            self._keepalive_pending = True
        pmtu = sender.pmtu
        if pmtu.deadline is not None and now >= pmtu.deadline and pmtu.on_timer(now):
            self._keepalive_pending = True  # its answer tells whether the path works
        acks = self._receiver.acks
        if acks.deadline is not None and now >= acks.deadline:
            acks.deadline = None
            acks.immediate = True
        keepalive = self._keepalive_deadline()
        if keepalive is not None and now >= keepalive:
            self._keepalive_pending = True
            self._liveness.on_keepalive(now)

    def _keepalive_deadline(self) -> float | None:
        # Only idle synchronized connections probe: nothing outstanding, no persist timer.
        sender = self._sender
        if self._state in SENDING and sender.recovery.segments is None and sender.persist_deadline is None:
            return self._liveness.keepalive_deadline(self._receiver.stream.peer_fin is not None)
        return None

    # -- receive path ------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _on_reset(self) -> None:
        if self._state is _IDLE:
            self._drop("unexpected")
            return
        self._events.push(Reset())
        self._terminate(TerminationReason.RESET)

    def _on_syn(self, segment: StreamSegment, now: float) -> None:
        if self._role != "server":
            self._drop("unexpected")
            return
        if self._state is _IDLE:
            self._state = HANDSHAKE[_IDLE, Happening.SYN]
            self._sender.peer_right_edge = segment.window
        elif self._state is not StreamState.SYN_RECEIVED:
            self._drop("unexpected")
            return
        # First SYN or a retransmission (our SYN-ACK was lost): (re)send the SYN-ACK.
        self._receiver.acks.ts_recent = segment.ts_value
        self._control = StreamType.SYN_ACK
        self._liveness.last_rx = now

    def _on_syn_ack(self, segment: StreamSegment, now: float) -> None:
        if self._role != "client" or segment.ack != 0:
            self._drop("unexpected")
            return
        established = HANDSHAKE.get((self._state, Happening.SYN_ACK))
        if established is not None:
            sender = self._sender
            sender.peer_right_edge = max(sender.peer_right_edge, segment.window)
            if (rtt := self._builder.rtt_of(segment.ts_echo, now)) is not None:
                sender.rtt.on_sample(rtt)
            self._handshake_done(established, now)
        elif self._state not in SYNCHRONIZED:
            self._drop("unexpected")
            return
        # Acknowledge (again, if our ACK was lost and the server retransmitted).
        self._receiver.on_probe(segment.ts_value)
        self._liveness.last_rx = now

    def _handshake_done(self, state: StreamState, now: float) -> None:
        self._sender.on_answer()
        self._state = state
        self._events.push(Connected())
        self._close_step(now)

    def _on_stream_segment(self, segment: StreamSegment, now: float) -> None:
        state = self._state
        if state is StreamState.SYN_RECEIVED and segment.flags & _ACK:
            # The client's ACK (or first data) completes the handshake (§4.2.3).
            self._handshake_done(HANDSHAKE[state, Happening.ACK], now)
        elif state not in SYNCHRONIZED:
            self._drop("not-established")
            return
        payload = segment.payload
        kind = segment.type
        carries = bool(payload) or kind is _FIN
        receiver = self._receiver
        if carries and not receiver.in_window(segment.seq, payload):
            self._drop("out-of-window")
            return
        if segment.flags & _ACK:
            sender = self._sender
            if segment.ack > sender.stream.nxt:
                self._drop("bad-ack")
                receiver.acks.immediate = True
                return
            rtt = self._builder.rtt_of(segment.ts_echo, now)
            if sender.on_ack(segment.ack, segment.window, segment.sack, rtt, now) and sender.stream.fin_acked:
                self._close_step(now)
        self._liveness.last_rx = now
        if carries:
            if payload:
                self._liveness.on_payload()  # the peer sends data: watch for it going silent
            outcome = receiver.on_data(segment, now)
            if outcome == BAD_FIN:
                self._drop("bad-fin")
            elif outcome == FIN_ARRIVED:
                self._close_step(now)
        elif kind is StreamType.KEEPALIVE:
            receiver.on_probe(segment.ts_value)

    def _on_retransmission_timeout(self, now: float) -> None:
        if self._state in HANDSHAKING:
            if self._sender.on_handshake_timeout(self._opt.max_retries):
                self._control = HANDSHAKE_SEGMENT[self._state]
            else:
                self._terminate(TerminationReason.HANDSHAKE_TIMEOUT)
        elif not self._sender.on_retransmission_timeout(self._opt.max_retries, now):
            self._terminate(TerminationReason.RETRY_LIMIT)

    def _on_path_probe(self, segment: StreamSegment, now: float) -> None:
        """PROBE: answer it (its padding is dropped); PROBE-ACK: the size it names got
        through (§4.2.6)."""
        if self._state not in SYNCHRONIZED:
            self._drop("not-established")
            return
        self._liveness.last_rx = now
        if segment.type is _PROBE:
            self._probe_ack = segment.seq
            return
        sender = self._sender
        mss = sender.pmtu.on_probe_ack(segment.seq, now)
        if mss is not None:
            sender.set_mss(mss)

    # -- send path ---------------------------------------------------------------------------------

    def _send_control(self, kind: StreamType, now: float, out: list[bytes]) -> None:
        build = self._builder.build
        if kind is StreamType.SYN or kind is StreamType.RESUME:
            out.append(build(kind, 0, StreamFlags.NONE, now))
        elif kind is StreamType.SYN_ACK:
            out.append(build(kind, 0, _ACK, now))
        else:  # RESUME_ACK: not retransmitted, the peer's RESUME is
            flags = resume.answer_flags(self._sender, self._receiver)
            out.append(build(kind, self._sender.stream.una, flags, now))
            return
        self._sender.arm_rto(now)

    # -- RESUME (§4.2.5; resume.py) --------------------------------------------------------------

    def _on_resume(self, segment: StreamSegment, now: float) -> None:
        if self._state not in SENDING:
            self._drop("unexpected")
            return
        self._events.push(resume.rewind(self._sender, self._receiver, segment))
        self._control = StreamType.RESUME_ACK
        self._liveness.last_rx = now

    def _on_resume_ack(self, segment: StreamSegment, now: float) -> None:
        established = HANDSHAKE.get((self._state, Happening.RESUME_ACK))
        if established is None:
            self._drop("unexpected")
            return
        if (rtt := self._builder.rtt_of(segment.ts_echo, now)) is not None:
            self._sender.rtt.on_sample(rtt)
        resumed, peer_ended = resume.adopt(self._sender, self._receiver, segment)
        self._state = established
        self._liveness.last_rx = now
        self._events.push(resumed)
        if peer_ended:
            self._events.push(EndOfStream())
        self._close_step(now)
        self._receiver.acks.immediate = True

    # -- closing (state.py holds the table) --------------------------------------------------------

    def _close_step(self, now: float) -> None:
        if self._state not in SENDING:
            return
        stream = self._sender.stream
        state = after_close_step(stream.shutdown, self._receiver.stream.fin_consumed, stream.fin_acked)
        if state is not _TIME_WAIT:
            self._state = state
        elif self._closed_last:
            self._terminate(TerminationReason.CLOSED)
        else:
            self._state = state
            self._time_wait_deadline = now + self._opt.time_wait
            self._sender.stop_timers()

    def _terminate(self, reason: str) -> None:
        self._state = _CLOSED
        self._timer_stale = True
        self._sender.stop_timers()
        self._sender.recovery.clear()
        self._receiver.acks.deadline = None
        self._receiver.acks.immediate = False
        self._time_wait_deadline = None
        self._control = None
        self._keepalive_pending = False
        self._error_reason = reason
        if reason in PATH_FAILURES:
            self._error = BrokenPathError(f"stream flow {self._nonce:#018x}: {reason}")
        self._events.push(ConnectionTerminated(reason))
