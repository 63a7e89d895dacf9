"""``StreamMachine``: the protocol engine of a stream connection (docs/protocol.md §4.2).

Segments in (:meth:`~StreamMachine.receive_segment`), segments out
(:meth:`~StreamMachine.segments_to_send`), timers (:meth:`~StreamMachine.get_timer`,
:meth:`~StreamMachine.handle_timer`) and the moves through the state tables of
``state.py``: the handshake (§4.2.3), RESUME (§4.2.5, ``resume.py``), the close (§4.2.3),
liveness (§4.2.4), data on SYN, RETRY and NOT_HERE (§4.2.7 - §4.2.9), signals verified
before they end the stream (§4.3). It delegates our direction to :class:`~.sender.Sender`
(send stream, scoreboard, congestion control, RTT), the peer's to
:class:`~.receiver.Receiver` (reassembly, ACK policy), encoding to
:class:`~.builder.SegmentBuilder` and keepalives to :class:`~.liveness.Liveness`.
``connection.py`` adds the application's side on top.

Sequence numbers are stream offsets from 0 in each direction; the flow's nonce keeps blind
and stale segments out (§4.2.2). Path-MTU probes (PROBE, answered by PROBE-ACK, §4.2.6) go
out with the segments of a synchronized connection; the search is the sender's
(``pmtu.py``). Nothing here reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

import math
from typing import Literal

from ..errors import BrokenPathError, MalformedPacket, ObjectNotFound, ScaffoldError
from ..wire import stream as wire
from ..wire.stream import StreamFlags, StreamSegment, StreamType
from . import resume
from .builder import SegmentBuilder
from .events import Connected, ConnectionTerminated, EndOfStream, EventQueue, Reset
from .liveness import Due, Liveness
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
_SYN_ACK = StreamType.SYN_ACK
#: the probe's padding: the probed segment size and room for the largest SACK option
_SACK_ROOM = 32
_ACK = int(StreamFlags.ACK)  # a plain int: IntFlag arithmetic builds enum members per call
_NO_FLAGS = 0
_SYN_RECEIVED = StreamState.SYN_RECEIVED
#: header + fixed segment bytes of a packet: what an answer to an unproven source costs
_PACKET_OVERHEAD = 76 + wire.FIXED_LEN
#: before the client proved its address (its ACK), the server sends at most this many times
#: the bytes its SYN brought (QUIC's anti-amplification limit, RFC 9000 §8.1)
_AMPLIFICATION = 3
#: RETRYs a client follows per connection (each one costs the server nothing)
_MAX_RETRIES_FOLLOWED = 3
#: NOT_HEREs a client follows per connection, and the delay before the first one's SYN,
#: doubling: 15, 30, 60, 120, 240 ms -- the tables catch up within milliseconds, and a host
#: that answers forever cannot make the client loop: after these, the RTO's schedule (§4.2.9)
_MAX_NOT_HERE_FOLLOWED = 5
_NOT_HERE_DELAY = 0.015
#: ``_coarse`` when only the liveness deadline may have moved (a keepalive went out, a
#: bundle answered): ``deadlines`` recomputes that one alone. No deadline is ever -inf.
_COARSE_STALE = -math.inf


class StreamMachine:
    """The protocol side of one end of a stream flow; :class:`~.connection.StreamConnection`
    is what applications and the host stack use."""

    __slots__ = (
        "_builder",
        "_closed_last",
        "_coarse",
        "_control",
        "_error",
        "_error_reason",
        "_events",
        "_keepalive_pending",
        "_liveness",
        "_nonce",
        "_not_here_followed",
        "_opt",
        "_probe_ack",
        "_receiver",
        "_resyn_at",
        "_retries_followed",
        "_role",
        "_rst_pending",
        "_segments_received",
        "_sender",
        "_state",
        "_suspect",
        "_syn_data",
        "_time_wait_deadline",
        "_timer",
        "_timer_stale",
        "_token",
        "drops",
    )

    def __init__(
        self, role: Role, nonce: int, now: float, options: StreamOptions, mss_ceiling: int = 0
    ) -> None:
        self._role: Role = role
        self._nonce = nonce
        self._opt = options
        self._state = _IDLE
        self._events = EventQueue()
        self.drops: dict[str, int] = {}
        self._error: ScaffoldError | None = None
        self._error_reason: str | None = None
        self._sender = Sender(options, self._events, now, mss_ceiling)
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
        # deadlines() caches the earliest exact and coarse deadlines until one of our methods
        # may change one; get_timer() is the earlier of the two
        self._timer: float | None = None
        self._coarse: float | None = None
        self._timer_stale = True
        #: bytes of our stream the SYN carries (data on SYN, §4.2.7), fixed at connect()
        self._syn_data = 0
        #: the server's retry token our SYN carries (RETRY, §4.2.8); 0: none
        self._token = 0
        self._retries_followed = 0
        #: NOT_HEREs followed, and when the SYN they asked for goes out (§4.2.9)
        self._not_here_followed = 0
        self._resyn_at: float | None = None
        #: a signal under verification: (termination reason, deadline) (§4.3)
        self._suspect: tuple[str, float] | None = None

    # -- network side ------------------------------------------------------------------------------

    def receive_segment(self, data: bytes | memoryview | StreamSegment, now: float) -> None:
        """Process one transport segment from the network: its bytes, or the segment parsed
        already (a host that read a new flow's SYN to admit it hands it over as it is).

        Never raises for bad input: malformed, wrong-nonce, out-of-window or unexpected
        segments are dropped and counted in :attr:`drops` by reason.
        """
        if isinstance(data, StreamSegment):
            segment = data
        else:
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
        if kind is StreamType.NOT_HERE:
            # From a host that is not the peer (no replica there): it refutes no signal.
            self._on_not_here(now)
            return
        self._suspect = None  # an authentic segment: the peer is there, whatever a signal said
        if (search := self._sender.search) is not None:
            search.heard = True  # the path works (path-MTU probes, §4.2.6)
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
        elif kind is StreamType.RETRY:
            self._on_retry(segment)
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
        stream = self._sender.stream
        answer = False  # the first SYN-ACK carries the first segment written before it left
        if self._control is not None:
            if (
                state is _SYN_RECEIVED
                and (stream.data is not None or stream.shutdown)
                and self.answer_pending
            ):
                answer = True
            else:
                self._send_control(self._control, now, out)
            self._control = None
        if state is _SYN_RECEIVED:
            # Data before the client's ACK (an answer to data on SYN, §4.2.7), within the
            # anti-amplification budget ``_on_syn`` set as the peer's window. (Before the
            # application wrote or shut down, there is nothing to send nor any timer to set:
            # the SYN-ACK goes alone, without a call.)
            if answer:
                self._answer_syn(now, out)
            elif stream.data is not None or stream.shutdown:
                self._sender.write(now, out, build)
        elif state in SYNCHRONIZED:
            if state is not _TIME_WAIT:
                sent = self._sender.stream.nxt
                self._sender.write(now, out, build)
                if self._role == "client" and self._sender.stream.nxt > sent:
                    # A request went out: its answer is awaited, and a silence once it is
                    # acknowledged is as suspicious as one mid-response (§5.1).
                    self._liveness.on_payload()
            if self._keepalive_pending:
                self._keepalive_pending = False
                out.append(build(StreamType.KEEPALIVE, self._sender.stream.nxt, _ACK, now))
            if self._probe_ack:
                out.append(build(_PROBE_ACK, self._probe_ack, 0, now))
                self._probe_ack = 0
            sender = self._sender
            # Probe only when larger segments would carry something: more than one segment
            # is buffered (a request and its response of a few bytes never pay for a probe).
            if (
                state is not _TIME_WAIT
                and (data := sender.stream.data) is not None  # ``buffered`` inline
                and len(data) > sender.mss
                and sender.probe_pending()
            ):
                size = sender.pmtu.next_probe(now, sender.rtt.interval())
                out.append(build(_PROBE, size, 0, now, bytes(size + _SACK_ROOM)))
            if self._receiver.acks.immediate:
                out.append(build(_DATA, self._sender.stream.nxt, _ACK, now))
        return out

    def get_timer(self) -> float | None:
        """Absolute time at which :meth:`handle_timer` must be called, or None.

        O(1): the earliest deadline is cached until one of this connection's own methods
        changes one, so a host may compare it after every call to see whether it moved.
        """
        exact, coarse = self.deadlines()
        if exact is None:
            return coarse
        return exact if coarse is None or exact < coarse else coarse

    def deadlines(self) -> tuple[float | None, float | None]:
        """``(exact, coarse)``: the earliest retransmission, persist, delayed-ACK, TIME_WAIT
        or signal deadline, and the earliest liveness deadline (keepalive, stall probe, idle
        timeout). A host files the coarse one in a timer wheel (``core/host/timers.py``) and
        runs it with :meth:`handle_liveness`. Cached like :meth:`get_timer`."""
        if self._timer_stale:
            self._timer, self._coarse = self._next_deadlines()
            self._timer_stale = False
        elif self._coarse == _COARSE_STALE:
            self._coarse = self._next_coarse()
        return self._timer, self._coarse

    def _next_deadlines(self) -> tuple[float | None, float | None]:
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return None, None
        sender = self._sender
        exact = sender.rto_deadline
        for at in (
            sender.persist_deadline,
            self._receiver.acks.deadline,
            self._time_wait_deadline,
            self._suspect[1] if self._suspect is not None else None,
            search.deadline if (search := sender.search) is not None else None,
            self._resyn_at,
        ):
            if at is not None and (exact is None or at < exact):
                exact = at
        # ``_next_coarse`` and ``_keepalive_deadline`` inline: this runs at every pump of
        # every stream, and mostly a stream is busy (no keepalive to compute).
        liveness = self._liveness
        coarse = liveness.last_rx + liveness.idle_timeout  # ``idle_deadline`` inline
        if (
            self._role == "client"
            and state in SENDING
            and sender.recovery.segments is None
            and sender.persist_deadline is None
        ):
            keepalive = liveness.keepalive_deadline(self._receiver.stream.peer_fin is not None)
            if keepalive is not None and keepalive < coarse:
                coarse = keepalive
        return exact, coarse

    def _next_coarse(self) -> float | None:
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return None
        coarse = self._liveness.idle_deadline()
        keepalive = self._keepalive_deadline()
        if keepalive is not None and keepalive < coarse:
            coarse = keepalive
        return coarse

    def handle_timer(self, now: float, *, liveness: bool = True) -> None:
        """Run every timer that expired at ``now``; with ``liveness=False`` all but the
        keepalive and the idle timeout (a host runs those with :meth:`handle_liveness`)."""
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return
        self._timer_stale = True
        sender = self._sender
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._terminate(TerminationReason.CLOSED)
            return
        if self._suspect is not None and now >= self._suspect[1]:
            self._terminate(self._suspect[0])  # nothing authentic refuted the signal (§4.3)
            return
        if liveness and self.handle_liveness(now):
            self._keepalive_pending = True
        if self._state is _CLOSED:
            return
        if self._resyn_at is not None and now >= self._resyn_at:
            self._resyn_at = None
            self._control = StreamType.SYN  # the SYN a NOT_HERE asked for (§4.2.9)
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
        pmtu = sender.search
        if pmtu is not None and pmtu.deadline is not None and now >= pmtu.deadline and pmtu.on_timer(now):
            self._keepalive_pending = True  # its answer tells whether the path works
        acks = self._receiver.acks
        if acks.deadline is not None and now >= acks.deadline:
            acks.deadline = None
            acks.immediate = True

    def handle_liveness(self, now: float, *, handover: bool = False) -> Due:
        """Run the liveness timers due at ``now``: end an idle connection, and tell whether a
        keepalive (or stall probe) is due -- true: the caller sends it, as a KEEPALIVE
        (:meth:`probe`) or in a liveness bundle (docs/protocol.md §4.4). With ``handover``
        the caller watches the peer host for held streams: ``Due.HANDED_OVER`` says this
        was the first stall probe of a silence and its later ones are the watch's (§4.4)."""
        state = self._state
        if state is _CLOSED or state is _IDLE:
            return Due.NONE
        liveness = self._liveness
        idle = liveness.idle_deadline()
        if now >= idle:
            self._timer_stale = True
            self._terminate(TerminationReason.IDLE_TIMEOUT)
            return Due.NONE
        # Only the liveness deadline moves: a host runs this for every idle stream at each
        # keepalive (and every held stream's stall probes), and the exact deadlines stay as
        # cached. The new coarse deadline is cached here, from the values at hand, so the
        # host's ``deadlines()`` right after does not compute it all again.
        keepalive = self._keepalive_deadline()
        due = Due.NONE
        if keepalive is not None and now >= keepalive:
            peer_fin_known = self._receiver.stream.peer_fin is not None
            due = liveness.on_keepalive(now, peer_fin_known, handover)
            keepalive = liveness.keepalive_deadline(peer_fin_known)
        self._coarse = idle if keepalive is None or idle <= keepalive else keepalive
        return due

    def peer_alive(self, at: float) -> None:
        """The peer proved, with the nonce, that it held this flow at time ``at`` (a liveness
        bundle, §4.4): as good as a segment received then, for keepalives, idle timeout and
        signals."""
        if self._state is _CLOSED or self._state is _IDLE:
            return
        liveness = self._liveness
        liveness.last_rx = max(liveness.last_rx, at)
        self._coarse = _COARSE_STALE
        if self._suspect is not None:
            self._suspect = None
            self._timer_stale = True

    def suspect(self, reason: str, now: float) -> None:
        """A signal says the object or the path is gone (``reason``: ``object-not-found`` or
        ``unreachable``). Signals carry no nonce, so it is only a hint (docs/protocol.md §4.3):
        the peer is probed at once (the handshake segment again, or a KEEPALIVE), and the
        connection ends with ``reason`` unless an authentic segment arrives within
        ``signal_verify`` (at least two smoothed RTTs)."""
        state = self._state
        if state is _CLOSED or state is _IDLE or state is _TIME_WAIT or self._suspect is not None:
            return
        srtt = self._sender.rtt.srtt or 0.0
        self._suspect = (reason, now + max(self._opt.signal_verify, 2 * srtt))
        self._timer_stale = True
        if state in HANDSHAKING:
            self._control = HANDSHAKE_SEGMENT[state]
        else:
            self._keepalive_pending = True

    def _keepalive_deadline(self) -> float | None:
        # Only idle synchronized clients probe: nothing outstanding, no persist timer. The
        # client's probe (and its answer) keeps both ends' idle timers fresh; a server's could
        # not reach another replica of its peer, so it only waits (§4.2.4). (Inline in
        # ``_next_deadlines``: keep the two in step.)
        sender = self._sender
        if (
            self._role == "client"
            and self._state in SENDING
            and sender.recovery.segments is None
            and sender.persist_deadline is None
        ):
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
            # Until the client's ACK proves its address, answer at most _AMPLIFICATION times
            # what the SYN brought: the window we may use is capped to that (§4.2.7).
            budget = _AMPLIFICATION * (_PACKET_OVERHEAD + len(segment.payload)) - 2 * _PACKET_OVERHEAD
            self._sender.peer_right_edge = min(segment.window, max(budget, 0))
        elif self._state is not _SYN_RECEIVED:
            self._drop("unexpected")
            return
        # First SYN or a retransmission (our SYN-ACK was lost): (re)send the SYN-ACK.
        self._receiver.acks.ts_recent = segment.ts_value
        self._control = StreamType.SYN_ACK
        self._liveness.last_rx = now
        if segment.payload:
            # Data on SYN: state exists for the flow now, so the bytes are taken (§4.2.7);
            # a retransmitted SYN's copy is a duplicate.
            self._receiver.on_data(segment, now)

    def _on_syn_ack(self, segment: StreamSegment, now: float) -> None:
        if self._role != "client" or segment.ack > self._syn_data:
            self._drop("unexpected")
            return
        established = HANDSHAKE.get((self._state, Happening.SYN_ACK))
        if established is not None:
            sender = self._sender
            if segment.ack:
                # The server took the first bytes from our SYN: they are delivered (§4.2.7).
                # Bytes it did not take are sent again as data, like any unacknowledged byte.
                stream = sender.stream
                stream.acknowledge(segment.ack)
                stream.nxt = segment.ack
                stream.bytes_sent += segment.ack
            sender.peer_right_edge = max(sender.peer_right_edge, segment.ack + segment.window)
            if (rtt := self._builder.rtt_of(segment.ts_echo, now)) is not None:
                sender.rtt.on_sample(rtt)
            self._handshake_done(established, now)
        elif self._state not in SYNCHRONIZED:
            self._drop("unexpected")
            return
        if segment.payload:
            # The first bytes of the server's answer rode in it (§4.2.7); a duplicate of a
            # SYN-ACK we took already brings them again and is counted as one.
            self._receiver.on_data(segment, now)
        # Acknowledge (again, if our ACK was lost and the server retransmitted).
        self._receiver.on_probe(segment.ts_value)
        self._liveness.last_rx = now

    def _handshake_done(self, state: StreamState, now: float) -> None:
        sender = self._sender
        sender.on_answer()
        if sender.recovery.segments is not None:
            sender.arm_rto(now)  # data a server sent before the client's ACK (§4.2.7)
        self._state = state
        self._events.push(Connected())
        self._close_step(now)

    def _on_retry(self, segment: StreamSegment) -> None:
        """The server keeps no state for our SYN until it carries the token (§4.2.8)."""
        if (
            self._role != "client"
            or self._state is not StreamState.SYN_SENT
            or not segment.ack
            or self._retries_followed >= _MAX_RETRIES_FOLLOWED
        ):
            self._drop("unexpected")
            return
        self._retries_followed += 1
        self._token = segment.ack
        self._control = StreamType.SYN  # at once, and with a fresh retransmission timer
        self._sender.rto_deadline = None

    def _on_not_here(self, now: float) -> None:
        """The host our SYN reached has no listener for the object (§4.2.9): the tables that
        sent it there were stale. Send the SYN again soon, through the object switches
        again; a few times only, then the SYN's retransmission timer governs."""
        if self._role != "client" or self._state is not StreamState.SYN_SENT:
            self._drop("unexpected")
            return
        if self._resyn_at is not None or self._not_here_followed >= _MAX_NOT_HERE_FOLLOWED:
            self._drop("not-here-ignored")  # a duplicate, or one too many: the RTO runs
            return
        self._resyn_at = now + _NOT_HERE_DELAY * (1 << self._not_here_followed)
        self._not_here_followed += 1
        self._sender.rto_deadline = None  # re-armed when that SYN goes out

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
            if payload and self._role == "client":
                # The peer (a replica) sends data: watch for it going silent. Only a client's
                # probe can reach another replica (§5.1); a server's would come back to it.
                # (Sending data starts the watch too: segments_to_send, connect.)
                self._liveness.on_payload()
            outcome = receiver.on_data(segment, now)
            if outcome == BAD_FIN:
                self._drop("bad-fin")
            elif outcome == FIN_ARRIVED:
                self._close_step(now)
        elif kind is StreamType.KEEPALIVE:
            receiver.on_probe(segment.ts_value)

    def _on_retransmission_timeout(self, now: float) -> None:
        if self._state in HANDSHAKING:
            # A SYN-ACK or RESUME answers a source that has not proven itself yet: few retries.
            passive = self._state is not StreamState.SYN_SENT
            limit = self._opt.accept_retries if passive else self._opt.max_retries
            if self._sender.on_handshake_timeout(limit):
                self._control = HANDSHAKE_SEGMENT[self._state]
            else:
                self._terminate(TerminationReason.HANDSHAKE_TIMEOUT)
        elif not self._sender.on_retransmission_timeout(self._opt.max_retries, now):
            stream = self._sender.stream
            if self._state is StreamState.CLOSING and stream.fin_sent and not stream.buffered:
                # Every byte went both ways and only our FIN's acknowledgment is missing: the
                # peer that had it forgot the stream after TIME_WAIT (its ACKs lost on a
                # congested path). Nothing was lost, so the stream ends closed (§4.2.3).
                self._drop("fin-unacknowledged")
                self._terminate(TerminationReason.CLOSED)
            else:
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

    @property
    def answer_pending(self) -> bool:
        """A server whose first SYN-ACK has not left yet: what the application writes before
        :meth:`segments_to_send` rides in it (§4.2.7). A host that surfaces this stream's
        events first takes its segments after the application saw them."""
        return self._control is _SYN_ACK and self._state is _SYN_RECEIVED and self._sender.stream.nxt == 0

    def _answer_syn(self, now: float, out: list[bytes]) -> None:
        """The first SYN-ACK when data was written (or the stream shut down) before it left:
        the first segment of that data rides in it (``seq`` 0, §4.2.7) -- one datagram fewer
        each way when a service answers at once. A segment that ends the stream does not (the
        SYN-ACK carries no FIN). A retransmitted SYN-ACK goes bare: its data is retransmitted
        as ``DATA`` once the client's ACK came, like any unacknowledged byte."""
        sender = self._sender
        first = len(out)
        build = self._builder.build

        def first_in_syn_ack(
            kind: StreamType, seq: int, flags: int, now: float, payload: bytes = b"", token: int = 0
        ) -> bytes:
            if kind is _DATA and seq == 0 and len(out) == first:
                kind = _SYN_ACK
            return build(kind, seq, flags, now, payload, token)

        sender.write(now, out, first_in_syn_ack)
        if len(out) == first or out[first][0] != _SYN_ACK:
            out.insert(first, self._builder.build(_SYN_ACK, 0, _ACK, now))
        sender.arm_rto(now)

    def _send_control(self, kind: StreamType, now: float, out: list[bytes]) -> None:
        build = self._builder.build
        if kind is StreamType.SYN:
            self._resyn_at = None  # whatever sends the SYN, a NOT_HERE's wait is over
            payload = self._sender.stream.payload(0, self._syn_data) if self._syn_data else b""
            out.append(build(kind, 0, _NO_FLAGS, now, payload, self._token))
        elif kind is StreamType.RESUME:
            out.append(build(kind, 0, _NO_FLAGS, now))
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
        receive = self._receiver.stream
        peer_fin = receive.peer_fin  # ``fin_consumed`` inline (at every acknowledgment)
        state = after_close_step(
            stream.shutdown, peer_fin is not None and receive.rcv_nxt > peer_fin, stream.fin_acked
        )
        if state is not _TIME_WAIT:
            self._state = state
        elif self._closed_last:
            self._terminate(TerminationReason.CLOSED)
        else:
            self._state = state
            self._time_wait_deadline = now + self._opt.time_wait
            self._sender.stop_timers()

    def _terminate(self, reason: str) -> None:
        opening = self._state is StreamState.SYN_SENT
        self._state = _CLOSED
        self._timer_stale = True
        self._sender.stop_timers()
        self._sender.recovery.clear()
        self._receiver.acks.deadline = None
        self._receiver.acks.immediate = False
        self._time_wait_deadline = None
        self._control = None
        self._keepalive_pending = False
        self._suspect = None
        self._resyn_at = None
        self._error_reason = reason
        if reason == TerminationReason.OBJECT_NOT_FOUND and opening:
            self._error = ObjectNotFound(f"stream flow {self._nonce:#018x}: no replica is registered")
        elif reason in PATH_FAILURES:
            self._error = BrokenPathError(f"stream flow {self._nonce:#018x}: {reason}")
        self._events.push(ConnectionTerminated(reason))
