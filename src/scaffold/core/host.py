"""The end-host SCAFFOLD stack (docs/protocol.md §3.4 and §4).

Sockets bind on Object IDs (listeners) and flows are demultiplexed, in this order, on:

1. the destination Socket ID, checked against the Flow ID (an established flow);
2. (Flow ID, source Host ID) -- later packets of a flow whose first reply has not arrived
   yet still carry Socket ID 0 and reach this host through the object switches again;
3. the destination Object ID -- a first packet for a listener starts a new flow.

Every reply carries this host's full source locator, so the peer's later packets are fully
refined. A flow's nonce, chosen by the initiator, must match on every packet.
"""

from __future__ import annotations

import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

from ..errors import MalformedPacket, UsageError
from ..ids import ObjectId, new_flow_id, new_nonce
from ..transport import ConnectionTerminated, StreamConnection, StreamEvent, StreamOptions, StreamState
from ..wire import control
from ..wire import datagram as wire_datagram
from ..wire import flow_state as wire_flow_state
from ..wire import header as wire_header
from ..wire import signal as wire_signal
from ..wire import stream as wire_stream
from ..wire.control import ControlMessage
from ..wire.datagram import DatagramSegment, DatagramType
from ..wire.header import DST_ROUTE, DST_ROUTE_OFFSET, HEADER_LEN, Flags, Header, Proto
from .events import Datagram, Packet, TraceHop

#: where the flow nonce sits in each transport segment (docs/protocol.md §4)
_NONCE = struct.Struct("!Q")
_NONCE_OFFSET = {Proto.DATAGRAM: 4, Proto.STREAM: 8}
_MAX_PARKED = 1024
#: stream states in which a flow can move to another host
_MIGRATABLE = frozenset(
    {StreamState.ESTABLISHED, StreamState.FIN_WAIT, StreamState.CLOSE_WAIT, StreamState.CLOSING}
)
#: how long after a peer moved its old locator's packets are taken as stragglers (seconds)
STRAGGLER_WINDOW = 0.5


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


__all__ = [
    "DatagramReceived",
    "DrainCompleted",
    "Flow",
    "FlowAccepted",
    "FlowClosed",
    "FlowUnreachable",
    "FlowsMigrated",
    "HostRelocated",
    "StreamEventFor",
    "HostEvent",
    "HostRegistered",
    "HostStack",
    "Listener",
    "ObjectNotFoundEvent",
]


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostRegistered:
    host_id: int
    dc_id: int


@dataclass(frozen=True, slots=True)
class FlowAccepted:
    """A first packet for a listener started a new (server-side) flow."""

    socket_id: int
    obj: bytes
    flow: int
    #: the flow was taken over mid-stream (its server died or it migrated here)
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    socket_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ObjectNotFoundEvent:
    """An object switch answered that nobody serves the flow's object."""

    socket_id: int
    obj: bytes


@dataclass(frozen=True, slots=True)
class FlowUnreachable:
    """A switch had no route to the flow's destination DC."""

    socket_id: int


@dataclass(frozen=True, slots=True)
class FlowClosed:
    socket_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class FlowsMigrated:
    """These flows of ``obj`` left this host for ``to_host`` (object migration): drop
    whatever the application held for them."""

    obj: bytes
    socket_ids: tuple[int, ...]
    to_host: str


@dataclass(frozen=True, slots=True)
class DrainCompleted:
    """The last flow of drained ``obj`` ended; the replica is withdrawn."""

    obj: bytes


@dataclass(frozen=True, slots=True)
class HostRelocated:
    """This host is attached to ``gateway`` in DC ``dc_id`` now (``address``: the
    gateway's UDP address, when the controller knows it)."""

    gateway: str
    dc_id: int
    address: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class StreamEventFor:
    """An event of the stream transport of flow ``socket_id`` (see ``scaffold.transport``)."""

    socket_id: int
    event: StreamEvent


HostEvent = (
    HostRegistered
    | FlowAccepted
    | DatagramReceived
    | ObjectNotFoundEvent
    | FlowUnreachable
    | FlowClosed
    | StreamEventFor
    | FlowsMigrated
    | DrainCompleted
    | HostRelocated
)


# -- state ----------------------------------------------------------------------------------


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(slots=True)
class Listener:
    obj: bytes
    name: str
    weight: int
    #: any replica can continue a stream given its offsets (docs/protocol.md §5.1)
    resumable: bool = False
    #: no new flows come; the replica leaves when its flows have ended (§5.2)
    draining: bool = False


