"""Churn on a host: drain, object migration out and in, relocation (docs/protocol.md §5).

A migrating replica exports each flow's state (``export_flow``) and leaves forwarding
pointers behind, so packets still on their way follow the flows to the new host; there,
packets that arrive before the flows do are parked until ``MigrateIn`` imports them (§5.4).
A relocated host (VM migration, mobility) keeps its Host ID and, when told to, announces its
new locator to every peer in-band, with the flow's nonce (§5.3, §5.4).
"""

from __future__ import annotations

from ...errors import MalformedPacket, UsageError
from ...transport import StreamConnection
from ...wire import control
from ...wire import datagram as wire_datagram
from ...wire import flow_state as wire_flow_state
from ...wire import stream as wire_stream
from ...wire.datagram import DatagramSegment, DatagramType
from ...wire.header import DST_OFFSET, DST_ROUTE, FLAGS_OFFSET, HEADER_LEN, Flags, Header, Proto
from ..events import HostRelocated, NeighboursLearned
from .base import HostStackBase
from .events import FlowAccepted, FlowsMigrated
from .flows import MIGRATABLE, Flow, Listener, Role
from .stats import StreamTotals

__all__ = ["Churn"]

#: at most this many packets are parked, over all flows
MAX_PARKED = 1024
#: how long forwarding pointers and parked packets live (seconds)
FLOW_POINTER_LIFETIME = 30.0
OBJECT_POINTER_LIFETIME = 5.0
PARKED_LIFETIME = 2.0


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


class Churn(HostStackBase):
    """The churn part of ``HostStack``: what the controller's churn commands make a host do."""

    def _drain(self, message: control.Drain, now: float) -> None:
        listener = self.listeners.get(_hex_bytes(message.obj))
        if listener is None:
            self.drops["drain-unknown-object"] += 1
            return
        listener.draining = True
        self._check_drained()

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
            and (f.transport is None or f.transport.state in MIGRATABLE)
        ]
        states = []
        for flow in moving:
            states.append(self.export_flow(flow.socket_id, now))
            # Packets still on their way here are passed on to the new host (§5.4).
            self._forward[flow.socket_id] = (
                flow.flow,
                message.to_dc_id,
                message.to_host_id,
                now + FLOW_POINTER_LIFETIME,
            )
        # So are first packets of new flows resolved here before the tables changed.
        self._forward_objects[raw] = (message.to_dc_id, message.to_host_id, now + OBJECT_POINTER_LIFETIME)
        # In parts that each fit one control frame (docs/protocol.md §6.6).
        parts = control.chunk_states(states)
        for k, part in enumerate(parts):
            self._control_out.append(
                control.FlowsOut(
                    obj=message.obj,
                    to_host=message.to_host,
                    name=listener.name,
                    weight=listener.weight,
                    resumable=listener.resumable,
                    states=part,
                    more=k < len(parts) - 1,
                )
            )
        self.counters["flows-migrated-out"] += len(states)
        self._events.append(FlowsMigrated(raw, tuple(f.socket_id for f in moving), message.to_host))

    def _migrate_in(self, message: control.MigrateIn, now: float) -> list[bytes]:
        """Import the flows; returns the packets parked for them (and for first packets of
        the object), for the caller to receive again now."""
        raw = _hex_bytes(message.obj)
        if raw not in self.listeners:
            self.listeners[raw] = Listener(raw, message.name, message.weight, message.resumable)
        for state in message.states:
            try:
                flow = self.import_flow(state, now)
            except (MalformedPacket, UsageError):
                self.drops["bad-migrated-flow"] += 1
                continue
            except Exception:
                self.drops["bad-migrated-flow"] += 1
                continue
            self.counters["flows-migrated-in"] += 1
            self._events.append(FlowAccepted(flow.socket_id, flow.obj, flow.flow, resumed=True))
        parked, self._parked = self._parked, {}
        return [data for packets in parked.values() for data, expiry in packets if expiry >= now]

    def _relocate(self, message: control.Relocate, now: float) -> None:
        self.gateway, self.dc_id = message.gateway, message.dc_id
        if message.gateway_address is not None:
            address = (str(message.gateway_address[0]), int(message.gateway_address[1]))
            self._events.append(NeighboursLearned({message.gateway: address}))
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

    # -- flow state -------------------------------------------------------------------------

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
            flow.transport = self._fit_path(StreamConnection.from_state(state.transport, now), now)
            flow.stats_base = StreamTotals.of(flow.transport)
        self._add_flow(flow)
        if role == Role.SERVER:
            self._by_flow[(flow.flow, flow.peer_host)] = flow.socket_id
        if flow.transport is not None:
            self._streams[flow.socket_id] = flow
            self._pump(flow, now)
        return flow

    # -- packets of flows that moved ------------------------------------------------------------

    def _forward_moved(self, h: Header, data: bytes | bytearray, now: float) -> bool:
        """Pass on to its new host a packet of a flow that migrated away, or a first packet
        for a replica that did (§5.4)."""
        if h.dst_socket:
            pointer = self._forward.get(h.dst_socket)
            target = pointer[1:] if pointer is not None and pointer[0] == h.flow else None
        else:
            target = self._forward_objects.get(h.obj)
        if target is None or target[2] < now:
            return False
        if (
            h.proto == Proto.STREAM
            and len(data) > HEADER_LEN
            and data[HEADER_LEN + wire_stream.TYPE_OFFSET] == wire_stream.StreamType.RST
        ):
            # A client's RST for this host's copy of the flow: it heard a late straggler from
            # here and took it for a superseded server (docs/protocol.md §3.4). It is not
            # meant for the host the flow moved to.
            self.drops["rst-for-moved-flow"] += 1
            return True
        buf = bytearray(data)
        DST_ROUTE.pack_into(buf, DST_OFFSET, target[0], target[1])
        buf[FLAGS_OFFSET] |= Flags.REDIRECTED
        self.counters["forwarded-after-migration"] += 1
        self._out.append((self.gateway, buf))
        return True

    def _park(self, h: Header, data: bytes | bytearray, now: float) -> bool:
        """Hold a forwarded packet whose flow is still being imported (bounded, brief)."""
        if not h.flags & Flags.REDIRECTED or sum(map(len, self._parked.values())) >= MAX_PARKED:
            return False
        self._parked.setdefault(h.flow, []).append((bytes(data), now + PARKED_LIFETIME))
        self.counters["parked-until-import"] += 1
        return True

    def _expire_moved(self, now: float) -> None:
        """Drop forwarding pointers and parked packets that outlived their use."""
        self._forward = {k: v for k, v in self._forward.items() if v[3] > now}
        self._forward_objects = {k: v for k, v in self._forward_objects.items() if v[2] > now}
        self._parked = {k: [p for p in v if p[1] > now] for k, v in self._parked.items()}
        self._parked = {k: v for k, v in self._parked.items() if v}
