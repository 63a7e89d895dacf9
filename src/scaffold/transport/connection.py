"""``StreamConnection``: one end of a reliable stream flow, sans-IO (docs/protocol.md §4.2).

The host stack feeds it the transport segment of each packet of the flow
(:meth:`~StreamConnection.receive_segment`), sends what
:meth:`~StreamConnection.segments_to_send` returns, and calls
:meth:`~StreamConnection.handle_timer` at :meth:`~StreamConnection.get_timer`. Nothing here
reads a clock, touches a socket or draws randomness: time comes in as ``now``.

The connection dispatches incoming segments, moves through the states of ``state.py``,
runs the timers, and delegates the rest: our direction to :class:`~.sender.Sender` (send
stream, scoreboard, congestion control, RTT), the peer's to :class:`~.receive.ReceiveStream`
(reassembly), when and what to acknowledge to :class:`~.acks.AckPolicy`, encoding to
:class:`~.builder.SegmentBuilder`, keepalives to :class:`~.liveness.Liveness`, and its
serialized form to ``snapshot.py``.

Sequence numbers are stream offsets from 0 in each direction; the flow's nonce keeps blind
and stale segments out (§4.2.2). Handshake, half-close, RST and the states: §4.2.3. Flow
control, the persist timer, delayed ACKs, keepalive and the stall probe: §4.2.4. RESUME:
§4.2.5 (see :meth:`StreamConnection.resume`).
"""

from __future__ import annotations

from typing import Literal

from ..errors import BrokenPathError, MalformedPacket, ScaffoldError, UsageError
from ..wire import stream as wire
from ..wire.stream import StreamFlags, StreamSegment, StreamType
from . import snapshot as snapshots
from .acks import AckPolicy
from .builder import SegmentBuilder
from .events import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Reset,
    Resumed,
    SendSpaceAvailable,
    StreamEvent,
    StreamStats,
)
from .liveness import Liveness
from .options import StreamOptions
from .receive import DUPLICATE, IN_ORDER, ReceiveStream
from .sender import Sender
from .snapshot import SNAPSHOT_VERSION, StreamSnapshot
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

__all__ = ["Role", "StreamConnection"]

Role = Literal["client", "server"]

_DEFAULT_OPTIONS = StreamOptions()

_IDLE = StreamState.IDLE
_CLOSED = StreamState.CLOSED
_TIME_WAIT = StreamState.TIME_WAIT
_DATA = StreamType.DATA
_FIN = StreamType.FIN
_ACK = StreamFlags.ACK