@dataclass(slots=True)
class Flow:
    """One flow's locators and counters (the transport state lives beside it)."""

    socket_id: int
    flow: int
    nonce: int
    obj: bytes
    proto: Proto
    role: Role
    peer_dc: int = 0
    peer_host: int = 0
    peer_socket: int = 0
    trace: bool = False
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_active: float = 0.0
    #: every Host ID that answered this flow (more than one only after a failover)
    served_by: list[int] = field(default_factory=list)
    #: the reliable stream state machine of a stream flow
    transport: StreamConnection | None = None
    #: where the peer was before its latest move, and when it moved
    previous_peer: tuple[int, int, int] = (0, 0, 0)
    peer_changed_at: float = 0.0


class HostStack:
    """Sans-IO host stack: control records, datagrams and ``now`` in; datagrams, records,
    timers and events out."""

    role = "host"

    def __init__(
        self,
        name: str,
        gateway: str,
        rng: random.Random | None = None,
        *,
        idle_timeout: float = 120.0,
        stream_options: StreamOptions | None = None,
    ) -> None:
        self.name = name
        self.gateway = gateway
        self.host_id = 0
        self.dc_id = 0
        self.heartbeat_interval = 0.0
        self.idle_timeout = idle_timeout
        if stream_options is not None and not isinstance(stream_options, StreamOptions):
            raise UsageError(f"stream_options must be a StreamOptions, not {type(stream_options).__name__}")
        #: the options of every ``StreamConnection`` this host creates (None: the defaults)
        self.stream_options = stream_options
        self.listeners: dict[bytes, Listener] = {}
        self.flows: dict[int, Flow] = {}
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.trace: list[TraceHop] = []
        self._rng = rng if rng is not None else random.SystemRandom()
        self._by_flow: dict[tuple[int, int], int] = {}
        #: the stream flows (socket id -> flow), whose transports have timers
        self._streams: dict[int, Flow] = {}
        #: stream flows that received segments since they were last pumped
        self._dirty: dict[int, Flow] = {}
        self._last_now = 0.0
        self._next_socket = 1
        self._events: deque[HostEvent] = deque()
        self._out: list[Datagram] = []
        self._control_out: list[ControlMessage] = []
        #: migrated-away flows: socket id -> (Flow ID, new DC ID, new Host ID, expiry)
        self._forward: dict[int, tuple[int, int, int, float]] = {}
        #: packets that arrived (forwarded) before the flow they belong to was imported
        self._parked: dict[int, list[tuple[bytes, float]]] = {}
        #: objects that migrated away: Object ID -> (new DC ID, new Host ID, expiry)
        self._forward_objects: dict[bytes, tuple[int, int, float]] = {}
        self._heartbeat_seq = 0
        self._next_heartbeat: float | None = None
        self._next_sweep: float | None = None

    # -- control plane -------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self.host_id != 0

    def hello(self, address: tuple[str, int] | None = None) -> None:
        """Queue the ``Hello`` that registers this host (and re-sends its bindings).

        ``address`` is this host's UDP address, which its gateway learns from the controller.
        """
        self._control_out.append(
            control.Hello(node=self.name, role=self.role, gateway=self.gateway, address=address)
        )
        for listener in self.listeners.values():
            self._control_out.append(
                control.Bind(obj=listener.obj.hex(), weight=listener.weight, name=listener.name)
            )

    def receive_control(self, message: ControlMessage, now: float) -> None:
        if isinstance(message, control.Welcome):
            self.host_id = message.host_id
            self.dc_id = message.dc_id
            self.heartbeat_interval = message.heartbeat_interval
            self._next_heartbeat = now + self.heartbeat_interval
            self._next_sweep = now + self.idle_timeout
            self._events.append(HostRegistered(self.host_id, self.dc_id))
        elif isinstance(message, control.Drain):
            self._drain(message, now)
        elif isinstance(message, control.MigrateOut):
            self._migrate_out(message, now)
        elif isinstance(message, control.MigrateIn):
            self._migrate_in(message, now)
        elif isinstance(message, control.Relocate):
            self._relocate(message, now)
        else:
            self.drops["unexpected-control"] += 1

    # -- churn (docs/protocol.md §5) -------------------------------------------------------

    def _drain(self, message: control.Drain, now: float) -> None:
        listener = self.listeners.get(_hex_bytes(message.obj))
        if listener is None:
            self.drops["drain-unknown-object"] += 1
            return
        listener.draining = True
        self._check_drained()

    def _check_drained(self) -> None:
        for raw, listener in list(self.listeners.items()):
            if listener.draining and not any(
                f.obj == raw and f.role == Role.SERVER for f in self.flows.values()
            ):
                del self.listeners[raw]
                self._control_out.append(control.DrainDone(raw.hex()))
                self._events.append(DrainCompleted(raw))

    def _migrate_out(self, message: control.MigrateOut, now: float) -> None:
        raw = _hex_bytes(message.obj)
        listener = self.listeners.pop(raw, None)
        if listener is None:
            self.drops["migrate-unknown-object"] += 1
            return
        # Flows still in their handshake stay and finish here: a migrated half-open flow
        # would answer the client's SYN from a second host, which looks like a duplicate.
        moving = [
            f
            for f in self.flows.values()
            if f.obj == raw
            and f.role == Role.SERVER
            and (f.transport is None or f.transport.state in _MIGRATABLE)
        ]
        states = []
        for flow in moving:
            states.append(self.export_flow(flow.socket_id, now))
            # Packets still on their way here are passed on to the new host (§5.4).
            self._forward[flow.socket_id] = (flow.flow, message.to_dc_id, message.to_host_id, now + 30.0)
        # So are first packets of new flows resolved here before the tables changed.
        self._forward_objects[raw] = (message.to_dc_id, message.to_host_id, now + 5.0)
        self._control_out.append(
            control.FlowsOut(
                obj=message.obj,
                to_host=message.to_host,
                name=listener.name,
                weight=listener.weight,
                resumable=listener.resumable,
                states=states,
            )
        )
        self.counters["flows-migrated-out"] += len(states)
        self._events.append(FlowsMigrated(raw, tuple(f.socket_id for f in moving), message.to_host))

    def _migrate_in(self, message: control.MigrateIn, now: float) -> None:
        raw = _hex_bytes(message.obj)
        if raw not in self.listeners:
            self.listeners[raw] = Listener(raw, message.name, message.weight, message.resumable)
        for state in message.states:
            try:
                flow = self.import_flow(state, now)
            except (MalformedPacket, UsageError):
                self.drops["bad-migrated-flow"] += 1
                continue
            self.counters["flows-migrated-in"] += 1
            self._events.append(FlowAccepted(flow.socket_id, flow.obj, flow.flow, resumed=True))
        # Then whatever was forwarded here ahead of the migration: packets of the imported
        # flows, and first packets of new flows for the object.
        parked, self._parked = self._parked, {}
        for packets in parked.values():
            for data, expiry in packets:
                if expiry >= now:
                    self.receive_datagram(data, self.gateway, now)

    def _relocate(self, message: control.Relocate, now: float) -> None:
        self.gateway, self.dc_id = message.gateway, message.dc_id
        self._events.append(HostRelocated(message.gateway, message.dc_id, message.gateway_address))
        if not message.announce:
            return
        # Tell every peer in-band: a packet from the new locator carrying the flow's nonce.
        for flow in list(self.flows.values()):
            if not flow.nonce:
                continue
            if flow.transport is not None:
                flow.transport.probe(now)
                self._pump(flow, now)
            else:
                segment = wire_datagram.encode(DatagramSegment(DatagramType.MOVED, flow.nonce))
                self._emit(flow, Proto.DATAGRAM, segment, now)
            self.counters["moves-announced"] += 1

    def control_to_send(self) -> list[ControlMessage]:
        out, self._control_out = self._control_out, []
        return out

    # -- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        timers = [t for t in (self._next_heartbeat, self._next_sweep) if t is not None]
        for flow in self._streams.values():
            assert flow.transport is not None
            at = flow.transport.get_timer()
            if at is not None:
                timers.append(at)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._heartbeat_seq += 1
            self._control_out.append(control.Heartbeat(node=self.name, seq=self._heartbeat_seq))
            self._next_heartbeat = now + self.heartbeat_interval
        if self._next_sweep is not None and now >= self._next_sweep:
            self._next_sweep = now + self.idle_timeout
            idle = [
                f
                for f in self.flows.values()
                if f.transport is None and now - f.last_active > self.idle_timeout
            ]
            for flow in idle:
                self._forget(flow, "idle")
            self._forward = {k: v for k, v in self._forward.items() if v[3] > now}
            self._forward_objects = {k: v for k, v in self._forward_objects.items() if v[2] > now}
            self._parked = {k: [p for p in v if p[1] > now] for k, v in self._parked.items()}
            self._parked = {k: v for k, v in self._parked.items() if v}
        for flow in list(self._streams.values()):
            assert flow.transport is not None
            at = flow.transport.get_timer()
            if at is not None and at <= now:
                flow.transport.handle_timer(now)
                self._pump(flow, now)

    # -- socket API (what the runtime's sockets call) ------------------------------------

    def bind(self, obj: ObjectId, weight: int = 1, name: str = "", *, resumable: bool = False) -> Listener:
        """Listen on ``obj`` and register this host as a replica with ``weight``.

        Raises:
            UsageError: the object is already bound here, or the weight is not positive.
        """
        if obj.raw in self.listeners:
            raise UsageError(f"{name or obj} is already bound on host {self.name}")
        if weight <= 0:
            raise UsageError(f"weight must be positive, got {weight}")
        listener = Listener(obj.raw, name, weight, resumable)
        self.listeners[obj.raw] = listener
        self._control_out.append(control.Bind(obj=obj.raw.hex(), weight=weight, name=name))
        return listener

    def unbind(self, obj: ObjectId) -> None:
        """Stop listening on ``obj`` and withdraw the replica (established flows go on)."""
        if self.listeners.pop(obj.raw, None) is None:
            raise UsageError(f"{obj} is not bound on host {self.name}")
        self._control_out.append(control.Unbind(obj=obj.raw.hex()))

    def open_flow(
        self, obj: ObjectId, now: float, *, proto: Proto = Proto.DATAGRAM, trace: bool = False
    ) -> Flow:
        """Start a client flow to ``obj`` with a fresh Flow ID and nonce.

        Raises:
            UsageError: the host is not registered with the controller yet.
        """
        if not self.registered:
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
        self.flows[flow.socket_id] = flow
        return flow

    def send_datagram(self, socket_id: int, data: bytes, now: float) -> None:
        """Send one datagram on a flow.

        Raises:
            UsageError: no such flow, or it is not a datagram flow.
        """
        flow = self._flow(socket_id)
        if flow.proto != Proto.DATAGRAM:
            raise UsageError(f"socket {socket_id} is not a datagram flow")
        segment = wire_datagram.encode(DatagramSegment(DatagramType.DATA, flow.nonce, data))
        self._emit(flow, Proto.DATAGRAM, segment, now)
        flow.bytes_sent += len(data)

    def close_flow(self, socket_id: int, now: float) -> None:
        """Close a flow: tell the peer (datagram CLOSE) and forget it."""
        flow = self._flow(socket_id)
        if flow.proto == Proto.DATAGRAM and (flow.peer_host or flow.role == Role.CLIENT):
            segment = wire_datagram.encode(DatagramSegment(DatagramType.CLOSE, flow.nonce))
            self._emit(flow, Proto.DATAGRAM, segment, now)
        self._forget(flow, "closed", notify=False)

    def open_stream(self, obj: ObjectId, now: float, *, trace: bool = False) -> Flow:
        """Start a reliable stream flow to ``obj`` (a SYN goes out at once).

        Raises:
            UsageError: the host is not registered yet.
        """
        flow = self.open_flow(obj, now, proto=Proto.STREAM, trace=trace)
        flow.transport = StreamConnection("client", flow.nonce, now, self.stream_options)
        self._streams[flow.socket_id] = flow
        flow.transport.connect(now)
        self._pump(flow, now)
        return flow

    def stream(self, socket_id: int) -> StreamConnection:
        """The transport of a stream flow.

        Raises:
            UsageError: no such flow, or not a stream flow.
        """
        flow = self._flow(socket_id)
        if flow.transport is None:
            raise UsageError(f"socket {socket_id} is not a stream flow")
        return flow.transport

    def stream_send(self, socket_id: int, data: bytes, now: float, *, force: bool = False) -> int:
        """Queue ``data`` on a stream; returns the bytes the send buffer took (all of them
        with ``force``).

        Raises:
            UsageError: no such stream, or it was shut down.
        """
        taken = self.stream(socket_id).send(data, force=force)
        self._pump(self.flows[socket_id], now)
        return taken

    def stream_read(self, socket_id: int, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` received bytes (reading opens the peer's window).

        Raises:
            UsageError: no such stream, or it was closed.
        """
        data = self.stream(socket_id).read(max_bytes)
        flow = self.flows[socket_id]
        flow.bytes_received += len(data)
        self._pump(flow, now)
        return data

    def stream_shutdown(self, socket_id: int, now: float) -> None:
        """Half-close a stream (FIN after the buffered data)."""
        self.stream(socket_id).shutdown(now)
        self._pump(self.flows[socket_id], now)

    def stream_close(self, socket_id: int, now: float) -> None:
        """Close a stream in both directions."""
        self.stream(socket_id).close(now)
        self._pump(self.flows[socket_id], now)

    def stream_abort(self, socket_id: int, now: float) -> None:
        """Reset a stream (RST) and forget it."""
        self.stream(socket_id).abort(now)
        self._pump(self.flows[socket_id], now)

    def export_flow(self, socket_id: int, now: float, *, remove: bool = True) -> bytes:
        """Serialize a flow's complete state (locators, counters, transport) to move it.

        With ``remove`` the flow leaves this host silently (no FIN, no RST): the host that
        imports it takes over.

        Raises:
            UsageError: no such flow.
        """
        flow = self._flow(socket_id)
        if flow.transport is not None:
            self._pump(flow, now)  # no event may be pending in an exported transport
        state = wire_flow_state.FlowState(
            socket_id=flow.socket_id,
            flow=flow.flow,
            nonce=flow.nonce,
            obj=flow.obj,
            proto=int(flow.proto),
            role=flow.role.value,
            peer_dc=flow.peer_dc,
            peer_host=flow.peer_host,
            peer_socket=flow.peer_socket,
            served_by=list(flow.served_by),
            packets_sent=flow.packets_sent,
            packets_received=flow.packets_received,
            bytes_sent=flow.bytes_sent,
            bytes_received=flow.bytes_received,
            transport=flow.transport.export_state() if flow.transport is not None else None,
        )
        if remove:
            self._forget(flow, "exported", notify=False)
        return wire_flow_state.encode(state)

    def import_flow(self, data: bytes, now: float) -> Flow:
        """Restore a flow exported by ``export_flow`` (on this or another host).

        It keeps its Socket ID when free, so the peer's refined packets still reach it; the
        peer learns the new host (and Socket ID) from the source locator of the next packet.

        Raises:
            MalformedPacket: ``data`` is not valid flow state.
            UsageError: the host is not registered.
        """
        state = wire_flow_state.decode(data)
        if not self.registered:
            raise UsageError(f"host {self.name} is not registered yet")
        if not 0 < state.socket_id <= 0xFFFFFFFF:
            raise MalformedPacket("bad-flow-state", f"socket {state.socket_id}")
        try:
            proto, role = Proto(state.proto), Role(state.role)
        except ValueError as exc:
            raise MalformedPacket("bad-flow-state", str(exc)) from None
        # Keep the Socket ID if it is free here (the peer's packets name it); else take
        # another: the peer learns it from our next packet (§5.4).
        socket_id = state.socket_id if state.socket_id not in self.flows else self._allocate_socket()
        flow = Flow(
            socket_id=socket_id,
            flow=state.flow,
            nonce=state.nonce,
            obj=state.obj,
            proto=proto,
            role=role,
            peer_dc=state.peer_dc,
            peer_host=state.peer_host,
            peer_socket=state.peer_socket,
            packets_sent=state.packets_sent,
            packets_received=state.packets_received,
            bytes_sent=state.bytes_sent,
            bytes_received=state.bytes_received,
            last_active=now,
            served_by=list(state.served_by),
        )
        if state.transport is not None:
            flow.transport = StreamConnection.from_state(state.transport, now)
        self.flows[flow.socket_id] = flow
        if role == Role.SERVER:
            self._by_flow[(flow.flow, flow.peer_host)] = flow.socket_id
        if flow.transport is not None:
            self._streams[flow.socket_id] = flow
            self._pump(flow, now)
        return flow

    def next_event(self) -> HostEvent | None:
        if self._dirty:
            self._pump_dirty()
        return self._events.popleft() if self._events else None

    def _pump_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for socket_id, flow in dirty.items():
            if self.flows.get(socket_id) is flow and flow.transport is not None:
                self._pump(flow, self._last_now)

    # -- data plane ----------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        if self._dirty:
            self._pump_dirty()
        out, self._out = self._out, []
        return out

    def receive_datagram(self, data: Packet, port: str, now: float) -> None:
        """Demultiplex one packet from the gateway. Never raises."""
        try:
            h = wire_header.parse(bytes(data))
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        if h.dst_host != self.host_id or not self.registered:
            self.drops["not-for-this-host"] += 1
            return
        body = bytes(data[HEADER_LEN:])
        if h.proto == Proto.SIGNAL:
            self._receive_signal(h, body, now)
            return
        flow = self._demux(h, data, now)
        if flow is None:
            return
        if h.flags & Flags.TRACE:
            self.trace.append(
                TraceHop(
                    self.name, self.role, h.flow, h.obj, h.dst_dc, h.dst_host, flow.socket_id, h.ttl, now
                )
            )
        if h.proto != flow.proto:
            self.drops["wrong-proto"] += 1
            return
        if flow.nonce:
            # Only a packet that proves it knows the flow's nonce may change where the flow's
            # peer is (a failover, a migration, a move): anything else is a forgery (§5.4).
            offset = _NONCE_OFFSET[h.proto]
            if len(body) < offset + 8 or _NONCE.unpack_from(body, offset)[0] != flow.nonce:
                moved = (h.src_dc, h.src_host) != (flow.peer_dc, flow.peer_host)
                self.drops["forged-move" if moved and flow.peer_host else "bad-nonce"] += 1
                return
            if (
                h.proto == Proto.STREAM
                and body[0] == wire_stream.StreamType.SYN_ACK
                and flow.peer_host
                and h.src_host != flow.peer_host
            ):
                # A second replica answered our handshake (our SYN was re-resolved while the
                # tables changed): we already have a server, so that one is told to let go.
                self.drops["duplicate-handshake"] += 1
                self._reset_peer(flow, h, body)
                return
            self._learn_peer(flow, h, now)
        if h.proto == Proto.DATAGRAM:
            self._receive_datagram_segment(flow, h, body, now)
        else:
            self._receive_stream_segment(flow, h, body, now)

    def _forward_moved(self, h: Header, data: Packet, now: float) -> bool:
        """Pass on to its new host a packet of a flow that migrated away, or a first packet
        for a replica that did (§5.4)."""
        if h.dst_socket:
            pointer = self._forward.get(h.dst_socket)
            target = pointer[1:] if pointer is not None and pointer[0] == h.flow else None
        else:
            target = self._forward_objects.get(h.obj)
        if target is None or target[2] < now:
            return False
        buf = bytearray(data)
        DST_ROUTE.pack_into(buf, DST_ROUTE_OFFSET, target[0], target[1])
        buf[2] |= Flags.REDIRECTED
        self.counters["forwarded-after-migration"] += 1
        self._out.append((self.gateway, buf))
        return True

    def _park(self, h: Header, data: Packet, now: float) -> bool:
        """Hold a forwarded packet whose flow is still being imported (bounded, brief)."""
        if not h.flags & Flags.REDIRECTED or sum(map(len, self._parked.values())) >= _MAX_PARKED:
            return False
        self._parked.setdefault(h.flow, []).append((bytes(data), now + 2.0))
        self.counters["parked-until-import"] += 1
        return True

    def _learn_peer(self, flow: Flow, h: Header, now: float) -> None:
        """The peer's current locator is the source of its latest authentic packet -- except
        a straggler from the locator it just left (sent before a migration or a move)."""
        source = (h.src_dc, h.src_host, h.src_socket)
        if source == (flow.peer_dc, flow.peer_host, flow.peer_socket):
            return
        if source == flow.previous_peer and now - flow.peer_changed_at < STRAGGLER_WINDOW:
            self.counters["straggler-from-previous-peer"] += 1
            return
        flow.previous_peer = (flow.peer_dc, flow.peer_host, flow.peer_socket)
        flow.peer_changed_at = now
        if h.src_host != flow.peer_host:
            if flow.role == Role.CLIENT:
                if flow.peer_host:
                    self.counters["flow-redirected"] += 1  # another replica took the flow over
                flow.served_by.append(h.src_host)
            else:
                self.counters["peer-moved"] += 1
                self._by_flow.pop((flow.flow, flow.peer_host), None)
                self._by_flow[(flow.flow, h.src_host)] = flow.socket_id
        elif h.src_dc != flow.peer_dc and flow.peer_dc:
            self.counters["peer-relocated"] += 1  # same host, another datacenter
        flow.peer_dc, flow.peer_host, flow.peer_socket = h.src_dc, h.src_host, h.src_socket

    def _demux(self, h: Header, data: Packet, now: float) -> Flow | None:
        if h.dst_socket:
            flow = self.flows.get(h.dst_socket)
            if flow is None or flow.flow != h.flow:
                # A flow that migrated here under another Socket ID (its peer learns the
                # new one from our next packet), one that migrated away, or one about to
                # arrive with a migration.
                socket_id = self._by_flow.get((h.flow, h.src_host))
                if socket_id is not None:
                    return self.flows[socket_id]
                if self._forward_moved(h, data, now) or self._park(h, data, now):
                    return None
                self.drops["unknown-socket" if flow is None else "wrong-flow"] += 1
                return None
        else:
            socket_id = self._by_flow.get((h.flow, h.src_host))
            if socket_id is not None:
                flow = self.flows[socket_id]
            else:
                listener = self.listeners.get(h.obj)
                if listener is None:
                    # A first packet for an object that just migrated away goes after it; one
                    # that arrives (forwarded) before the replica it is for lands is parked.
                    if self._forward_moved(h, data, now) or self._park(h, data, now):
                        return None
                    self.drops["no-listener"] += 1
                    return None
                flow = self._accept(listener, h, now)
                if flow is None:
                    return None
        return flow

    def _accept(self, listener: Listener, h: Header, now: float) -> Flow | None:
        if not h.src_dc or not h.src_host:
            self.drops["no-source"] += 1
            return None
        flow = Flow(
            socket_id=self._allocate_socket(),
            flow=h.flow,
            nonce=0,  # learned from the first segment
            obj=h.obj,
            proto=h.proto,
            role=Role.SERVER,
            peer_dc=h.src_dc,
            peer_host=h.src_host,
            peer_socket=h.src_socket,
            last_active=now,
        )
        self.flows[flow.socket_id] = flow
        self._by_flow[(flow.flow, flow.peer_host)] = flow.socket_id
        return flow

    def _receive_datagram_segment(self, flow: Flow, h: Header, body: bytes, now: float) -> None:
        try:
            segment = wire_datagram.parse(body)
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        if flow.nonce == 0 and flow.role == Role.SERVER:
            flow.nonce = segment.nonce  # the first packet of the flow carries the nonce
            self._events.append(FlowAccepted(flow.socket_id, flow.obj, flow.flow))
        flow.packets_received += 1
        flow.last_active = now
        if segment.type == DatagramType.MOVED:
            return  # its only message was the new source locator, learned above
        if segment.type == DatagramType.CLOSE:
            self._forget(flow, "peer-closed")
            return
        flow.bytes_received += len(segment.payload)
        self._events.append(DatagramReceived(flow.socket_id, segment.payload))

    def _receive_stream_segment(self, flow: Flow, h: Header, body: bytes, now: float) -> None:
        if flow.transport is None:
            # A new server-side flow: only a SYN may open it (docs/protocol.md §4.2.3).
            try:
                segment = wire_stream.parse(body)
            except MalformedPacket as exc:
                self._forget(flow, exc.reason, notify=False)
                self.drops[exc.reason] += 1
                return
            listener = self.listeners.get(flow.obj)
            if segment.type == wire_stream.StreamType.SYN:
                flow.transport = StreamConnection("server", segment.nonce, now, self.stream_options)
                resumed = False
            elif listener is not None and listener.resumable and segment.type != wire_stream.StreamType.RST:
                # A mid-flow segment of a flow whose server is gone: this replica takes it
                # over and learns the stream offsets from the client (RESUME, §5.1).
                flow.transport = StreamConnection.resume(segment.nonce, now, options=self.stream_options)
                self.counters["flow-resumed"] += 1
                resumed = True
            else:
                # A mid-flow segment of a flow this host never had and cannot resume:
                # refuse it at once, as TCP does for a segment to no socket (§5.1).
                self._forget(flow, "not-syn", notify=False)
                self.drops["stream-without-syn"] += 1
                if segment.type != wire_stream.StreamType.RST:
                    self._reset_unknown(flow, segment, now)
                return
            flow.nonce = segment.nonce
            self._streams[flow.socket_id] = flow
            self._events.append(FlowAccepted(flow.socket_id, flow.obj, flow.flow, resumed))
            if resumed:
                self._pump(flow, now)  # RESUME goes out; the peer resends what we lack
                return
        flow.packets_received += 1
        flow.last_active = now
        flow.transport.receive_segment(body, now)
        # Pumped once per batch of input (next_event / datagrams_to_send), so a burst of
        # segments for one flow is acknowledged by one ACK, not one per delayed-ACK pair.
        self._dirty[flow.socket_id] = flow
        self._last_now = now

    def _reset_unknown(self, flow: Flow, segment: wire_stream.StreamSegment, now: float) -> None:
        rst = wire_stream.StreamSegment(wire_stream.StreamType.RST, segment.nonce, seq=segment.ack)
        flow.nonce = segment.nonce
        self.counters["reset-unknown-flow"] += 1
        self._emit(flow, Proto.STREAM, wire_stream.encode(rst), now)

    def _reset_peer(self, flow: Flow, h: Header, body: bytes) -> None:
        """Send RST to the source of ``h`` only (not to the flow's current peer)."""
        try:
            segment = wire_stream.parse(body)
        except MalformedPacket:
            return
        rst = wire_stream.StreamSegment(wire_stream.StreamType.RST, segment.nonce, seq=segment.ack)
        reply = h.reply(Proto.STREAM, self.dc_id, self.host_id, flow.socket_id)
        self._out.append((self.gateway, wire_header.encode(reply, wire_stream.encode(rst))))

    def _pump(self, flow: Flow, now: float) -> None:
        """Send what a stream transport queued and surface its events."""
        transport = flow.transport
        assert transport is not None
        for segment in transport.segments_to_send(now):
            self._emit(flow, Proto.STREAM, segment, now)
        terminated = False
        while (event := transport.next_event()) is not None:
            self._events.append(StreamEventFor(flow.socket_id, event))
            terminated = terminated or isinstance(event, ConnectionTerminated)
        if terminated:
            self._forget(flow, "terminated", notify=False)

    def _receive_signal(self, h: Header, body: bytes, now: float) -> None:
        try:
            signal = wire_signal.parse(body)
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        flow = self.flows.get(h.dst_socket)
        if flow is None or flow.flow != h.flow:
            self.drops["signal-for-unknown-flow"] += 1
            return
        if signal.type == wire_signal.SignalType.OBJECT_NOT_FOUND:
            self._events.append(ObjectNotFoundEvent(flow.socket_id, flow.obj))
        elif signal.type == wire_signal.SignalType.UNREACHABLE:
            self._events.append(FlowUnreachable(flow.socket_id))
        elif signal.type == wire_signal.SignalType.REFINE and signal.a == flow.peer_host:
            # A switch cannot prove what it says (it does not know the flow's nonce), so a
            # REFINE only prompts the peer for a packet: its source locator, which carries the
            # nonce's proof, is what moves the flow (§5.3). Stale packets are meanwhile
            # corrected in flight by the old DC's flow switch.
            self.counters["refine-probe"] += 1
            if flow.transport is not None:
                flow.transport.probe(now)
                self._pump(flow, now)

    # -- helpers -------------------------------------------------------------------------

    def _emit(self, flow: Flow, proto: Proto, segment: bytes, now: float) -> None:
        flags = Flags.NONE
        if flow.trace and flow.packets_sent == 0:
            flags = Flags.TRACE
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
            flags=flags,
        )
        if flags & Flags.TRACE:
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

    def _flow(self, socket_id: int) -> Flow:
        flow = self.flows.get(socket_id)
        if flow is None:
            raise UsageError(f"no flow with socket {socket_id} on host {self.name}")
        return flow

    def _forget(self, flow: Flow, reason: str, *, notify: bool = True) -> None:
        self.flows.pop(flow.socket_id, None)
        self._streams.pop(flow.socket_id, None)
        self._by_flow.pop((flow.flow, flow.peer_host), None)
        if notify:
            self._events.append(FlowClosed(flow.socket_id, reason))
        if flow.role == Role.SERVER and reason != "exported":
            listener = self.listeners.get(flow.obj)
            if listener is not None and listener.draining:
                self._check_drained()

    def _allocate_socket(self) -> int:
        while True:
            socket_id = self._next_socket
            self._next_socket = self._next_socket % 0xFFFFFFFF + 1
            if socket_id not in self.flows:
                return socket_id
