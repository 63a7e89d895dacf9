"""The reliable stream transport: a sans-IO state machine (docs/protocol.md §4.2).

:class:`StreamConnection` is one end of one stream flow. The host stack feeds it the
transport segment bytes of each packet of the flow (:meth:`~StreamConnection.receive_segment`),
sends what :meth:`~StreamConnection.segments_to_send` returns, and calls
:meth:`~StreamConnection.handle_timer` at :meth:`~StreamConnection.get_timer`. Nothing here
reads a clock, touches a socket or draws global randomness: time comes in as ``now``.

Mechanisms, and where they come from:

* Sequence numbers are stream offsets starting at 0 in each direction; the flow's random
  64-bit nonce (in every segment) is what keeps blind and stale segments out (§4.2.2).
* Handshake SYN / SYN-ACK / ACK; FIN half-close in each direction, FIN occupies one
  sequence number; RST aborts (§4.2.3).
* Flow control: the receiver advertises the free space of its receive buffer; its right
  edge never moves left. The sender keeps at most ``min(cwnd, peer window)`` in flight and
  probes a zero window with KEEPALIVE segments on a persist timer (§4.2.4).
* Loss recovery: SACK scoreboard with per-transmission numbers (as RFC 9002 does with
  packet numbers): a segment is lost once a segment sent 3 transmissions after it is
  acknowledged (the SACK analogue of 3 duplicate ACKs), then fast-retransmitted; RTO with
  exponential backoff (RFC 6298) otherwise. RTT samples come from timestamp echoes, so
  retransmissions give unambiguous samples (no need for Karn's rule).
* Congestion control: NewReno (RFC 5681 / RFC 6582 as restated by RFC 9002 §7): slow start,
  congestion avoidance, one window reduction per recovery episode, cwnd = 1 MSS after RTO.
* Delayed ACKs: every ``ack_every`` in-order segments or after ``ack_delay``; immediately on
  out-of-order data, gap fill, FIN, duplicates and KEEPALIVE.
* RESUME / RESUME-ACK lets a host that lost (or never had) the flow learn the stream
  offsets from the peer and continue (§4.2.5), see below.

RESUME exchange (§4.2.5). When the network re-delivers an established flow to a host that
has no state for it (failover to another replica), that host's stack creates
``StreamConnection.resume(nonce, now)``, which sends RESUME (nonce, its receive window;
retransmitted on the RTO, ``handshake-timeout`` after ``max_retries``). The peer that still
has the flow answers RESUME-ACK with ``seq`` = its ``snd_una`` (the first byte the new host
should expect: everything the old host had not acknowledged is resent) and ``ack`` = its
``rcv_nxt`` (the first byte the new host should send), plus FIN_RECEIVED / FIN_ACKED flags
when a direction had already ended. The answering side rewinds its sender to ``snd_una``,
drops out-of-order data and the SACK scoreboard, restarts congestion control from the
initial window (it is a new path) and emits :class:`Resumed`. The new host adopts the
offsets, becomes ESTABLISHED and emits :class:`Resumed` with them; a stateless or content
service continues from ``send_offset``, anything else calls ``abort()`` and the peer gets
a clean :class:`Reset` -- never silently corrupted data. Segments of the flow that reach the
new host before RESUME-ACK are dropped (``not-established``) and resent by the peer.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import msgspec

from ..errors import BrokenPathError, MalformedPacket, ScaffoldError, UsageError
from ..wire import stream as wire
from ..wire.stream import StreamFlags, StreamSegment, StreamType

__all__ = [
    "ConnectionTerminated",
    "Connected",
    "DataReceived",
    "EndOfStream",
    "Reset",
    "Resumed",
    "SendSpaceAvailable",
    "StreamConnection",
    "StreamEvent",
    "StreamOptions",
    "StreamSnapshot",
    "StreamState",
    "StreamStats",
    "TerminationReason",
]

Role = Literal["client", "server"]

_TS_MASK = 0xFFFFFFFF
#: a segment is lost when one sent this many transmissions later is acknowledged.
_PACKET_THRESHOLD = 3
_SNAPSHOT_VERSION = 1


class StreamState(enum.Enum):
    """Connection states (docs/protocol.md §4.2.3)."""

    #: created, nothing sent or received yet (client before ``connect``, server before SYN).
    IDLE = "idle"
    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    #: a new host sent RESUME and waits for the peer's offsets.
    RESUMING = "resuming"
    ESTABLISHED = "established"
    #: we sent (or will send) FIN; the peer may still send.
    FIN_WAIT = "fin-wait"
    #: the peer's stream ended; we may still send.
    CLOSE_WAIT = "close-wait"
    #: both ends shut down; our FIN is not acknowledged yet.
    CLOSING = "closing"
    #: done; lingers to re-acknowledge a retransmitted FIN of the peer.
    TIME_WAIT = "time-wait"
    CLOSED = "closed"


_SYNCHRONIZED = frozenset(
    {
        StreamState.ESTABLISHED,
        StreamState.FIN_WAIT,
        StreamState.CLOSE_WAIT,
        StreamState.CLOSING,
        StreamState.TIME_WAIT,
    }
)
_HANDSHAKING = frozenset({StreamState.SYN_SENT, StreamState.SYN_RECEIVED, StreamState.RESUMING})


class TerminationReason:
    """The ``reason`` tokens of :class:`ConnectionTerminated`."""

    #: both directions were shut down and acknowledged.
    CLOSED = "closed"
    #: we called :meth:`StreamConnection.abort`.
    ABORTED = "aborted"
    #: the peer sent RST.
    RESET = "reset"
    #: ``max_retries`` consecutive retransmission (or persist) timeouts without an answer.
    RETRY_LIMIT = "retry-limit"
    #: SYN, SYN-ACK or RESUME unanswered after ``max_retries`` retransmissions.
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    #: nothing received for ``idle_timeout`` seconds.
    IDLE_TIMEOUT = "idle-timeout"


#: Reasons that mean the path or the peer failed; they set ``StreamConnection.error``.
_PATH_FAILURES = frozenset(
    {
        TerminationReason.RESET,
        TerminationReason.RETRY_LIMIT,
        TerminationReason.HANDSHAKE_TIMEOUT,
        TerminationReason.IDLE_TIMEOUT,
    }
)


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake completed; the stream is open in both directions."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """``length`` new in-order bytes can be :meth:`~StreamConnection.read`."""

    length: int


@dataclass(frozen=True, slots=True)
class SendSpaceAvailable:
    """A short :meth:`~StreamConnection.send` can continue: ``space`` bytes now fit."""

    space: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer shut down its direction (FIN); every byte it sent has been received."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer aborted the flow (RST). A :class:`ConnectionTerminated` follows."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The flow was re-synchronized with a new peer host (RESUME exchange, §4.2.5).

    ``send_offset`` is the stream offset from which this side (re)sends; ``receive_offset``
    the offset of the next byte this side expects. A new host's application decides from
    them whether it can continue, and calls :meth:`~StreamConnection.abort` if not.
    """

    send_offset: int
    receive_offset: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is CLOSED; ``reason`` is a :class:`TerminationReason` token."""

    reason: str


StreamEvent = (
    Connected  # handshake done
    | DataReceived  # bytes to read
    | SendSpaceAvailable  # a short send() may continue
    | EndOfStream  # peer FIN
    | Reset  # peer RST
    | Resumed  # re-synchronized with a new peer host
    | ConnectionTerminated  # CLOSED, with a reason
)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of counters and congestion state (:attr:`StreamConnection.stats`)."""

    bytes_sent: int
    bytes_retransmitted: int
    bytes_acked: int
    bytes_received: int
    segments_sent: int
    segments_received: int
    duplicate_segments: int
    retransmit_timeouts: int
    loss_episodes: int
    srtt: float | None
    rttvar: float | None
    min_rtt: float | None
    rto: float
    cwnd: int
    ssthresh: int | None
    bytes_in_flight: int
    peer_window: int


