"""Stream flows: the host's glue to the stream transport (docs/protocol.md §4.2, §5.1).

Each stream flow owns a ``StreamConnection``; the host hands it segments and pumps it
(``HostStackBase._pump``) exactly the way a runtime drives a core. A first segment of an unknown
flow is a SYN, a takeover by a resumable replica (RESUME), or refused with an RST.
"""

from __future__ import annotations

from ...errors import MalformedPacket, UsageError
from ...ids import ObjectId
from ...transport import StreamConnection
from ...wire import header as wire_header
from ...wire import stream as wire_stream
from ...wire.header import Header, Proto
from .base import HostStackBase
from .events import FlowAccepted
from .flows import Flow

__all__ = ["StreamFlows"]


class StreamFlows(HostStackBase):
    """The stream part of ``HostStack``: the stream socket calls and the receive path."""

    def open_stream(self, obj: ObjectId, now: float, *, trace: bool = False) -> Flow:
        """Start a reliable stream flow to ``obj`` (a SYN goes out at once).

        Raises:
            UsageError: the host is not registered yet.
        """
        flow = self.open_flow(obj, now, proto=Proto.STREAM, trace=trace)
        flow.transport = self._fit_path(StreamConnection("client", flow.nonce, now, self.stream_options), now)
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
        self._pump_later(socket_id, now)
        return taken

    def stream_read(self, socket_id: int, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` received bytes (reading opens the peer's window).

        Raises:
            UsageError: no such stream, or it was closed.
        """
        transport = self.stream(socket_id)
        data = transport.read(max_bytes)
        self.flows[socket_id].bytes_received += len(data)
        if transport.ack_due:  # a read changes nothing else the transport would send
            self._pump_later(socket_id, now)
        return data

    def stream_shutdown(self, socket_id: int, now: float) -> None:
        """Half-close a stream (FIN after the buffered data).

        Raises:
            UsageError: no such stream.
        """
        self.stream(socket_id).shutdown(now)
        self._pump(self.flows[socket_id], now)

    def stream_close(self, socket_id: int, now: float) -> None:
        """Close a stream in both directions.

        Raises:
            UsageError: no such stream.
        """
        self.stream(socket_id).close(now)
        self._pump(self.flows[socket_id], now)

    def stream_abort(self, socket_id: int, now: float) -> None:
        """Reset a stream (RST) and forget it.

        Raises:
            UsageError: no such stream.
        """
        self.stream(socket_id).abort(now)
        self._pump(self.flows[socket_id], now)

    # -- receiving -----------------------------------------------------------------------------

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
                flow.transport = self._fit_path(
                    StreamConnection("server", segment.nonce, now, self.stream_options), now
                )
                resumed = False
            elif listener is not None and listener.resumable and segment.type != wire_stream.StreamType.RST:
                # A mid-flow segment of a flow whose server is gone: this replica takes it
                # over and learns the stream offsets from the client (RESUME, §5.1).
                flow.transport = self._fit_path(
                    StreamConnection.resume(segment.nonce, now, options=self.stream_options), now
                )
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
