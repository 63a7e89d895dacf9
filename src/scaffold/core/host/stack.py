"""The end-host SCAFFOLD stack (docs/protocol.md §3.4 and §4).

Sockets bind on Object IDs (listeners) and flows are demultiplexed, in this order, on:

1. the destination Socket ID, checked against the Flow ID (an established flow);
2. (Flow ID, source Host ID) -- later packets of a flow whose first reply has not arrived
   yet still carry Socket ID 0 and reach this host through the object switches again;
3. the destination Object ID -- a first packet for a listener starts a new flow; a SYN for
   an object nobody here listens on is answered NOT_HERE (docs/protocol.md §4.2.9).

Every reply carries this host's full source locator, so the peer's later packets are fully
refined. A flow's nonce, chosen by the initiator, must match on every packet.

``HostStack`` is the facade: the control plane, timers, the socket calls for datagram flows,
and the receive path. Stream flows are in ``streams.py``, keepalive bundles in
``keepalive.py``, churn in ``churn.py``.
"""

from __future__ import annotations

from ...errors import MalformedPacket, UsageError
from ...ids import ObjectId
from ...transport.pmtu import SACK_ROOM
from ...wire import control
from ...wire import datagram as wire_datagram
from ...wire import header as wire_header
from ...wire import signal as wire_signal
from ...wire import stream as wire_stream
from ...wire.control import ControlMessage
from ...wire.datagram import DatagramSegment, DatagramType
from ...wire.header import DELIVERY, HEADER_LEN, VERSION, Flags, Header, Proto
from ...wire.stream import MAX_PAYLOAD
from ..events import Address, Datagram, NeighboursLearned, Packet, TraceHop
from ..locality import Policy
from ..metrics import Sample
from .base import BUNDLES, HEARTBEAT, LIVENESS_BATCH, SWEEP, WATCHES
from .churn import Churn
from .events import (
    DatagramReceived,
    FlowAccepted,
    FlowUnreachable,
    HostEvent,
    HostRegistered,
    ObjectNotFoundEvent,
)
from .flows import Flow, Listener, Role
from .keepalive import Keepalives
from .streams import StreamFlows

__all__ = ["STRAGGLER_WINDOW", "SUPERSEDED_QUIET", "HostStack"]

#: where the flow nonce sits in each transport segment (docs/protocol.md §4)
_NONCE = {Proto.DATAGRAM: wire_datagram.NONCE, Proto.STREAM: wire_stream.NONCE}
#: how long after a peer moved its old locator's packets are taken as stragglers (seconds)
STRAGGLER_WINDOW = 0.5
#: how long a client flow's current server must have been silent before a server it had
#: earlier may have the flow back (seconds, docs/protocol.md §3.4)
SUPERSEDED_QUIET = 2.0
_STREAM = int(Proto.STREAM)
_STREAM_MIN = HEADER_LEN + wire_stream.FIXED_LEN
_TRACE = int(Flags.TRACE)
_TO_CLIENT = int(Flags.TO_CLIENT)
#: stream segments a host sends for a SYN it keeps no state for (§4.2.8, §4.2.9)
_STATELESS_ANSWERS = frozenset((int(wire_stream.StreamType.RETRY), int(wire_stream.StreamType.NOT_HERE)))