_COUNTERS = (
    "bytes_sent",
    "bytes_retransmitted",
    "bytes_acked",
    "bytes_received",
    "segments_sent",
    "segments_received",
    "duplicate_segments",
    "retransmit_timeouts",
    "loss_episodes",
)


# -- configuration and serialized state ------------------------------------------------------------


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of one connection; the constructor's keyword arguments."""

    #: largest payload per segment.
    mss: int = 1200
    recv_buffer: int = 256 * 1024
    send_buffer: int = 256 * 1024
    #: send a KEEPALIVE after this many seconds without receiving anything; None: never.
    keepalive: float | None = 15.0
    #: a receiver whose peer was sending data and went silent probes after this long,
    #: doubling up to ``keepalive``: if the peer's host died, the probe is what reaches a
    #: surviving replica and starts the takeover (docs/protocol.md §5.1). None: never.
    stall_probe: float | None = 0.25
    #: terminate after this many seconds without receiving anything.
    idle_timeout: float = 60.0
    #: RTO before the first RTT sample (SYN, SYN-ACK, RESUME).
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 4.0
    #: consecutive unanswered timeouts tolerated; the next one terminates the connection.
    max_retries: int = 10
    #: delayed-ACK timer and segment count.
    ack_delay: float = 0.01
    ack_every: int = 2
    #: initial congestion window, in segments (RFC 6928).
    initial_window: int = 10
    #: TIME_WAIT linger.
    time_wait: float = 1.0
    #: cap of the persist (zero-window probe) interval.
    max_probe_interval: float = 1.0


class _SentRecord(msgspec.Struct, array_like=True):
    start: int
    end: int
    fin: bool
    pn: int
    lost: bool


class StreamSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The complete state of a connection (:meth:`StreamConnection.export_state`).

    Times are not included: the restoring host re-arms every timer from its own ``now``.
    """

    version: int
    role: str
    nonce: int
    state: str
    options: StreamOptions
    error_reason: str | None
    # send side
    snd_una: int
    snd_nxt: int
    send_data: bytes
    shutdown: bool
    closed_last: bool
    fin_sent: bool
    fin_acked: bool
    sent: list[_SentRecord]
    next_pn: int
    largest_acked_pn: int
    recovery_pn: int
    peer_right_edge: int
    cwnd: int
    ssthresh: int | None
    ca_acked: int
    srtt: float | None
    rttvar: float | None
    min_rtt: float | None
    rto: float
    ts_last: int
    send_blocked: bool
    # receive side
    rcv_nxt: int
    read_offset: int
    recv_data: bytes
    out_of_order: list[tuple[int, bytes]]
    peer_fin: int | None
    discard_input: bool
    ts_recent: int
    ack_pending: int
    advertised_edge: int
    counters: dict[str, int]
    drops: dict[str, int]


@dataclass(slots=True)
class _Sent:
    """One transmitted range ``[start, end)``; ``end`` counts the FIN's sequence number."""

    start: int
    end: int
    fin: bool
    pn: int
    lost: bool = False


def _start_key(record: _Sent) -> int:
    return record.start