class StreamConnection:
    """One end of a reliable stream flow, sans-IO (docs/protocol.md §4.2).

    Raises:
        UsageError: invalid arguments (constructor), or an API call in the wrong state.
    """

    __slots__ = (
        "_acks",
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
        "_receive",
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

    def __init__(self, role: Role, nonce: int, now: float, options: StreamOptions | None = None) -> None:
        if role not in ("client", "server"):
            raise UsageError(f"role must be 'client' or 'server', not {role!r}")
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce < 2**64:
            raise UsageError("nonce must be a 64-bit unsigned integer")
        if options is None:
            options = _DEFAULT_OPTIONS
        elif not isinstance(options, StreamOptions):
            raise UsageError(f"options must be a StreamOptions, not {type(options).__name__}")
        self._role: Role = role
        self._nonce = nonce
        self._opt = options
        self._state = _IDLE
        self._events: list[StreamEvent] | None = None  # allocated by the first event
        self.drops: dict[str, int] = {}
        self._error: ScaffoldError | None = None
        self._error_reason: str | None = None
        self._sender = Sender(options)
        self._receive = ReceiveStream()
        self._acks = AckPolicy(options.ack_every, options.ack_delay)
        self._builder = SegmentBuilder(nonce, options.recv_buffer, self._receive, self._acks)
        self._liveness = Liveness(options, now)
        self._segments_received = 0
        self._control: StreamType | None = None  # SYN, SYN-ACK, RESUME or RESUME-ACK to send
        self._keepalive_pending = False
        self._rst_pending = False
        self._closed_last = False  # we shut down after the peer's FIN: no TIME_WAIT
        self._time_wait_deadline: float | None = None
        # get_timer() caches the earliest deadline until one of our methods may change one
        self._timer: float | None = None
        self._timer_stale = True

    # -- alternative constructors ------------------------------------------------------------------

    @classmethod
    def resume(
        cls, nonce: int, now: float, role: Role = "server", options: StreamOptions | None = None
    ) -> StreamConnection:
        """A connection for a flow this host does not know (docs/protocol.md §4.2.5).

        It sends RESUME (retransmitted on the RTO like a SYN). The peer that still has the
        flow answers RESUME-ACK with ``seq`` = its ``snd_una`` (the first byte this host
        should expect) and ``ack`` = its ``rcv_nxt`` (the first byte this host should send),
        plus FIN flags when a direction had already ended. A :class:`Resumed` event reports
        the offsets; the application continues from them or calls :meth:`abort`, and the
        peer gets a clean :class:`Reset` -- never silently corrupted data.

        Raises:
            UsageError: invalid arguments.
        """
        conn = cls(role, nonce, now, options)
        conn._state = HANDSHAKE[_IDLE, Happening.RESUME]
        conn._control = StreamType.RESUME
        return conn

    @classmethod
    def from_state(cls, state: bytes | StreamSnapshot, now: float) -> StreamConnection:
        """Restore a connection exported by :meth:`export_state`, possibly on another host.

        Timers restart from ``now``; in-flight segments count as sent at ``now``, and an ACK
        goes out at once so the peer learns the current window.

        Raises:
            MalformedPacket: ``bad-flow-state``: ``state`` is not a valid snapshot.
        """
        if not isinstance(state, StreamSnapshot):
            state = snapshots.decode(state)
        conn = cls("client" if state.role == "client" else "server", state.nonce, now, state.options)
        conn._restore(state, now)
        return conn

    # -- properties --------------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def nonce(self) -> int:
        return self._nonce

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def options(self) -> StreamOptions:
        return self._opt

    @property
    def mss(self) -> int:
        """The largest payload per segment now (see :meth:`set_mss`)."""
        return self._sender.mss

    @property
    def error(self) -> ScaffoldError | None:
        """A :class:`BrokenPathError` once the connection died of a path failure."""
        return self._error

    @property
    def send_offset(self) -> int:
        """Stream offset the next byte given to :meth:`send` will have."""
        return self._sender.stream.data_end

    @property
    def receive_offset(self) -> int:
        """Stream offset of the next byte :meth:`read` returns."""
        return self._receive.read_offset

    @property
    def stats(self) -> StreamStats:
        sender, receive = self._sender, self._receive
        send, recovery, rtt, cc = sender.stream, sender.recovery, sender.rtt, sender.cc
        return StreamStats(
            bytes_sent=send.bytes_sent,
            bytes_retransmitted=send.bytes_retransmitted,
            bytes_acked=send.bytes_acked,
            bytes_received=receive.bytes_received,
            segments_sent=self._builder.segments_sent,
            segments_received=self._segments_received,
            duplicate_segments=receive.duplicate_segments,
            retransmit_timeouts=recovery.retransmit_timeouts,
            loss_episodes=recovery.loss_episodes,
            srtt=rtt.srtt,
            rttvar=rtt.rttvar,
            min_rtt=rtt.min_rtt,
            rto=rtt.rto,
            cwnd=cc.cwnd,
            ssthresh=cc.ssthresh,
            bytes_in_flight=recovery.in_flight,
            peer_window=max(0, sender.peer_right_edge - send.una),
        )

    @property
    def bytes_in_flight(self) -> int:
        """Sent, unacknowledged bytes not yet deemed lost (sequence space)."""
        return self._sender.recovery.in_flight

    @property
    def outstanding(self) -> int:
        """``snd_nxt - snd_una``: every sent, not cumulatively acknowledged sequence number."""
        return self._sender.stream.nxt - self._sender.stream.una

    @property
    def peer_window_edge(self) -> int:
        """The highest sequence number (exclusive) the peer allowed us to send."""
        return self._sender.peer_right_edge

    @property
    def buffered(self) -> int:
        """Bytes held by the send buffer: unsent plus sent but unacknowledged."""
        return self._sender.stream.buffered

    @property
    def readable(self) -> int:
        """In-order bytes waiting for :meth:`read`."""
        return self._receive.readable

    # -- application API ---------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Client: open the flow (queue a SYN carrying the nonce).

        Raises:
            UsageError: not an idle client.
        """
        if self._role != "client" or self._state is not _IDLE:
            raise UsageError(f"connect() on a {self._role} in state {self._state.value}")
        self._state = HANDSHAKE[_IDLE, Happening.CONNECT]
        self._control = StreamType.SYN
        self._liveness.last_rx = now
        self._timer_stale = True

    def send(self, data: bytes, *, force: bool = False) -> int:
        """Append to the send buffer; returns how many bytes fit (maybe fewer than given).

        When fewer fit, a :class:`SendSpaceAvailable` event follows once half the buffer is
        free again. With ``force`` everything is taken even past the buffer size (the
        caller bounds its memory by waiting for that event, as asyncio's ``drain`` does).

        Raises:
            UsageError: after :meth:`shutdown`, :meth:`close` or termination.
        """
        stream = self._sender.stream
        if stream.shutdown or self._state is _CLOSED:
            raise UsageError("send() after shutdown, close or termination")
        return stream.write(data, self._opt.send_buffer, force)

    def send_buffer_space(self) -> int:
        """Bytes :meth:`send` would accept now."""
        stream = self._sender.stream
        if stream.shutdown or self._state is _CLOSED:
            return 0
        return self._opt.send_buffer - stream.buffered

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order received bytes.

        Freeing receive buffer space opens the advertised window; a window update is sent
        when the window had become small.

        Raises:
            UsageError: after :meth:`close`.
        """
        receive = self._receive
        if receive.discard:
            raise UsageError("read() after close()")
        data = receive.read(max_bytes)
        if data and self._state in SYNCHRONIZED:
            buffer = self._opt.recv_buffer
            self._acks.on_read(receive.read_offset + buffer, receive.rcv_nxt, buffer, self._sender.mss)
        return data

    def shutdown(self, now: float) -> None:
        """Half-close: FIN after the buffered data; the peer may keep sending.

        Raises:
            UsageError: the connection is idle or terminated.
        """
        if self._state is _IDLE or self._state is _CLOSED:
            raise UsageError(f"shutdown() in state {self._state.value}")
        if self._sender.stream.shutdown:
            return
        self._sender.stream.shutdown = True
        self._closed_last = self._receive.fin_consumed
        self._timer_stale = True
        self._close_step(now)

    def close(self, now: float) -> None:
        """Full close: :meth:`shutdown`, and discard (but still acknowledge) incoming data.

        The connection terminates with reason ``closed`` once both FINs are acknowledged.

        Raises:
            UsageError: the connection is idle or terminated.
        """
        self.shutdown(now)
        self._receive.discard_input()

    def abort(self, now: float) -> None:
        """Send RST and terminate at once (reason ``aborted``). No-op when already closed."""
        if self._state is _CLOSED:
            return
        self._rst_pending = self._state is not _IDLE
        self._terminate(TerminationReason.ABORTED)

    def probe(self, now: float) -> None:
        """Queue a KEEPALIVE, which the peer answers at once with an ACK. A no-op unless the
        connection is synchronized."""
        if self._state in SENDING:
            self._keepalive_pending = True

    def set_mss(self, mss: int) -> None:
        """Cut segments of at most ``mss`` payload bytes from now on (a path-MTU change).

        Raises:
            UsageError: ``mss`` out of 1..65535.
        """
        if isinstance(mss, bool) or not isinstance(mss, int) or not 1 <= mss <= wire.MAX_PAYLOAD:
            raise UsageError(f"mss {mss!r} out of 1..{wire.MAX_PAYLOAD}")
        self._sender.set_mss(mss)

    def next_event(self) -> StreamEvent | None:
        """Pop the oldest pending event, or None."""
        events = self._events
        if not events:
            return None
        event = events.pop(0)
        if not events:
            self._events = None
        return event

    def _emit(self, event: StreamEvent) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    # -- network side ------------------------------------------------------------------------------

    def receive_segment(self, data: bytes, now: float) -> None:
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
        else:
            self._on_resume_ack(segment, now)

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
            if self._acks.immediate:
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
        deadline = self._liveness.idle_deadline()
        sender = self._sender
        for other in (
            sender.rto_deadline,
            self._acks.deadline,
            sender.persist_deadline,
            self._time_wait_deadline,
            self._keepalive_deadline(),
        ):
            if other is not None and other < deadline:
                deadline = other
        return deadline

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
            self._on_retransmission_timeout()
            if self._state is _CLOSED:
                return
        if sender.persist_deadline is not None and now >= sender.persist_deadline:
            if not sender.on_persist_timeout(self._opt.max_retries):
                self._terminate(TerminationReason.RETRY_LIMIT)
                return
            self._keepalive_pending = True
        if self._acks.deadline is not None and now >= self._acks.deadline:
            self._acks.deadline = None
            self._acks.immediate = True
        keepalive = self._keepalive_deadline()
        if keepalive is not None and now >= keepalive:
            self._keepalive_pending = True
            self._liveness.on_keepalive(now)

    def _keepalive_deadline(self) -> float | None:
        # Only idle synchronized connections probe: nothing outstanding, no persist timer.
        sender = self._sender
        if self._state in SENDING and sender.recovery.segments is None and sender.persist_deadline is None:
            return self._liveness.keepalive_deadline(self._receive.peer_fin is not None)
        return None

    # -- migration (§4.2.5, §5.4) ------------------------------------------------------------------

    def export_state(self) -> bytes:
        """Serialize the complete connection state (MessagePack of :class:`StreamSnapshot`).

        Pending events are not part of it: drain :meth:`next_event` first.
        """
        return snapshots.encode(self.snapshot())

    def snapshot(self) -> StreamSnapshot:
        """The complete connection state as a typed record (see :meth:`export_state`)."""
        return StreamSnapshot(
            version=SNAPSHOT_VERSION,
            role=self._role,
            nonce=self._nonce,
            state=self._state.value,
            options=self._opt,
            error_reason=self._error_reason,
            closed_last=self._closed_last,
            segments_received=self._segments_received,
            builder=self._builder.export_state(),
            sender=self._sender.export_state(),
            receive=self._receive.export_state(),
            acks=self._acks.export_state(),
            drops=dict(self.drops),
        )

    def _restore(self, s: StreamSnapshot, now: float) -> None:
        self._state = state = StreamState(s.state)
        self._error_reason = s.error_reason
        if s.error_reason in PATH_FAILURES:
            self._error = BrokenPathError(s.error_reason)
        self._closed_last = s.closed_last
        self._segments_received = s.segments_received
        self._builder.restore(s.builder, now)
        self._sender.restore(s.sender)
        self._receive.restore(s.receive)
        self._acks.restore(s.acks)
        self.drops.update(s.drops)
        if state is _TIME_WAIT:
            self._time_wait_deadline = now + self._opt.time_wait
        if state in HANDSHAKING:
            self._control = HANDSHAKE_SEGMENT[state]
        elif state in SYNCHRONIZED:
            self._acks.immediate = True
            if self._sender.recovery.segments is not None:
                self._sender.arm_rto(now)

    # -- receive path ------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _on_reset(self) -> None:
        if self._state is _IDLE:
            self._drop("unexpected")
            return
        self._emit(Reset())
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
        self._acks.ts_recent = segment.ts_value
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
            self._rtt_sample(segment.ts_echo, now)
            self._handshake_done(established, now)
        elif self._state not in SYNCHRONIZED:
            self._drop("unexpected")
            return
        # Acknowledge (again, if our ACK was lost and the server retransmitted).
        self._acks.ts_recent = segment.ts_value
        self._acks.immediate = True
        self._liveness.last_rx = now

    def _handshake_done(self, state: StreamState, now: float) -> None:
        self._sender.on_answer()
        self._state = state
        self._emit(Connected())
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
        if carries:
            # Sequence check (§4.2.4): nothing may start beyond the advertised right edge.
            right_edge = self._receive.read_offset + self._opt.recv_buffer
            seq = segment.seq
            if seq > right_edge or (payload and seq >= right_edge):
                self._drop("out-of-window")
                self._acks.immediate = True
                return
        if segment.flags & _ACK:
            sender = self._sender
            ack = segment.ack
            if ack > sender.stream.nxt:
                self._drop("bad-ack")
                self._acks.immediate = True
                return
            rtt = self._builder.rtt_of(segment.ts_echo, now)
            if sender.on_ack(ack, segment.window, segment.sack, rtt, now):
                stream = sender.stream
                if stream.fin_acked:
                    self._close_step(now)
                if stream.blocked:
                    space = self.send_buffer_space()
                    if space >= self._opt.send_buffer // 2:
                        stream.blocked = False
                        self._emit(SendSpaceAvailable(space))
        self._liveness.last_rx = now
        if carries:
            self._on_data(segment, now)
        elif kind is StreamType.KEEPALIVE:
            self._acks.ts_recent = segment.ts_value
            self._acks.immediate = True

    def _on_data(self, segment: StreamSegment, now: float) -> None:
        receive, acks = self._receive, self._acks
        payload = segment.payload
        if payload:
            self._liveness.on_payload()  # the peer sends data: watch for it going silent
        if not receive.check_fin(segment.seq + len(payload), segment.type is _FIN):
            self._drop("bad-fin")
            return
        acks.on_timestamp(segment.ts_value)
        fresh = False
        if payload:
            before = receive.rcv_nxt
            fit = receive.on_data(segment.seq, payload, receive.read_offset + self._opt.recv_buffer)
            if fit == IN_ORDER:
                fresh = True
                acks.on_in_order(now)
            elif fit != DUPLICATE:  # a gap appeared or closed: tell the sender at once (SACK)
                fresh = True
                acks.immediate = True
            if receive.rcv_nxt > before and not receive.discard:
                self._data_received(receive.rcv_nxt - before)
        if receive.consume_fin():
            fresh = True
            self._emit(EndOfStream())
            acks.immediate = True
            self._close_step(now)
        if not fresh:
            receive.duplicate_segments += 1
            acks.immediate = True

    def _data_received(self, size: int) -> None:
        events = self._events
        if events and isinstance(events[-1], DataReceived):
            events[-1] = DataReceived(events[-1].length + size)
        else:
            self._emit(DataReceived(size))

    def _rtt_sample(self, ts_echo: int, now: float) -> None:
        rtt = self._builder.rtt_of(ts_echo, now)
        if rtt >= 0:
            self._sender.rtt.on_sample(rtt)

    def _on_retransmission_timeout(self) -> None:
        if self._state in HANDSHAKING:
            rtt = self._sender.rtt
            rtt.backoff += 1
            if rtt.backoff > self._opt.max_retries:
                self._terminate(TerminationReason.HANDSHAKE_TIMEOUT)
            else:
                self._control = HANDSHAKE_SEGMENT[self._state]
        elif not self._sender.on_retransmission_timeout(self._opt.max_retries):
            self._terminate(TerminationReason.RETRY_LIMIT)

    # -- send path ---------------------------------------------------------------------------------

    def _send_control(self, kind: StreamType, now: float, out: list[bytes]) -> None:
        build = self._builder.build
        if kind is StreamType.SYN or kind is StreamType.RESUME:
            out.append(build(kind, 0, StreamFlags.NONE, now))
        elif kind is StreamType.SYN_ACK:
            out.append(build(kind, 0, _ACK, now))
        else:  # RESUME_ACK: not retransmitted, the peer's RESUME is
            flags = _ACK
            if self._receive.fin_consumed:
                flags |= StreamFlags.FIN_RECEIVED
            if self._sender.stream.fin_acked:
                flags |= StreamFlags.FIN_ACKED
            out.append(build(kind, self._sender.stream.una, flags, now))
            return
        self._sender.arm_rto(now)

    # -- RESUME (§4.2.5) ---------------------------------------------------------------------------

    def _on_resume(self, segment: StreamSegment, now: float) -> None:
        if self._state not in SENDING:
            self._drop("unexpected")
            return
        # The peer host lost the flow: everything it had not acknowledged is resent from
        # snd_una, data it sent us beyond rcv_nxt is discarded (the new host resends it).
        sender, receive = self._sender, self._receive
        sender.rewind(segment.window)
        receive.rewind()
        self._acks.ts_recent = segment.ts_value
        self._control = StreamType.RESUME_ACK
        self._liveness.last_rx = now
        self._emit(Resumed(min(sender.stream.una, sender.stream.data_end), receive.stream_rcv_nxt))

    def _on_resume_ack(self, segment: StreamSegment, now: float) -> None:
        established = HANDSHAKE.get((self._state, Happening.RESUME_ACK))
        if established is None:
            self._drop("unexpected")
            return
        sender, receive = self._sender, self._receive
        stream = sender.stream
        self._rtt_sample(segment.ts_echo, now)
        # FIN_RECEIVED: the old host had received our FIN; FIN_ACKED: it had acknowledged
        # the peer's (at seq - 1).
        sender.resume_at(segment.ack, segment.window, bool(segment.flags & StreamFlags.FIN_RECEIVED))
        peer_ended = bool(segment.flags & StreamFlags.FIN_ACKED)
        receive.resume_at(segment.seq, peer_ended)
        self._state = established
        self._liveness.last_rx = now
        self._emit(Resumed(min(stream.una, stream.data_end), receive.stream_rcv_nxt))
        if peer_ended:
            self._emit(EndOfStream())
        self._close_step(now)
        self._acks.immediate = True

    # -- closing (state.py holds the table) --------------------------------------------------------

    def _close_step(self, now: float) -> None:
        if self._state not in SENDING:
            return
        stream = self._sender.stream
        state = after_close_step(stream.shutdown, self._receive.fin_consumed, stream.fin_acked)
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
        self._acks.deadline = None
        self._acks.immediate = False
        self._time_wait_deadline = None
        self._control = None
        self._keepalive_pending = False
        self._error_reason = reason
        if reason in PATH_FAILURES:
            self._error = BrokenPathError(f"stream flow {self._nonce:#018x}: {reason}")
        self._emit(ConnectionTerminated(reason))