class HostStack(StreamFlows, Keepalives, Churn):
    """Sans-IO host stack: control records, datagrams and ``now`` in; datagrams, records,
    timers and events out (the ``NodeEngine`` interface, ``core/engine.py``)."""

    # -- control plane -------------------------------------------------------------------

    def hello(self, address: Address | None = None) -> None:
        """Queue the ``Hello`` that registers this host (and re-sends its bindings).

        ``address`` is this host's UDP address, which its gateway learns from the controller.
        """
        self._control_out.append(
            control.Hello(node=self.name, role=self.role, gateway=self.gateway, address=address)
        )
        for listener in self.listeners.values():
            self._control_out.append(
                control.Bind(
                    obj=listener.obj.hex(),
                    weight=listener.weight,
                    name=listener.name,
                    grant=listener.grant,
                    policy=listener.policy,
                    capacity=listener.capacity,
                )
            )
        # The bindings are complete: the controller drops those this host did not re-send.
        self._heartbeat_seq += 1
        self._control_out.append(control.Heartbeat(node=self.name, seq=self._heartbeat_seq))

    def receive_control(self, message: ControlMessage, now: float) -> None:
        if isinstance(message, control.Welcome):
            self.host_id = message.host_id
            self.dc_id = message.dc_id
            self.heartbeat_interval = message.heartbeat_interval
            self.control_idle_timeout = message.idle_timeout
            self._timers.arm(HEARTBEAT, now)  # the gateway hears from us at once
            self._timers.arm(SWEEP, now + self.idle_timeout)
            if message.gateway_address is not None:
                address = (str(message.gateway_address[0]), int(message.gateway_address[1]))
                self._events.append(NeighboursLearned({self.gateway: address}))
            self._events.append(HostRegistered(self.host_id, self.dc_id))
        elif isinstance(message, control.Drain):
            self._drain(message, now)
        elif isinstance(message, control.MigrateOut):
            self._migrate_out(message, now)
        elif isinstance(message, control.MigrateIn):
            # Then whatever was forwarded here ahead of the migration: packets of the
            # imported flows, and first packets of new flows for the object.
            for data in self._migrate_in(message, now):
                self.receive_datagram(data, self.gateway, now)
        elif isinstance(message, control.Relocate):
            self._relocate(message, now)
        else:
            self.drops["unexpected-control"] += 1

    def set_path_limit(self, port: str, max_datagram: int, now: float) -> None:
        """The largest datagram the runtime sends to ``port``: towards the gateway, it bounds
        every stream's path-MTU search (docs/protocol.md §4.2.6)."""
        if port != self.gateway:
            return
        ceiling = max(1, min(max_datagram - HEADER_LEN - wire_stream.FIXED_LEN - SACK_ROOM, MAX_PAYLOAD))
        if ceiling == self._mss_ceiling:
            return
        self._mss_ceiling = ceiling
        for flow in self._streams.values():
            if flow.transport is not None:
                flow.transport.set_mss_ceiling(ceiling, now)
                self._dirty[flow.socket_id] = flow
        self._last_now = now

    # -- timers and events -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline: heartbeat, idle sweep, any stream's transport timer, or the
        first tick of the liveness wheel that holds a stream.

        One look at a heap and one at the wheel (``timers.py``), whatever the number of
        streams; it is current once the runtime took the events and datagrams (which pump
        the streams that received segments).
        """
        exact, coarse = self._timers.next(), self._wheel.next()
        if exact is None:
            return coarse
        return exact if coarse is None or exact < coarse else coarse

    def handle_timer(self, now: float) -> None:
        """Run the timers due at ``now``; only the streams that are due are touched."""
        for key in self._timers.pop_due(now):
            if key == HEARTBEAT:
                self._presence(now)
            elif key == SWEEP:
                self._sweep(now)
                self._timers.arm(SWEEP, now + self.idle_timeout)
            elif key == BUNDLES:
                self._bundles_expired(now)
            elif key == WATCHES:
                self._watches_due(now)
            else:
                flow = self._streams.get(key)
                if flow is not None and flow.transport is not None:
                    flow.transport.handle_timer(now, liveness=False)
                    self._pump(flow, now)
        # At most LIVENESS_BATCH streams per call: a runtime calls again at once (the wheel
        # still reports the tick), after its other work -- heartbeats stay on time.
        due = self._wheel.pop_due(now, LIVENESS_BATCH)
        if due:
            self._run_liveness(due, now)

    def beat(self, now: float) -> bool:
        """Queue the presence packet now if it is due; returns whether it did.

        A runtime calls it when a timer fires, before it reads what waits in its socket (which
        comes before the timer itself): a loop busy with bulk data does not hold the host's
        sign of life behind that work (§6.2).
        """
        due = self._timers.get(HEARTBEAT)
        if due is None or due > now:
            return False
        self._presence(now)
        return True

    def _presence(self, now: float) -> None:
        # Alive: a presence packet to the gateway, which watches us (§6.2); the controller
        # hears only when that changes. It goes first, before the bulk data queued in the
        # same pass: a full send buffer drops what comes last.
        self._out.insert(0, (self.gateway, wire_header.presence(self.dc_id, self.host_id)))
        self._timers.arm(HEARTBEAT, now + self.heartbeat_interval)

    def _sweep(self, now: float) -> None:
        idle = [f for f in self._datagrams.values() if now - f.last_active > self.idle_timeout]
        for flow in idle:
            self._forget(flow, "idle")
        self._expire_moved(now)

    def next_event(self) -> HostEvent | None:
        if self._dirty:
            self._pump_dirty(for_events=True)
        return self._events.popleft() if self._events else None

    def metrics(self) -> list[Sample]:
        return [
            *super().metrics(),
            *self._totals.snapshot(self.flows, len(self.listeners), {**self._answering, **self._dirty}),
            *(sample for pauses in self.pauses.values() for sample in pauses.samples()),
        ]

    # -- socket API (what the runtime's sockets call) ------------------------------------

    def bind(
        self,
        obj: ObjectId,
        weight: int = 1,
        name: str = "",
        *,
        resumable: bool = False,
        grant: bytes = b"",
        policy: str = "",
        capacity: float = 0.0,
    ) -> Listener:
        """Listen on ``obj`` and register this host as a replica with ``weight``; an owned
        object needs its owner's ``grant`` (``core.ownership``, docs/protocol.md §6.7).
        ``policy`` sets the object's resolution policy (docs/protocol.md §3.5; "": as it is);
        ``capacity`` the new flows per second this replica takes before its DC spills over to
        the next nearest (0: no limit).

        Raises:
            UsageError: the object is already bound here, the weight is not in 1..65535, the
                policy is not one of ``core.locality.Policy``, or the capacity is negative.
        """
        if obj.raw in self.listeners:
            raise UsageError(f"{name or obj} is already bound on host {self.name}")
        if not 0 < weight <= control.MAX_WEIGHT:
            raise UsageError(f"weight must be in 1..{control.MAX_WEIGHT}, got {weight}")
        if policy and policy not in {p.value for p in Policy}:
            raise UsageError(f"policy must be one of {', '.join(p.value for p in Policy)}, got {policy!r}")
        if not 0 <= capacity <= 1e9:
            raise UsageError(f"capacity must be 0 (no limit) to 1e9 flows per second, got {capacity}")
        listener = Listener(obj.raw, name, weight, resumable, grant=grant, policy=policy, capacity=capacity)
        self.listeners[obj.raw] = listener
        self._control_out.append(
            control.Bind(
                obj=obj.raw.hex(), weight=weight, name=name, grant=grant, policy=policy, capacity=capacity
            )
        )
        return listener

    def unbind(self, obj: ObjectId) -> None:
        """Stop listening on ``obj`` and withdraw the replica (established flows go on).

        Raises:
            UsageError: ``obj`` is not bound here.
        """
        if self.listeners.pop(obj.raw, None) is None:
            raise UsageError(f"{obj} is not bound on host {self.name}")
        self._control_out.append(control.Unbind(obj=obj.raw.hex()))

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
        """Close a flow: tell the peer (datagram CLOSE) and forget it.

        Raises:
            UsageError: no such flow.
        """
        flow = self._flow(socket_id)
        if flow.proto == Proto.DATAGRAM and (flow.peer_host or flow.role == Role.CLIENT):
            segment = wire_datagram.encode(DatagramSegment(DatagramType.CLOSE, flow.nonce))
            self._emit(flow, Proto.DATAGRAM, segment, now)
        self._forget(flow, "closed", notify=False)

    # -- data plane ----------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        if self._dirty or self._answering:
            self._pump_dirty()
        out, self._out = self._out, []
        return out

    def receive_datagram(self, data: Packet, port: str, now: float) -> None:
        """Demultiplex one packet from the gateway. Never raises."""
        if len(data) >= _STREAM_MIN:
            # The common case first, read at fixed offsets: a stream segment of an
            # established flow, fully refined, from the flow's current peer, with its nonce.
            # It is exactly what the general path below concludes for such a packet. A
            # server's segments to a client carry TO_CLIENT, which only switches read: the
            # client end of every flow takes this path too.
            version, proto, flags, flow_id, obj, dst_host, dst_socket, src_dc, src_host, src_socket = (
                DELIVERY.unpack_from(data)
            )
            if (
                version == VERSION
                and proto == _STREAM
                and (not flags or flags == _TO_CLIENT)
                and dst_host == self.host_id
            ):
                flow = self.flows.get(dst_socket)
                if (
                    flow is not None
                    and flow.transport is not None
                    and flow.flow == flow_id
                    and flow.peer_host == src_host
                    and flow.peer_socket == src_socket
                    and flow.peer_dc == src_dc
                    and flow.obj == obj
                    and wire_stream.NONCE.unpack_from(data, HEADER_LEN)[0] == flow.nonce
                    and dst_host
                ):
                    flow.packets_received += 1
                    flow.last_active = flow.last_received = now
                    flow.transport.receive_segment(memoryview(data)[HEADER_LEN:], now)
                    self._dirty[dst_socket] = flow
                    self._last_now = now
                    return
        try:
            h = wire_header.parse(bytes(data))
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        if h.dst_host != self.host_id or not self.host_id:  # (``registered`` inline)
            self.drops["not-for-this-host"] += 1
            return
        body = bytes(data[HEADER_LEN:])
        if h.proto is Proto.SIGNAL:
            self._receive_signal(h, body, now)
            return
        if h.proto is Proto.LIVENESS:
            self._receive_liveness(h, body, now)
            return
        flow = self._demux(h, data, now)
        if flow is None:
            return
        if int(h.flags) & _TRACE:  # an int test: ``IntFlag.__and__`` builds a flag (Python calls)
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
            nonce = _NONCE[h.proto]
            if len(body) < nonce.size or nonce.unpack_from(body)[0] != flow.nonce:
                moved = (h.src_dc, h.src_host) != (flow.peer_dc, flow.peer_host)
                self.drops["forged-move" if moved and flow.peer_host else "bad-nonce"] += 1
                return
            kind = body[wire_stream.TYPE_OFFSET] if h.proto is Proto.STREAM else 0
            if kind == wire_stream.StreamType.SYN_ACK and flow.peer_host and h.src_host != flow.peer_host:
                # A second replica answered our handshake (our SYN was re-resolved while the
                # tables changed): we already have a server, so that one is told to let go.
                self.drops["duplicate-handshake"] += 1
                self._reset_peer(flow, h, body)
                return
            if self._superseded(flow, h, now):
                # It lets go of its stale copy of the flow, so that a later re-resolution to
                # it starts a fresh takeover (RESUME, with the client's offsets) instead.
                self.drops["from-superseded-server"] += 1
                self._reset_peer(flow, h, body)
                return
            if kind not in _STATELESS_ANSWERS:
                # (A RETRY comes from a replica that keeps no state yet, a NOT_HERE from a host
                # that is no replica: the SYN they ask for goes through the object switches
                # again, as the first one did, §4.2.8, §4.2.9.)
                self._learn_peer(flow, h, now)
        flow.last_received = now
        if h.proto == Proto.DATAGRAM:
            self._receive_datagram_segment(flow, h, body, now)
        else:
            self._receive_stream_segment(flow, h, body, now)

    def _superseded(self, flow: Flow, h: Header, now: float) -> bool:
        """Is this a packet from a server the client flow had before its current one, while
        the current one still speaks?

        Such a server is alive but lost the flow: it only looked dead (a stalled process)
        and another replica took the flow over; or it is a straggler from before a
        migration, later than ``STRAGGLER_WINDOW``. Its data is not taken, it does not move
        the flow back, and a stream gets an ``RST`` for its copy of the flow: a client that
        followed whichever server spoke last acked each one's data to the other, and hung.
        Only once the current server has been silent for ``SUPERSEDED_QUIET`` may an earlier
        one have the flow back (a flow migrated away and back again).
        """
        if flow.role != Role.CLIENT or h.src_host == flow.peer_host or h.src_host not in flow.served_by:
            return False
        if (
            h.src_dc,
            h.src_host,
            h.src_socket,
        ) == flow.previous_peer and now - flow.peer_changed_at < STRAGGLER_WINDOW:
            return False  # a straggler, sent before the flow moved: its data is good (_learn_peer)
        return now - flow.last_received < SUPERSEDED_QUIET

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
        if flow.peer_host and flow.last_received and (h.src_host, h.src_dc) != (flow.peer_host, flow.peer_dc):
            # The flow's pause: from the last word of the peer it had to the first of the new.
            self.pauses["host" if h.src_host != flow.peer_host else "dc"].observe(now - flow.last_received)
        if h.src_host != flow.peer_host:
            if flow.role == Role.CLIENT:
                if flow.peer_host:
                    self.counters["flow-redirected"] += 1  # another replica took the flow over
                flow.served_by += (h.src_host,)
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
                    if not self._not_here(h, data, now):
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
            obj=listener.obj,  # one bytes object for all its flows, not a copy per flow
            proto=h.proto,
            role=Role.SERVER,
            peer_dc=h.src_dc,
            peer_host=h.src_host,
            peer_socket=h.src_socket,
            last_active=now,
        )
        self._add_flow(flow)
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
        kind = signal.type
        if kind is not wire_signal.SignalType.REFINE and flow.transport is not None:
            # A switch cannot prove what it says (it does not know the flow's nonce): a signal
            # that would end a stream only makes the host ask the peer, with the nonce; the
            # stream ends if no authentic segment answers in time (§4.3).
            reason = "object-not-found" if kind is wire_signal.SignalType.OBJECT_NOT_FOUND else "unreachable"
            self.counters["signal-verify"] += 1
            flow.transport.suspect(reason, now)
            self._pump(flow, now)
        elif kind is wire_signal.SignalType.OBJECT_NOT_FOUND:
            self._events.append(ObjectNotFoundEvent(flow.socket_id, flow.obj))
        elif kind is wire_signal.SignalType.UNREACHABLE:
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