class StreamConnection:
    """One end of a reliable stream flow, sans-IO (docs/protocol.md §4.2).

    Raises:
        UsageError: invalid options (constructor), or an API call in the wrong state.
    """

    def __init__(
        self,
        role: Role,
        nonce: int,
        now: float,
        *,
        mss: int = 1200,
        recv_buffer: int = 256 * 1024,
        send_buffer: int = 256 * 1024,
        keepalive: float | None = 15.0,
        stall_probe: float | None = 0.25,
        idle_timeout: float = 60.0,
        initial_rto: float = 1.0,
        min_rto: float = 0.2,
        max_rto: float = 4.0,
        max_retries: int = 10,
        ack_delay: float = 0.01,
        ack_every: int = 2,
        initial_window: int = 10,
        time_wait: float = 1.0,
        max_probe_interval: float = 1.0,
    ) -> None:
        options = StreamOptions(
            mss=mss,
            recv_buffer=recv_buffer,
            send_buffer=send_buffer,
            keepalive=keepalive,
            stall_probe=stall_probe,
            idle_timeout=idle_timeout,
            initial_rto=initial_rto,
            min_rto=min_rto,
            max_rto=max_rto,
            max_retries=max_retries,
            ack_delay=ack_delay,
            ack_every=ack_every,
            initial_window=initial_window,
            time_wait=time_wait,
            max_probe_interval=max_probe_interval,
        )
        self._setup(role, nonce, now, options)

    def _setup(self, role: str, nonce: int, now: float, options: StreamOptions) -> None:
        if role not in ("client", "server"):
            raise UsageError(f"role must be 'client' or 'server', not {role!r}")
        if not 0 <= nonce < 2**64:
            raise UsageError("nonce must be a 64-bit unsigned integer")
        if not 1 <= options.mss <= wire.MAX_PAYLOAD:
            raise UsageError(f"mss {options.mss} out of 1..{wire.MAX_PAYLOAD}")
        if not 1 <= options.recv_buffer <= _TS_MASK or options.send_buffer < 1:
            raise UsageError("buffers must be positive (receive buffer below 4 GiB)")
        if options.max_retries < 0 or options.ack_every < 1 or options.initial_window < 1:
            raise UsageError("max_retries >= 0, ack_every >= 1 and initial_window >= 1")
        if not 0 < options.min_rto <= options.max_rto or options.initial_rto <= 0:
            raise UsageError("RTO bounds must be positive, min_rto <= max_rto")
        self._role: Role = "client" if role == "client" else "server"
        self._nonce = nonce
        self._opt = options
        self._state = StreamState.IDLE
        self._events: deque[StreamEvent] = deque()
        self.drops: dict[str, int] = {}
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._error: ScaffoldError | None = None
        self._error_reason: str | None = None
        # clocks and timers
        self._ts_offset = 0
        self._ts_last = 0
        self._last_rx = now
        self._last_keepalive = -math.inf
        self._rto_deadline: float | None = None
        self._ack_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._time_wait_deadline: float | None = None
        self._backoff = 0
        self._retries = 0
        self._persist_backoff = 0
        self._persist_probes = 0
        # send side: _send_data holds stream bytes [snd_una, snd_una + len)
        self._send_data = bytearray()
        self._snd_una = 0
        self._snd_nxt = 0
        self._shutdown = False
        self._closed_last = False
        self._fin_sent = False
        self._fin_acked = False
        self._sent: list[_Sent] = []
        self._in_flight = 0
        self._lost_count = 0
        self._next_pn = 0
        self._largest_acked_pn = -1
        self._recovery_pn = 0
        self._peer_right_edge = 0
        self._cwnd = options.initial_window * options.mss
        self._ssthresh: int | None = None
        self._ca_acked = 0
        self._srtt: float | None = None
        self._rttvar: float | None = None
        self._min_rtt: float | None = None
        self._rto = options.initial_rto
        self._send_blocked = False
        self._control: StreamType | None = None
        self._keepalive_pending = False
        self._rst_pending = False
        self._stall_probing = False
        self._stall_probes = 0
        # receive side: _recv_data holds stream bytes [read_offset, rcv_nxt)
        self._rcv_nxt = 0
        self._read_offset = 0
        self._recv_data = bytearray()
        self._ooo_ranges: list[list[int]] = []
        self._ooo_data: dict[int, bytes] = {}
        self._last_ooo = 0
        self._peer_fin: int | None = None
        self._discard_input = False
        self._ts_recent = 0
        self._ack_pending = 0
        self._ack_now = False
        self._advertised_edge = 0

    # -- alternative constructors ------------------------------------------------------------------

    @classmethod
    def resume(
        cls,
        nonce: int,
        now: float,
        role: Role = "server",
        **options: object,
    ) -> StreamConnection:
        """A connection for a flow this host does not know (docs/protocol.md §4.2.5).

        It sends RESUME; the peer answers RESUME-ACK with the stream offsets, and a
        :class:`Resumed` event reports them. Keyword options are the constructor's.

        Raises:
            UsageError: invalid options.
        """
        try:
            conn = cls(role, nonce, now, **options)  # type: ignore[arg-type]
        except TypeError as exc:
            raise UsageError(str(exc)) from exc
        conn._state = StreamState.RESUMING
        conn._control = StreamType.RESUME
        return conn

    @classmethod
    def from_state(cls, state: bytes | StreamSnapshot, now: float) -> StreamConnection:
        """Restore a connection exported by :meth:`export_state`, possibly on another host.

        Timers restart from ``now``; in-flight segments count as sent at ``now``, and an ACK
        goes out at once so the peer learns the current window.

        Raises:
            UsageError: ``state`` is not a valid snapshot.
        """
        if not isinstance(state, StreamSnapshot):
            try:
                state = msgspec.msgpack.decode(state, type=StreamSnapshot)
            except msgspec.DecodeError as exc:
                raise UsageError(f"invalid stream snapshot: {exc}") from exc
        if state.version != _SNAPSHOT_VERSION:
            raise UsageError(f"stream snapshot version {state.version} unsupported")
        conn = cls.__new__(cls)
        conn._setup(state.role, state.nonce, now, state.options)
        conn._load(state, now)
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
    def error(self) -> ScaffoldError | None:
        """A :class:`BrokenPathError` once the connection died of a path failure."""
        return self._error

    @property
    def send_offset(self) -> int:
        """Stream offset the next byte given to :meth:`send` will have."""
        return self._data_end()

    @property
    def receive_offset(self) -> int:
        """Stream offset of the next byte :meth:`read` returns."""
        return self._read_offset

    @property
    def stats(self) -> StreamStats:
        c = self._counters
        return StreamStats(
            bytes_sent=c["bytes_sent"],
            bytes_retransmitted=c["bytes_retransmitted"],
            bytes_acked=c["bytes_acked"],
            bytes_received=c["bytes_received"],
            segments_sent=c["segments_sent"],
            segments_received=c["segments_received"],
            duplicate_segments=c["duplicate_segments"],
            retransmit_timeouts=c["retransmit_timeouts"],
            loss_episodes=c["loss_episodes"],
            srtt=self._srtt,
            rttvar=self._rttvar,
            min_rtt=self._min_rtt,
            rto=self._rto,
            cwnd=self._cwnd,
            ssthresh=self._ssthresh,
            bytes_in_flight=self._in_flight,
            peer_window=max(0, self._peer_right_edge - self._snd_una),
        )

    @property
    def bytes_in_flight(self) -> int:
        """Sent, unacknowledged bytes not yet deemed lost (sequence space)."""
        return self._in_flight

    @property
    def outstanding(self) -> int:
        """``snd_nxt - snd_una``: every sent, not cumulatively acknowledged sequence number."""
        return self._snd_nxt - self._snd_una

    @property
    def peer_window_edge(self) -> int:
        """The highest sequence number (exclusive) the peer allowed us to send."""
        return self._peer_right_edge

    # -- application API ---------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Client: open the flow (queue a SYN carrying the nonce).

        Raises:
            UsageError: not an idle client.
        """
        if self._role != "client" or self._state is not StreamState.IDLE:
            raise UsageError(f"connect() on a {self._role} in state {self._state.value}")
        self._state = StreamState.SYN_SENT
        self._control = StreamType.SYN
        self._last_rx = now

    def send(self, data: bytes, *, force: bool = False) -> int:
        """Append to the send buffer; returns how many bytes fit (maybe fewer than given).

        When fewer fit, a :class:`SendSpaceAvailable` event follows once half the buffer is
        free again. With ``force`` everything is taken even past the buffer size (the
        caller bounds its memory by waiting for that event, as asyncio's ``drain`` does).

        Raises:
            UsageError: after :meth:`shutdown`, :meth:`close` or termination.
        """
        if self._shutdown or self._state is StreamState.CLOSED:
            raise UsageError("send() after shutdown, close or termination")
        if force:
            self._send_data += data
            if len(self._send_data) > self._opt.send_buffer:
                self._send_blocked = True
            return len(data)
        space = self._opt.send_buffer - len(self._send_data)
        if space >= len(data):
            self._send_data += data
            return len(data)
        self._send_blocked = True
        if space > 0:
            self._send_data += data[:space]
            return space
        return 0

    def send_buffer_space(self) -> int:
        """Bytes :meth:`send` would accept now."""
        if self._shutdown or self._state is StreamState.CLOSED:
            return 0
        return self._opt.send_buffer - len(self._send_data)

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order received bytes.

        Freeing receive buffer space opens the advertised window; a window update is sent
        when the window had become small.

        Raises:
            UsageError: after :meth:`close`.
        """
        if self._discard_input:
            raise UsageError("read() after close()")
        buffer = self._recv_data
        if max_bytes < 0 or max_bytes >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:max_bytes])
            del buffer[:max_bytes]
        if data:
            self._read_offset += len(data)
            self._maybe_window_update()
        return data

    @property
    def buffered(self) -> int:
        """Bytes held by the send buffer: unsent plus sent but unacknowledged."""
        return len(self._send_data)

    @property
    def readable(self) -> int:
        """In-order bytes waiting for :meth:`read`."""
        return len(self._recv_data)

    def shutdown(self, now: float) -> None:
        """Half-close: FIN after the buffered data; the peer may keep sending.

        Raises:
            UsageError: the connection is idle or terminated.
        """
        if self._state in (StreamState.IDLE, StreamState.CLOSED):
            raise UsageError(f"shutdown() in state {self._state.value}")
        if self._shutdown:
            return
        self._shutdown = True
        self._closed_last = self._peer_fin_consumed()
        self._refresh_state(now)

    def close(self, now: float) -> None:
        """Full close: :meth:`shutdown`, and discard (but still acknowledge) incoming data.

        The connection terminates with reason ``closed`` once both FINs are acknowledged.

        Raises:
            UsageError: the connection is idle or terminated.
        """
        self.shutdown(now)
        self._discard_input = True
        self._recv_data.clear()
        self._ooo_ranges.clear()
        self._ooo_data.clear()
        self._read_offset = self._rcv_nxt

    def abort(self, now: float) -> None:
        """Send RST and terminate at once (reason ``aborted``). No-op when already closed."""
        if self._state is StreamState.CLOSED:
            return
        self._rst_pending = self._state is not StreamState.IDLE
        self._terminate(TerminationReason.ABORTED)

    def probe(self, now: float) -> None:
        """Queue a KEEPALIVE, which the peer answers at once with an ACK. A no-op unless the
        connection is synchronized."""
        if self._state in _SYNCHRONIZED and self._state is not StreamState.TIME_WAIT:
            self._keepalive_pending = True

    def next_event(self) -> StreamEvent | None:
        """Pop the oldest pending event, or None."""
        return self._events.popleft() if self._events else None

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
        if self._state is StreamState.CLOSED:
            self._drop("closed")
            return
        self._counters["segments_received"] += 1
        kind = segment.type
        if kind is StreamType.DATA or kind is StreamType.FIN or kind is StreamType.KEEPALIVE:
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
            out.append(self._build(StreamType.RST, self._snd_nxt, StreamFlags.ACK, now))
            return out
        state = self._state
        if state is StreamState.IDLE or state is StreamState.CLOSED:
            return out
        if self._control is not None:
            self._send_control(self._control, now, out)
            self._control = None
        if state in _SYNCHRONIZED:
            if state is not StreamState.TIME_WAIT:
                self._send_stream(now, out)
            if self._keepalive_pending:
                self._keepalive_pending = False
                out.append(self._build(StreamType.KEEPALIVE, self._snd_nxt, StreamFlags.ACK, now))
            if self._ack_now:
                out.append(self._build(StreamType.DATA, self._snd_nxt, StreamFlags.ACK, now))
        return out

    def get_timer(self) -> float | None:
        """Absolute time at which :meth:`handle_timer` must be called, or None."""
        state = self._state
        if state is StreamState.CLOSED or state is StreamState.IDLE:
            return None
        deadlines = [self._last_rx + self._opt.idle_timeout]
        for deadline in (
            self._rto_deadline,
            self._ack_deadline,
            self._persist_deadline,
            self._time_wait_deadline,
            self._keepalive_deadline(),
        ):
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        """Run every timer that expired at ``now``."""
        state = self._state
        if state is StreamState.CLOSED or state is StreamState.IDLE:
            return
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._terminate(TerminationReason.CLOSED)
            return
        if now >= self._last_rx + self._opt.idle_timeout:
            self._terminate(TerminationReason.IDLE_TIMEOUT)
            return
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._rto_deadline = None
            self._on_retransmission_timeout(now)
            if self._state is StreamState.CLOSED:
                return
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._persist_deadline = None
            self._persist_probes += 1
            if self._persist_probes > self._opt.max_retries:
                self._terminate(TerminationReason.RETRY_LIMIT)
                return
            self._keepalive_pending = True
            self._persist_backoff += 1
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_deadline = None
            self._ack_now = True
        keepalive = self._keepalive_deadline()
        if keepalive is not None and now >= keepalive:
            self._keepalive_pending = True
            self._last_keepalive = now
            if self._stall_probing:
                self._stall_probes = min(self._stall_probes + 1, 16)

    # -- migration ---------------------------------------------------------------------------------

    def export_state(self) -> bytes:
        """Serialize the complete connection state (msgpack of :class:`StreamSnapshot`).

        Pending events are not part of it: drain :meth:`next_event` first.
        """
        return msgspec.msgpack.encode(self.snapshot())

    def snapshot(self) -> StreamSnapshot:
        """The complete connection state as a typed record (see :meth:`export_state`)."""
        return StreamSnapshot(
            version=_SNAPSHOT_VERSION,
            role=self._role,
            nonce=self._nonce,
            state=self._state.value,
            options=self._opt,
            error_reason=self._error_reason,
            snd_una=self._snd_una,
            snd_nxt=self._snd_nxt,
            send_data=bytes(self._send_data),
            shutdown=self._shutdown,
            closed_last=self._closed_last,
            fin_sent=self._fin_sent,
            fin_acked=self._fin_acked,
            sent=[_SentRecord(r.start, r.end, r.fin, r.pn, r.lost) for r in self._sent],
            next_pn=self._next_pn,
            largest_acked_pn=self._largest_acked_pn,
            recovery_pn=self._recovery_pn,
            peer_right_edge=self._peer_right_edge,
            cwnd=self._cwnd,
            ssthresh=self._ssthresh,
            ca_acked=self._ca_acked,
            srtt=self._srtt,
            rttvar=self._rttvar,
            min_rtt=self._min_rtt,
            rto=self._rto,
            ts_last=self._ts_last,
            send_blocked=self._send_blocked,
            rcv_nxt=self._rcv_nxt,
            read_offset=self._read_offset,
            recv_data=bytes(self._recv_data),
            out_of_order=sorted(self._ooo_data.items()),
            peer_fin=self._peer_fin,
            discard_input=self._discard_input,
            ts_recent=self._ts_recent,
            ack_pending=self._ack_pending,
            advertised_edge=self._advertised_edge,
            counters=dict(self._counters),
            drops=dict(self.drops),
        )

    def _load(self, s: StreamSnapshot, now: float) -> None:
        try:
            self._state = StreamState(s.state)
        except ValueError as exc:
            raise UsageError(f"invalid stream snapshot state {s.state!r}") from exc
        self._error_reason = s.error_reason
        if s.error_reason in _PATH_FAILURES:
            self._error = BrokenPathError(s.error_reason)
        self._snd_una = s.snd_una
        self._snd_nxt = s.snd_nxt
        self._send_data = bytearray(s.send_data)
        self._shutdown = s.shutdown
        self._closed_last = s.closed_last
        self._fin_sent = s.fin_sent
        self._fin_acked = s.fin_acked
        self._sent = [_Sent(r.start, r.end, r.fin, r.pn, r.lost) for r in s.sent]
        self._in_flight = sum(r.end - r.start for r in self._sent if not r.lost)
        self._lost_count = sum(1 for r in self._sent if r.lost)
        self._next_pn = s.next_pn
        self._largest_acked_pn = s.largest_acked_pn
        self._recovery_pn = s.recovery_pn
        self._peer_right_edge = s.peer_right_edge
        self._cwnd = s.cwnd
        self._ssthresh = s.ssthresh
        self._ca_acked = s.ca_acked
        self._srtt = s.srtt
        self._rttvar = s.rttvar
        self._min_rtt = s.min_rtt
        self._rto = s.rto
        # Continue the timestamp clock where the old host left it, so the peer's echoes of
        # pre-migration values still give sane RTT samples.
        self._ts_last = s.ts_last
        self._ts_offset = s.ts_last - int(now * 1_000_000)
        self._send_blocked = s.send_blocked
        self._rcv_nxt = s.rcv_nxt
        self._read_offset = s.read_offset
        self._recv_data = bytearray(s.recv_data)
        for start, chunk in s.out_of_order:
            self._store_out_of_order(start, chunk)
        self._peer_fin = s.peer_fin
        self._discard_input = s.discard_input
        self._ts_recent = s.ts_recent
        self._ack_pending = s.ack_pending
        self._advertised_edge = s.advertised_edge
        self._counters.update(s.counters)
        self.drops.update(s.drops)
        self._last_rx = now
        if self._state is StreamState.TIME_WAIT:
            self._time_wait_deadline = now + self._opt.time_wait
        if self._state in _HANDSHAKING:
            self._control = {
                StreamState.SYN_SENT: StreamType.SYN,
                StreamState.SYN_RECEIVED: StreamType.SYN_ACK,
                StreamState.RESUMING: StreamType.RESUME,
            }[self._state]
        elif self._state in _SYNCHRONIZED:
            self._ack_now = True
            if self._sent:
                self._rto_deadline = now + self._rto_interval()

    # -- receive path ------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _on_reset(self) -> None:
        if self._state is StreamState.IDLE:
            self._drop("unexpected")
            return
        self._events.append(Reset())
        self._terminate(TerminationReason.RESET)

    def _on_syn(self, segment: StreamSegment, now: float) -> None:
        if self._role != "server":
            self._drop("unexpected")
            return
        if self._state is StreamState.IDLE:
            self._state = StreamState.SYN_RECEIVED
            self._peer_right_edge = segment.window
        elif self._state is not StreamState.SYN_RECEIVED:
            self._drop("unexpected")
            return
        # First SYN or a retransmission (our SYN-ACK was lost): (re)send the SYN-ACK.
        self._ts_recent = segment.ts_value
        self._control = StreamType.SYN_ACK
        self._last_rx = now

    def _on_syn_ack(self, segment: StreamSegment, now: float) -> None:
        if self._role != "client" or segment.ack != 0:
            self._drop("unexpected")
            return
        if self._state is StreamState.SYN_SENT:
            self._peer_right_edge = max(self._peer_right_edge, segment.window)
            self._rtt_sample(segment.ts_echo, now)
            self._handshake_done()
            self._state = StreamState.ESTABLISHED
            self._events.append(Connected())
            self._refresh_state(now)
        elif self._state not in _SYNCHRONIZED:
            self._drop("unexpected")
            return
        # Acknowledge (again, if our ACK was lost and the server retransmitted).
        self._ts_recent = segment.ts_value
        self._ack_now = True
        self._last_rx = now

    def _handshake_done(self) -> None:
        self._rto_deadline = None
        self._retries = 0
        self._backoff = 0

    def _on_stream_segment(self, segment: StreamSegment, now: float) -> None:
        state = self._state
        if state is StreamState.SYN_RECEIVED and segment.flags & StreamFlags.ACK:
            # The client's ACK (or first data) completes the handshake (§4.2.3).
            self._handshake_done()
            self._state = StreamState.ESTABLISHED
            self._events.append(Connected())
            self._refresh_state(now)
        elif state not in _SYNCHRONIZED:
            self._drop("not-established")
            return
        payload = segment.payload
        kind = segment.type
        carries = bool(payload) or kind is StreamType.FIN
        if carries:
            # Sequence check (§4.2.4): nothing may start beyond the advertised right edge.
            right_edge = self._read_offset + self._opt.recv_buffer
            seq = segment.seq
            if seq > right_edge or (payload and seq >= right_edge):
                self._drop("out-of-window")
                self._ack_now = True
                return
        if segment.flags & StreamFlags.ACK:
            if segment.ack > self._snd_nxt:
                self._drop("bad-ack")
                self._ack_now = True
                return
            self._on_ack(segment, now)
        self._last_rx = now
        if carries:
            self._on_data(segment, now)
        elif kind is StreamType.KEEPALIVE:
            self._ts_recent = segment.ts_value
            self._ack_now = True

    def _on_data(self, segment: StreamSegment, now: float) -> None:
        if segment.payload:
            self._stall_probing = True  # the peer sends data: watch for it going silent
            self._stall_probes = 0
        payload = segment.payload
        seq = segment.seq
        end = seq + len(payload)
        if segment.type is StreamType.FIN:
            if self._peer_fin is None:
                self._peer_fin = end
            elif self._peer_fin != end:
                self._drop("bad-fin")
                return
        if self._peer_fin is not None and end > self._peer_fin:
            self._drop("bad-fin")
            return
        if not self._ack_pending and not self._ack_now:
            self._ts_recent = segment.ts_value
        fresh = False
        if payload and end > self._rcv_nxt:
            fresh = True
            right_edge = self._read_offset + self._opt.recv_buffer
            if end > right_edge:
                payload = payload[: right_edge - seq]
                end = right_edge
            if seq <= self._rcv_nxt:
                if seq < self._rcv_nxt:
                    payload = payload[self._rcv_nxt - seq :]
                gap_filled = bool(self._ooo_ranges)
                self._deliver(payload)
                if gap_filled:
                    self._drain_out_of_order()
                    self._ack_now = True
                else:
                    self._ack_pending += 1
                    if self._ack_pending >= self._opt.ack_every:
                        self._ack_now = True
                    elif self._ack_deadline is None:
                        self._ack_deadline = now + self._opt.ack_delay
            else:
                # A gap: keep the data, tell the sender at once (SACK).
                self._store_out_of_order(seq, payload)
                self._ack_now = True
        if self._peer_fin is not None and self._rcv_nxt == self._peer_fin:
            fresh = True
            self._rcv_nxt += 1
            self._events.append(EndOfStream())
            self._ack_now = True
            self._refresh_state(now)
        if not fresh:
            self._counters["duplicate_segments"] += 1
            self._ack_now = True

    def _deliver(self, payload: bytes) -> None:
        size = len(payload)
        self._rcv_nxt += size
        self._counters["bytes_received"] += size
        if self._discard_input:
            self._read_offset = self._rcv_nxt
            return
        self._recv_data += payload
        events = self._events
        if events and isinstance(events[-1], DataReceived):
            events[-1] = DataReceived(events[-1].length + size)
        else:
            events.append(DataReceived(size))

    def _store_out_of_order(self, seq: int, payload: bytes) -> None:
        end = seq + len(payload)
        ranges = self._ooo_ranges
        # Keep only the parts not held yet, so the stored pieces stay disjoint.
        position = seq
        for start, stop in ranges:
            if stop <= position:
                continue
            if start >= end:
                break
            if start > position:
                self._ooo_data[position] = payload[position - seq : start - seq]
            position = max(position, stop)
            if position >= end:
                break
        if position < end:
            self._ooo_data[position] = payload[position - seq :]
        # Merge [seq, end) into the sorted, disjoint ranges.
        index = bisect.bisect_left(ranges, seq, key=lambda r: r[0])
        if index and ranges[index - 1][1] >= seq:
            index -= 1
        low, high = seq, end
        last = index
        while last < len(ranges) and ranges[last][0] <= high:
            low = min(low, ranges[last][0])
            high = max(high, ranges[last][1])
            last += 1
        ranges[index:last] = [[low, high]]
        self._last_ooo = seq

    def _drain_out_of_order(self) -> None:
        ranges = self._ooo_ranges
        pieces = self._ooo_data
        while ranges and ranges[0][0] <= self._rcv_nxt:
            start, stop = ranges.pop(0)
            position = start
            while position < stop:
                chunk = pieces.pop(position)
                chunk_end = position + len(chunk)
                if chunk_end > self._rcv_nxt:
                    self._deliver(chunk[self._rcv_nxt - position :])
                position = chunk_end

    def _peer_fin_consumed(self) -> bool:
        return self._peer_fin is not None and self._rcv_nxt > self._peer_fin

    # -- acknowledgment processing, loss recovery, congestion control ------------------------------

    def _on_ack(self, segment: StreamSegment, now: float) -> None:
        ack = segment.ack
        mss = self._opt.mss
        in_flight_before = self._in_flight
        sent = self._sent
        progressed = False
        cc_acked = 0
        largest_pn = -1
        recovery_pn = self._recovery_pn
        if ack > self._snd_una:
            progressed = True
            count = 0
            for record in sent:
                if record.end > ack:
                    break
                count += 1
                size = record.end - record.start
                if record.lost:
                    self._lost_count -= 1
                else:
                    self._in_flight -= size
                largest_pn = max(largest_pn, record.pn)
                if record.pn >= recovery_pn:
                    cc_acked += size
            del sent[:count]
            if sent and sent[0].start < ack:
                record = sent[0]
                if not record.lost:
                    self._in_flight -= ack - record.start
                record.start = ack
            data_end = self._data_end()
            del self._send_data[: min(ack, data_end) - self._snd_una]
            self._counters["bytes_acked"] += ack - self._snd_una
            self._snd_una = ack
            if self._fin_sent and ack > data_end:
                self._fin_acked = True
        for start, stop in segment.sack:
            if stop <= self._snd_una or start >= self._snd_nxt:
                continue
            index = bisect.bisect_left(sent, start, key=_start_key)
            while index < len(sent) and sent[index].end <= stop:
                record = sent.pop(index)
                progressed = True
                size = record.end - record.start
                if record.lost:
                    self._lost_count -= 1
                else:
                    self._in_flight -= size
                largest_pn = max(largest_pn, record.pn)
                if record.pn >= recovery_pn:
                    cc_acked += size
        if ack >= self._snd_una:
            self._peer_right_edge = max(self._peer_right_edge, ack + segment.window)
        # Any acknowledgment proves the peer alive: restart zero-window probing from scratch.
        self._persist_probes = 0
        self._persist_backoff = 0
        if self._persist_deadline is not None and self._peer_right_edge > self._snd_nxt:
            self._persist_deadline = None
        if progressed:
            self._rtt_sample(segment.ts_echo, now)
            if largest_pn > self._largest_acked_pn:
                self._largest_acked_pn = largest_pn
                self._detect_losses()
            if cc_acked and in_flight_before + 2 * mss >= self._cwnd:
                self._grow_window(cc_acked)
            self._retries = 0
            self._backoff = 0
            if self._in_flight or self._lost_count:
                self._rto_deadline = now + self._rto_interval()
            else:
                self._rto_deadline = None
            if self._fin_acked:
                self._refresh_state(now)
            if self._send_blocked and self.send_buffer_space() >= self._opt.send_buffer // 2:
                self._send_blocked = False
                self._events.append(SendSpaceAvailable(self.send_buffer_space()))

    def _grow_window(self, acked: int) -> None:
        if self._ssthresh is None or self._cwnd < self._ssthresh:
            self._cwnd += acked  # slow start
            return
        self._ca_acked += acked  # congestion avoidance: one MSS per window acknowledged
        while self._ca_acked >= self._cwnd:
            self._ca_acked -= self._cwnd
            self._cwnd += self._opt.mss

    def _detect_losses(self) -> None:
        threshold = self._largest_acked_pn - _PACKET_THRESHOLD
        if threshold < 0:
            return
        new_episode = False
        for record in self._sent:
            if not record.lost and record.pn <= threshold:
                record.lost = True
                self._lost_count += 1
                self._in_flight -= record.end - record.start
                if record.pn >= self._recovery_pn:
                    new_episode = True
        if new_episode:
            # One window reduction per episode: losses of segments sent before it began
            # belong to the same congestion event (RFC 6582 / RFC 9002 §7.3.2).
            self._counters["loss_episodes"] += 1
            self._recovery_pn = self._next_pn
            self._ssthresh = max(self._cwnd // 2, 2 * self._opt.mss)
            self._cwnd = self._ssthresh
            self._ca_acked = 0

    def _rtt_sample(self, ts_echo: int, now: float) -> None:
        if not ts_echo:
            return
        elapsed = (self._ts(now) - ts_echo) & _TS_MASK
        if elapsed >= 1 << 31:  # an echo from the future: not ours, or a clock jump
            return
        sample = elapsed / 1_000_000
        if self._srtt is None or self._rttvar is None:
            self._srtt = sample
            self._rttvar = sample / 2
        else:  # RFC 6298 §2.3
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        if self._min_rtt is None or sample < self._min_rtt:
            self._min_rtt = sample
        rto = self._srtt + max(4 * self._rttvar, 0.001)
        self._rto = min(max(rto, self._opt.min_rto), self._opt.max_rto)

    def _rto_interval(self) -> float:
        return min(self._rto * (1 << min(self._backoff, 30)), self._opt.max_rto)

    def _on_retransmission_timeout(self, now: float) -> None:
        self._retries += 1
        self._backoff += 1
        if self._state in _HANDSHAKING:
            if self._retries > self._opt.max_retries:
                self._terminate(TerminationReason.HANDSHAKE_TIMEOUT)
                return
            self._control = {
                StreamState.SYN_SENT: StreamType.SYN,
                StreamState.SYN_RECEIVED: StreamType.SYN_ACK,
                StreamState.RESUMING: StreamType.RESUME,
            }[self._state]
            return
        if not self._sent:
            self._retries -= 1
            self._backoff -= 1
            return
        if self._retries > self._opt.max_retries:
            self._terminate(TerminationReason.RETRY_LIMIT)
            return
        self._counters["retransmit_timeouts"] += 1
        flight = self._in_flight
        for record in self._sent:
            if not record.lost:
                record.lost = True
                self._lost_count += 1
        self._in_flight = 0
        # RFC 5681 §3.1: ssthresh = max(FlightSize / 2, 2 MSS), cwnd = 1 MSS. The first
        # retransmission starts a new episode, so the next losses cut the window again.
        self._ssthresh = max(flight // 2, 2 * self._opt.mss)
        self._cwnd = self._opt.mss
        self._ca_acked = 0
        self._recovery_pn = self._next_pn

    # -- send path ---------------------------------------------------------------------------------

    def _data_end(self) -> int:
        return self._snd_una + len(self._send_data) if not self._fin_acked else self._snd_una - 1

    def _ts(self, now: float) -> int:
        return ((int(now * 1_000_000) + self._ts_offset) & _TS_MASK) or 1

    def _recv_window(self) -> int:
        return max(0, self._read_offset + self._opt.recv_buffer - self._rcv_nxt)

    def _build(
        self,
        kind: StreamType,
        seq: int,
        flags: int,
        now: float,
        payload: bytes = b"",
    ) -> bytes:
        window = self._recv_window()
        ack = 0
        sack: tuple[tuple[int, int], ...] = ()
        if flags & StreamFlags.ACK:
            ack = self._rcv_nxt
            self._advertised_edge = ack + window
            self._ack_pending = 0
            self._ack_now = False
            self._ack_deadline = None
            if self._ooo_ranges:
                sack = self._sack_blocks()
        ts = self._ts(now)
        self._ts_last = ts
        self._counters["segments_sent"] += 1
        echo = self._ts_recent
        segment = StreamSegment(kind, self._nonce, seq, ack, window, flags, ts, echo, sack, payload)
        return wire.encode(segment)

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        # RFC 2018 §4: the block holding the latest arrival first, then the highest others.
        blocks: list[tuple[int, int]] = []
        latest = self._last_ooo
        for start, stop in self._ooo_ranges:
            if start <= latest < stop:
                blocks.append((start, stop))
                break
        for start, stop in reversed(self._ooo_ranges):
            if len(blocks) >= wire.MAX_SACK_BLOCKS:
                break
            if not start <= latest < stop:
                blocks.append((start, stop))
        return tuple(blocks)

    def _send_control(self, kind: StreamType, now: float, out: list[bytes]) -> None:
        if kind is StreamType.SYN or kind is StreamType.RESUME:
            out.append(self._build(kind, 0, StreamFlags.NONE, now))
        elif kind is StreamType.SYN_ACK:
            out.append(self._build(kind, 0, StreamFlags.ACK, now))
        else:  # RESUME_ACK
            flags = StreamFlags.ACK
            if self._peer_fin_consumed():
                flags |= StreamFlags.FIN_RECEIVED
            if self._fin_acked:
                flags |= StreamFlags.FIN_ACKED
            out.append(self._build(kind, self._snd_una, flags, now))
            return
        if self._rto_deadline is None:
            self._rto_deadline = now + self._rto_interval()

    def _send_stream(self, now: float, out: list[bytes]) -> None:
        mss = self._opt.mss
        # 1. Repair: retransmit segments deemed lost, oldest first, within cwnd.
        if self._lost_count:
            for record in self._sent:
                if not record.lost:
                    continue
                size = record.end - record.start
                if self._in_flight and self._in_flight + size > self._cwnd:
                    break
                record.lost = False
                self._lost_count -= 1
                record.pn = self._next_pn
                self._next_pn += 1
                self._in_flight += size
                low = record.start - self._snd_una
                high = record.end - record.fin - self._snd_una
                payload = bytes(self._send_data[low:high])
                kind = StreamType.FIN if record.fin else StreamType.DATA
                out.append(self._build(kind, record.start, StreamFlags.ACK, now, payload))
                self._counters["bytes_retransmitted"] += len(payload)
                if self._rto_deadline is None:
                    self._rto_deadline = now + self._rto_interval()
                if not self._lost_count:
                    break
        # 2. New data, then the FIN, within min(cwnd, peer window).
        window_blocked = False
        while not self._fin_sent:
            data_end = self._snd_una + len(self._send_data)
            left = data_end - self._snd_nxt
            if left <= 0 and not self._shutdown:
                break
            window_room = self._peer_right_edge - self._snd_nxt
            cwnd_room = self._cwnd - self._in_flight
            size = min(mss, left, window_room, cwnd_room)
            if left > 0:
                if size <= 0:
                    window_blocked = window_room <= 0
                    break
                if size < min(mss, left) and self._in_flight:
                    # Avoid silly small segments while acknowledgments will open room.
                    window_blocked = window_room < min(mss, left)
                    break
            elif self._in_flight and cwnd_room <= 0:
                break
            size = max(size, 0)
            fin = self._shutdown and self._snd_nxt + size == data_end
            start = self._snd_nxt
            offset = start - self._snd_una
            payload = bytes(self._send_data[offset : offset + size])
            end = start + size + fin
            self._sent.append(_Sent(start, end, fin, self._next_pn))
            self._next_pn += 1
            self._in_flight += end - start
            self._snd_nxt = end
            self._counters["bytes_sent"] += size
            kind = StreamType.FIN if fin else StreamType.DATA
            out.append(self._build(kind, start, StreamFlags.ACK, now, payload))
            if self._rto_deadline is None:
                self._rto_deadline = now + self._rto_interval()
            if fin:
                self._fin_sent = True
        # 3. Zero window with nothing in flight: probe it on the persist timer (§4.2.4).
        if window_blocked and not self._sent:
            if self._persist_deadline is None:
                rto = self._rto
                interval = min(rto * (1 << self._persist_backoff), self._opt.max_probe_interval)
                self._persist_deadline = now + max(interval, rto)
        else:
            self._persist_deadline = None

    def _maybe_window_update(self) -> None:
        if self._state not in _SYNCHRONIZED:
            return
        edge = self._read_offset + self._opt.recv_buffer
        buffer = self._opt.recv_buffer
        advertised = self._advertised_edge - self._rcv_nxt
        # Tell a sender we may have stalled, but only once the window grew usefully (SWS).
        threshold = min(2 * self._opt.mss, buffer // 2)
        if advertised < buffer // 2 and edge - self._advertised_edge >= threshold:
            self._ack_now = True

    def _keepalive_deadline(self) -> float | None:
        if (
            self._opt.keepalive is None
            or self._state not in _SYNCHRONIZED
            or self._state is StreamState.TIME_WAIT
            or self._sent
            or self._persist_deadline is not None
        ):
            return None
        interval = self._opt.keepalive
        if self._stall_probing and self._opt.stall_probe is not None and self._peer_fin is None:
            interval = min(interval, self._opt.stall_probe * 2**self._stall_probes)
        return max(self._last_rx, self._last_keepalive) + interval

    # -- RESUME (§4.2.5) ---------------------------------------------------------------------------

    def _on_resume(self, segment: StreamSegment, now: float) -> None:
        if self._state not in _SYNCHRONIZED or self._state is StreamState.TIME_WAIT:
            self._drop("unexpected")
            return
        # The peer host lost the flow: everything it had not acknowledged is resent from
        # snd_una, data it sent us beyond rcv_nxt is discarded (the new host resends it).
        self._sent.clear()
        self._in_flight = 0
        self._lost_count = 0
        self._snd_nxt = self._snd_una
        self._fin_sent = self._fin_acked
        self._cwnd = self._opt.initial_window * self._opt.mss
        self._ssthresh = None
        self._ca_acked = 0
        self._recovery_pn = self._next_pn
        self._largest_acked_pn = self._next_pn - 1
        self._rto_deadline = None
        self._persist_deadline = None
        self._retries = 0
        self._backoff = 0
        self._peer_right_edge = self._snd_una + segment.window
        self._ooo_ranges.clear()
        self._ooo_data.clear()
        if self._peer_fin is not None and not self._peer_fin_consumed():
            self._peer_fin = None
        self._ts_recent = segment.ts_value
        self._control = StreamType.RESUME_ACK
        self._last_rx = now
        self._events.append(Resumed(min(self._snd_una, self._data_end()), self._stream_rcv_nxt()))

    def _on_resume_ack(self, segment: StreamSegment, now: float) -> None:
        if self._state is not StreamState.RESUMING:
            self._drop("unexpected")
            return
        self._rtt_sample(segment.ts_echo, now)
        self._handshake_done()
        if segment.flags & StreamFlags.FIN_RECEIVED:
            # Our direction had already ended (the old host's FIN was received).
            self._send_data.clear()
            self._shutdown = self._fin_sent = self._fin_acked = True
        self._snd_una = self._snd_nxt = segment.ack
        self._peer_right_edge = segment.ack + segment.window
        self._rcv_nxt = self._read_offset = segment.seq
        peer_ended = bool(segment.flags & StreamFlags.FIN_ACKED)
        if peer_ended:
            # The peer's stream had ended (its FIN at seq - 1 was acknowledged by the old host).
            self._peer_fin = self._read_offset = segment.seq - 1
        self._state = StreamState.ESTABLISHED
        self._last_rx = now
        self._events.append(Resumed(min(self._snd_una, self._data_end()), self._stream_rcv_nxt()))
        if peer_ended:
            self._events.append(EndOfStream())
        self._refresh_state(now)
        self._ack_now = True

    def _stream_rcv_nxt(self) -> int:
        return self._rcv_nxt - 1 if self._peer_fin_consumed() else self._rcv_nxt

    # -- state -------------------------------------------------------------------------------------

    def _refresh_state(self, now: float) -> None:
        if self._state not in _SYNCHRONIZED or self._state is StreamState.TIME_WAIT:
            return
        peer_done = self._peer_fin_consumed()
        if not self._shutdown:
            self._state = StreamState.CLOSE_WAIT if peer_done else StreamState.ESTABLISHED
        elif not peer_done:
            self._state = StreamState.FIN_WAIT
        elif not self._fin_acked:
            self._state = StreamState.CLOSING
        elif self._closed_last:
            self._terminate(TerminationReason.CLOSED)
        else:
            self._state = StreamState.TIME_WAIT
            self._time_wait_deadline = now + self._opt.time_wait
            self._rto_deadline = None
            self._persist_deadline = None

    def _terminate(self, reason: str) -> None:
        self._state = StreamState.CLOSED
        self._rto_deadline = None
        self._ack_deadline = None
        self._persist_deadline = None
        self._time_wait_deadline = None
        self._control = None
        self._keepalive_pending = False
        self._ack_now = False
        self._sent.clear()
        self._in_flight = 0
        self._lost_count = 0
        self._error_reason = reason
        if reason in _PATH_FAILURES:
            self._error = BrokenPathError(f"stream flow {self._nonce:#018x}: {reason}")
        self._events.append(ConnectionTerminated(reason))
