"""``StreamConnection``: one end of a reliable stream flow, sans-IO (docs/protocol.md §4.2).

The host stack feeds it the transport segment of each packet of the flow
(:meth:`~StreamConnection.receive_segment`), sends what
:meth:`~StreamConnection.segments_to_send` returns, and calls
:meth:`~StreamConnection.handle_timer` at :meth:`~StreamConnection.get_timer` -- the
protocol engine it inherits from :class:`~.machine.StreamMachine`. This module is the
application's side: the constructors (a new flow, RESUME for a flow this host does not
know, §4.2.5, and restoring a snapshot, §5.4), the stream API (send, read, half-close,
close, abort, §4.2.3), its properties and statistics, and the typed snapshot
(``snapshot.py``) composed from each component's own record.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BrokenPathError, ScaffoldError, UsageError
from ..wire import stream as wire
from ..wire.stream import StreamType
from . import snapshot as snapshots
from .events import StreamEvent, StreamStats
from .machine import Role, StreamMachine
from .options import StreamOptions
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
)

__all__ = ["Role", "StreamConnection"]

_DEFAULT_OPTIONS = StreamOptions()
_IDLE = StreamState.IDLE
_CLOSED = StreamState.CLOSED
_TIME_WAIT = StreamState.TIME_WAIT


class StreamConnection(StreamMachine):
    """One end of a reliable stream flow, sans-IO (docs/protocol.md §4.2).

    Raises:
        UsageError: invalid arguments (constructor), or an API call in the wrong state.
    """

    __slots__ = ()

    def __init__(
        self,
        role: Role,
        nonce: int,
        now: float,
        options: StreamOptions | None = None,
        *,
        mss_ceiling: int = 0,
    ) -> None:
        """``mss_ceiling``: as :meth:`set_mss_ceiling` right after, for a host that knows its
        interface's limit when the stream starts (0: none)."""
        if role not in ("client", "server"):
            raise UsageError(f"role must be 'client' or 'server', not {role!r}")
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce < 2**64:
            raise UsageError("nonce must be a 64-bit unsigned integer")
        if options is None:
            options = _DEFAULT_OPTIONS
        elif not isinstance(options, StreamOptions):
            raise UsageError(f"options must be a StreamOptions, not {type(options).__name__}")
        if mss_ceiling:
            _check_ceiling(mss_ceiling)
        super().__init__(role, nonce, now, options, mss_ceiling)

    # -- alternative constructors ------------------------------------------------------------------

    @classmethod
    def resume(
        cls,
        nonce: int,
        now: float,
        role: Role = "server",
        options: StreamOptions | None = None,
        *,
        mss_ceiling: int = 0,
    ) -> StreamConnection:
        """A connection for a flow this host does not know (docs/protocol.md §4.2.5).

        It sends RESUME; the peer's RESUME-ACK tells the stream offsets, which a
        :class:`~.events.Resumed` event reports: the application continues from them or
        calls :meth:`abort` (``resume.py`` describes the exchange).

        Raises:
            UsageError: invalid arguments.
        """
        conn = cls(role, nonce, now, options, mss_ceiling=mss_ceiling)
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
        return self._receiver.stream.read_offset

    @property
    def stats(self) -> StreamStats:
        sender, receive = self._sender, self._receiver.stream
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
    def smoothed_rtt(self) -> float | None:
        """The smoothed RTT (seconds), None before the first sample."""
        return self._sender.rtt.srtt

    @property
    def last_received(self) -> float:
        """When the peer was last heard from: a segment, or a liveness bundle (§4.4)."""
        return self._liveness.last_rx

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
    def send_backlog(self) -> int:
        """Bytes held beyond the send buffer's size (negative: room left): what a transport
        compares with its write-buffer limits after each write."""
        data = self._sender.stream.data  # ``buffered`` inline (per write)
        return (len(data) if data is not None else 0) - self._opt.send_buffer

    @property
    def readable(self) -> int:
        """In-order bytes waiting for :meth:`read`."""
        data = self._receiver.stream.data  # the stream's ``readable`` inline (per delivery)
        return len(data) if data is not None else 0

    # -- application API ---------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Client: open the flow (queue a SYN carrying the nonce).

        Bytes already given to :meth:`send` ride in the SYN, up to one ``mss`` (data on SYN,
        docs/protocol.md §4.2.7): they reach the server's application with the SYN, one round
        trip earlier, and may reach it twice if the SYN is replayed -- send only what is safe
        to repeat.

        Raises:
            UsageError: not an idle client.
        """
        if self._role != "client" or self._state is not _IDLE:
            raise UsageError(f"connect() on a {self._role} in state {self._state.value}")
        self._state = HANDSHAKE[_IDLE, Happening.CONNECT]
        self._control = StreamType.SYN
        sender = self._sender
        data = sender.stream.data  # ``buffered`` inline
        self._syn_data = min(sender.mss, len(data)) if data is not None else 0
        self._liveness.last_rx = now
        if self._syn_data:
            self._liveness.on_payload()  # a request in the SYN: its answer is awaited (§5.1)
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

    @property
    def ack_due(self) -> bool:
        """An acknowledgment (a window update after a read) must go out at once."""
        return self._receiver.acks.immediate

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order received bytes.

        Freeing receive buffer space opens the advertised window; a window update is sent
        when the window had become small.

        Raises:
            UsageError: after :meth:`close`.
        """
        if self._receiver.stream.discard:
            raise UsageError("read() after close()")
        return self._receiver.read(max_bytes, self._state in SYNCHRONIZED, self._sender.mss)

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
        self._closed_last = self._receiver.stream.fin_consumed
        self._timer_stale = True
        self._close_step(now)

    def close(self, now: float) -> None:
        """Full close: :meth:`shutdown`, and discard (but still acknowledge) incoming data.

        The connection terminates with reason ``closed`` once both FINs are acknowledged.

        Raises:
            UsageError: the connection is idle or terminated.
        """
        self.shutdown(now)
        self._receiver.stream.discard_input()

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

    def set_mss_ceiling(self, ceiling: int, now: float) -> None:
        """The largest ``mss`` the host's interface towards the peer allows (what its runtime
        says): path-MTU discovery probes up to it, from the ``mss`` option (the floor) on
        (docs/protocol.md §4.2.6). The search starts over.

        Raises:
            UsageError: ``ceiling`` out of 1..65535.
        """
        _check_ceiling(ceiling)
        self._sender.set_ceiling(ceiling, now)
        self._timer_stale = True

    def next_event(self) -> StreamEvent | None:
        """Pop the oldest pending event, or None."""
        return self._events.pop()

    def pop_events(self) -> Sequence[StreamEvent]:
        """Pop every pending event, oldest first (what a host does after each step)."""
        return self._events.pop_all()

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
            receiver=self._receiver.export_state(),
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
        self._receiver.restore(s.receiver)
        self.drops.update(s.drops)
        if state is _TIME_WAIT:
            self._time_wait_deadline = now + self._opt.time_wait
        if state in HANDSHAKING:
            self._control = HANDSHAKE_SEGMENT[state]
        elif state in SYNCHRONIZED:
            self._receiver.acks.immediate = True
            if self._sender.recovery.segments is not None:
                self._sender.arm_rto(now)


def _check_ceiling(ceiling: int) -> None:
    if isinstance(ceiling, bool) or not isinstance(ceiling, int) or not 1 <= ceiling <= wire.MAX_PAYLOAD:
        raise UsageError(f"mss ceiling {ceiling!r} out of 1..{wire.MAX_PAYLOAD}")
