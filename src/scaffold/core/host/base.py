"""The host stack's state and the primitives every part of it uses (docs/protocol.md §3.4).

``HostStackBase`` holds what a host knows -- registration, listeners, flows and their indexes,
the timer heap and wheel, output queues -- and the few operations all its parts share: send
a segment on a flow (``_emit``), pump a stream transport (``_pump``), forget a flow
(``_forget``). The stack's jobs are mixed in on top of it: ``streams.py``, ``keepalive.py``,
``churn.py`` and ``stack.py``.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

from ...errors import UsageError
from ...ids import ObjectId, new_flow_id, new_nonce
from ...transport import Connected, ConnectionTerminated, Resumed, StreamConnection, StreamOptions
from ...wire import control
from ...wire import header as wire_header
from ...wire.header import Flags, Header, Proto
from ..engine import NodeCore
from ..events import TraceHop
from ..metrics import Histogram
from ..ratelimit import TokenBucket
from .events import DrainCompleted, FlowClosed, HostEvent, StreamEventFor
from .flows import Flow, Listener, PeerWatch, PendingBundle, Role
from .stats import FLOW_PAUSE, FlowTotals
from .timers import DeadlineHeap, TimerWheel

# plain ints: IntFlag arithmetic builds enum members on every call
_TO_CLIENT = int(Flags.TO_CLIENT)
_TRACE = int(Flags.TRACE)
_LOCATORS = wire_header.LOCATORS
_DST_OFFSET = wire_header.DST_OFFSET

__all__ = ["BUNDLES", "HEARTBEAT", "LIVENESS_BATCH", "LIVENESS_TICK", "SWEEP", "WATCHES", "HostStackBase"]

#: keys of the host's own timers in its ``DeadlineHeap``; stream flows use their Socket ID (> 0)
HEARTBEAT = -1
SWEEP = -2
#: the expiry of the oldest liveness bundle waiting for its answer (``keepalive.py``)
BUNDLES = -3
#: the next probe of a watched peer host (``keepalive.py``)
WATCHES = -4
#: granularity of keepalives, stall probes and idle timeouts (seconds): the timer wheel's tick
LIVENESS_TICK = 0.05
#: streams whose liveness timers one ``handle_timer`` call runs, at most
LIVENESS_BATCH = 2048


class HostStackBase(NodeCore[HostEvent]):
    """A host's state and shared primitives; ``HostStack`` is the class to use."""

    role: ClassVar[str] = "host"

    def __init__(
        self,
        name: str,
        gateway: str,
        rng: random.Random | None = None,
        *,
        idle_timeout: float = 120.0,
        stream_options: StreamOptions | None = None,
        liveness_tick: float = LIVENESS_TICK,
        retry_above: int = 512,
        half_open_limit: int = 4096,
        not_here_rate: float = 1000.0,
        not_here_burst: int = 100,
    ) -> None:
        super().__init__(name)
        self.gateway = gateway
        self.host_id = 0
        self.dc_id = 0
        self.heartbeat_interval = 0.0
        #: how long the controller lets this host's control connection be silent (from
        #: ``Welcome``; 0: not said): the runtime keeps it alive every third of it (§6.6)
        self.control_idle_timeout = 0.0
        self.idle_timeout = idle_timeout
        if stream_options is not None and not isinstance(stream_options, StreamOptions):
            raise UsageError(f"stream_options must be a StreamOptions, not {type(stream_options).__name__}")
        #: the options of every ``StreamConnection`` this host creates (None: the defaults)
        self.stream_options = stream_options
        self.listeners: dict[bytes, Listener] = {}
        self.flows: dict[int, Flow] = {}
        self._rng = rng if rng is not None else random.SystemRandom()
        #: server flows by (Flow ID, peer Host ID): their first packets carry no Socket ID
        self._by_flow: dict[tuple[int, int], int] = {}
        #: the stream flows (socket id -> flow), whose transports have timers
        self._streams: dict[int, Flow] = {}
        #: the datagram flows, which the idle sweep looks at
        self._datagrams: dict[int, Flow] = {}
        #: stream flows that received segments since they were last pumped
        self._dirty: dict[int, Flow] = {}
        #: server streams whose events were surfaced before their first SYN-ACK was built
        #: (``_pump_dirty``): pumped with the next datagrams
        self._answering: dict[int, Flow] = {}
        self._last_now = 0.0
        self._next_socket = 1
        #: exact deadlines: each stream's transport timers (by Socket ID), heartbeat, sweep
        self._timers = DeadlineHeap()
        #: coarse deadlines: each stream's keepalive, stall probe and idle timeout (by Socket
        #: ID), rounded up to ``liveness_tick`` so the streams due together share bundles
        self._wheel = TimerWheel(liveness_tick)
        #: server flows per Object ID (a drained replica leaves when its count reaches 0)
        self._server_flows: Counter[bytes] = Counter()
        #: server streams in their handshake per Object ID; above ``retry_above`` a SYN must
        #: carry a retry token, above ``half_open_limit`` it is dropped (§4.2.8)
        self._half_open: Counter[bytes] = Counter()
        self.retry_above = retry_above
        self.half_open_limit = half_open_limit
        #: NOT_HERE answers (§4.2.9) go to a source nothing verified: at most
        #: ``not_here_rate`` a second, ``not_here_burst`` at once; a SYN beyond that is dropped
        #: (counted ``not-here-rate-limited``) and its client's retransmission timer resends it
        self.not_here_budget = TokenBucket(not_here_rate, not_here_burst)
        #: liveness PROBEs sent and not answered yet, by bundle id (``keepalive.py``)
        self._awaiting: dict[int, PendingBundle] = {}
        self._bundle_seq = 0
        #: peer hosts watched for held streams, by (DC ID, Host ID) (``keepalive.py``)
        self._watches: dict[tuple[int, int], PeerWatch] = {}
        #: the key of this host's retry tokens (``streams.py``), drawn when first needed
        self._token_key: bytes | None = None
        #: the metrics' sums over the flows, kept as flows come, go and are pumped
        self._totals = FlowTotals()
        self._touched = self._totals.touched
        #: the pause of flows whose peer changed, by what changed (host, dc)
        self.pauses = {change: Histogram(FLOW_PAUSE, change=change) for change in ("host", "dc")}
        #: migrated-away flows: socket id -> (Flow ID, new DC ID, new Host ID, expiry)
        self._forward: dict[int, tuple[int, int, int, float]] = {}
        #: packets that arrived (forwarded) before the flow they belong to was imported
        self._parked: dict[int, list[tuple[bytes, float]]] = {}
        #: objects that migrated away: Object ID -> (new DC ID, new Host ID, expiry)
        self._forward_objects: dict[bytes, tuple[int, int, float]] = {}
        self._heartbeat_seq = 0
        #: the largest stream ``mss`` the runtime's link to the gateway allows (0: unknown);
        #: every stream's path-MTU search goes up to it (docs/protocol.md §4.2.6)
        self._mss_ceiling = 0

    @property
    def registered(self) -> bool:
        return self.host_id != 0

    @property
    def ready(self) -> bool:
        return self.registered

    # -- flows -----------------------------------------------------------------------------

    def open_flow(
        self, obj: ObjectId, now: float, *, proto: Proto = Proto.DATAGRAM, trace: bool = False
    ) -> Flow:
        """Start a client flow to ``obj`` with a fresh Flow ID and nonce.

        Raises:
            UsageError: the host is not registered with the controller yet.
        """
        if not self.host_id:  # ``registered`` inline
            raise UsageError(f"host {self.name} is not registered yet")
        flow = Flow(
            socket_id=self._allocate_socket(),
            flow=new_flow_id(self._rng),
            nonce=new_nonce(self._rng),
            obj=obj.raw,
            proto=proto,
            role=Role.CLIENT,
            trace=trace,
            last_active=now,
        )
        self._add_flow(flow)
        return flow

    def _flow(self, socket_id: int) -> Flow:
        flow = self.flows.get(socket_id)
        if flow is None:
            raise UsageError(f"no flow with socket {socket_id} on host {self.name}")
        return flow

    def _add_flow(self, flow: Flow) -> None:
        self.flows[flow.socket_id] = flow
        self._touched[flow.socket_id] = flow  # counted at the next snapshot (stats.py)
        if flow.proto is Proto.DATAGRAM:
            self._datagrams[flow.socket_id] = flow
        if flow.role is Role.SERVER:
            # (``get``: a Counter's missing key is a Python call, ``__missing__``)
            self._server_flows[flow.obj] = self._server_flows.get(flow.obj, 0) + 1

    def _allocate_socket(self) -> int:
        while True:
            socket_id = self._next_socket
            self._next_socket = self._next_socket % 0xFFFFFFFF + 1
            if socket_id not in self.flows:
                return socket_id

    def _forget(self, flow: Flow, reason: str, *, notify: bool = True) -> None:
        if self.flows.get(flow.socket_id) is not flow:
            return  # forgotten already
        del self.flows[flow.socket_id]
        self._datagrams.pop(flow.socket_id, None)
        held_stream = self._streams.pop(flow.socket_id, None) is not None
        if held_stream:
            self._timers.arm(flow.socket_id, None)
            self._wheel.arm(flow.socket_id, None)
        self._totals.closed(flow, ended=held_stream and reason != "exported")
        self._by_flow.pop((flow.flow, flow.peer_host), None)
        self._settle_half_open(flow)
        if notify:
            self._events.append(FlowClosed(flow.socket_id, reason))
        if flow.role is Role.SERVER:
            self._server_flows[flow.obj] -= 1
            if self._server_flows[flow.obj] <= 0:
                del self._server_flows[flow.obj]
                if reason != "exported":
                    self._check_drained(flow.obj)

    def _settle_half_open(self, flow: Flow) -> None:
        """The flow left its handshake (established, or gone): it no longer counts as half-open."""
        if flow.half_open:
            flow.half_open = False
            self._half_open[flow.obj] -= 1
            if self._half_open[flow.obj] <= 0:
                del self._half_open[flow.obj]

    def _check_drained(self, obj: bytes) -> None:
        """Withdraw ``obj``'s replica if it drains and its last server flow ended (§5.2). O(1)."""
        listener = self.listeners.get(obj)
        if listener is not None and listener.draining and not self._server_flows.get(obj):
            del self.listeners[obj]
            self._control_out.append(control.DrainDone(obj.hex()))
            self._events.append(DrainCompleted(obj))

    # -- sending -----------------------------------------------------------------------------

    def _emit(self, flow: Flow, proto: Proto, segment: bytes, now: float) -> None:
        # A server's packets say so: the network must never re-resolve them on the Object
        # ID, which finds replicas, not the client (docs/protocol.md §3.3).
        flags = _TO_CLIENT if flow.role == Role.SERVER else 0
        if not flow.trace or flow.packets_sent:
            # Every packet of a flow has the same header until a locator changes: encode it
            # once (a trace record is made for the first packet only, below). The header is
            # its own cache key: its locators are compared in place, so an idle flow keeps
            # only the header's bytes.
            cached = flow.header
            if (
                cached is None
                or cached[1] != proto
                or not cached.startswith(
                    _LOCATORS.pack(flow.peer_dc, flow.peer_host, flow.peer_socket, self.dc_id, self.host_id),
                    _DST_OFFSET,
                )
            ):
                flow.header = cached = wire_header.HEADER.pack(
                    wire_header.VERSION,
                    proto,
                    flags,
                    wire_header.MAX_TTL,
                    flow.flow,
                    flow.obj,
                    flow.peer_dc,
                    flow.peer_host,
                    flow.peer_socket,
                    self.dc_id,
                    self.host_id,
                    flow.socket_id,
                )
            flow.packets_sent += 1
            flow.last_active = now
            self._out.append((self.gateway, cached + segment))
            return
        h = Header(
            proto=proto,
            flow=flow.flow,
            obj=flow.obj,
            dst_dc=flow.peer_dc,
            dst_host=flow.peer_host,
            dst_socket=flow.peer_socket,
            src_dc=self.dc_id,
            src_host=self.host_id,
            src_socket=flow.socket_id,
            flags=Flags(flags | _TRACE),
        )
        self.trace.append(
            TraceHop(
                self.name,
                self.role,
                flow.flow,
                flow.obj,
                flow.peer_dc,
                flow.peer_host,
                flow.peer_socket,
                h.ttl,
                now,
            )
        )
        flow.packets_sent += 1
        flow.last_active = now
        self._out.append((self.gateway, wire_header.encode(h, segment)))

    def _fit_path(self, transport: StreamConnection, now: float) -> StreamConnection:
        """A stream transport restored here searches the path MTU up to what the gateway link
        allows (a new one is given the ceiling when it is made: ``mss_ceiling``)."""
        if self._mss_ceiling:
            transport.set_mss_ceiling(self._mss_ceiling, now)
        return transport

    def _pump(self, flow: Flow, now: float, *, segments: bool = True) -> bool:
        """Send what a stream transport queued, surface its events, re-arm its timers; with
        ``segments=False`` only surface its events (``_pump_dirty``). False if the flow is
        gone (it terminated: forgotten).

        The transport's deadlines are compared with the ones on file, so the timer heap and
        wheel only change when a deadline did (``timers.py``).
        """
        transport = flow.transport
        assert transport is not None
        self._touched[flow.socket_id] = flow  # its counters and state are recounted (stats.py)
        if segments:
            for segment in transport.segments_to_send(now):
                self._emit(flow, Proto.STREAM, segment, now)
        terminated = False
        for event in transport.pop_events():
            self._events.append(StreamEventFor(flow.socket_id, event))
            if isinstance(event, ConnectionTerminated):
                terminated = True
            elif flow.half_open and isinstance(event, Connected | Resumed):
                self._settle_half_open(flow)
        if terminated:
            self._forget(flow, "terminated", notify=False)
            return False
        if self._streams.get(flow.socket_id) is not flow:
            return False
        if segments:
            exact, coarse = transport.deadlines()
            self._timers.arm(flow.socket_id, exact)
            self._wheel.arm(flow.socket_id, coarse)
        return True

    def _pump_later(self, socket_id: int, now: float) -> None:
        """Pump a stream with the others when the runtime next takes events or datagrams: the
        application's reads and writes in one turn of its loop leave in one batch."""
        self._dirty[socket_id] = self.flows[socket_id]
        self._last_now = now

    def _pump_dirty(self, *, for_events: bool = False) -> None:
        """Pump the streams touched since the last time. ``for_events``: the runtime asks for
        events before it asks for datagrams (``next_event``), so a server stream whose first
        SYN-ACK has not left yet only surfaces its events now and stays dirty: the
        application's answer to them, written before the datagrams are taken, rides in that
        SYN-ACK (docs/protocol.md §4.2.7)."""
        dirty, self._dirty = self._dirty, {}
        if self._answering and not for_events:
            dirty.update(self._answering)
            self._answering = {}
        for socket_id, flow in dirty.items():
            transport = flow.transport
            if self.flows.get(socket_id) is flow and transport is not None:
                # (``half_open`` first: only a server stream in its handshake can be answering)
                if for_events and flow.half_open and transport.answer_pending:
                    if self._pump(flow, self._last_now, segments=False):
                        self._answering[socket_id] = flow
                else:
                    self._pump(flow, self._last_now)
