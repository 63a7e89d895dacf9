"""Stream flows: the host's glue to the stream transport (docs/protocol.md §4.2, §5.1).

Each stream flow owns a ``StreamConnection``; the host hands it segments and pumps it
(``HostStackBase._pump``) exactly the way a runtime drives a core. A first segment of an unknown
flow is a SYN, a takeover by a resumable replica (RESUME), or refused with an RST; a SYN for
an object with no listener here is answered NOT_HERE, statelessly (§4.2.9).

Half-open streams are bounded per object (§4.2.8): above ``retry_above`` of them a SYN gets
state only if it carries a retry token -- a keyed hash of its flow and source that this host
gave in a stateless RETRY, which proves the source receives at its locator -- and above
``half_open_limit`` none does. A forged SYN thus costs one RETRY, or at most
``accept_retries + 1`` SYN-ACKs, and bounded memory.
"""

from __future__ import annotations

import hashlib
import struct

from ...errors import MalformedPacket, UsageError
from ...ids import ObjectId
from ...transport import StreamConnection
from ...wire import header as wire_header
from ...wire import stream as wire_stream
from ...wire.header import HEADER_LEN, Flags, Header, Proto
from ..events import Packet
from .base import HostStackBase
from .events import FlowAccepted
from .flows import Flow

__all__ = ["TOKEN_PERIOD", "StreamFlows"]

#: a retry token is valid in the period it was made and the next one (seconds)
TOKEN_PERIOD = 10.0
#: what a token authenticates: period, Flow ID, nonce, source locator, Object ID
_TOKEN_INPUT = struct.Struct("!QQQIQI32s")
_MAC_BITS = 56


class StreamFlows(HostStackBase):
    """The stream part of ``HostStack``: the stream socket calls and the receive path."""

    def open_stream(self, obj: ObjectId, now: float, *, trace: bool = False, data: bytes = b"") -> Flow:
        """Start a reliable stream flow to ``obj`` (a SYN goes out at once).

        ``data`` is the start of the stream; up to one segment of it rides in the SYN (data on
        SYN, docs/protocol.md §4.2.7), so the server's application has it a round trip
        earlier. A SYN may be delivered twice (retransmitted to a second replica after the
        first died, or replayed): send there only what is safe to repeat.

        Raises:
            UsageError: the host is not registered yet.
        """
        flow = self.open_flow(obj, now, proto=Proto.STREAM, trace=trace)
        flow.transport = transport = StreamConnection(
            "client", flow.nonce, now, self.stream_options, mss_ceiling=self._mss_ceiling
        )
        self._streams[flow.socket_id] = flow
        if data:
            transport.send(data, force=True)
        transport.connect(now)
        self._pump(flow, now)
        return flow

    def stream(self, socket_id: int) -> StreamConnection:
        """The transport of a stream flow.

        Raises:
            UsageError: no such flow, or not a stream flow.
        """
        flow = self.flows.get(socket_id)  # (``_flow`` inline: on every read and write)
        if flow is None or flow.transport is None:
            raise self._not_a_stream(socket_id, flow)
        return flow.transport

    def _not_a_stream(self, socket_id: int, flow: Flow | None) -> UsageError:
        return UsageError(
            f"no flow with socket {socket_id} on host {self.name}"
            if flow is None
            else f"socket {socket_id} is not a stream flow"
        )

    def stream_send(self, socket_id: int, data: bytes, now: float, *, force: bool = False) -> int:
        """Queue ``data`` on a stream; returns the bytes the send buffer took (all of them
        with ``force``).

        Raises:
            UsageError: no such stream, or it was shut down.
        """
        # ``stream`` and ``_pump_later`` inline: once per write of every stream
        flow = self.flows.get(socket_id)
        if flow is None or flow.transport is None:
            raise self._not_a_stream(socket_id, flow)
        taken = flow.transport.send(data, force=force)
        self._dirty[socket_id] = flow
        self._last_now = now
        return taken

    def stream_read(self, socket_id: int, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` received bytes (reading opens the peer's window).

        Raises:
            UsageError: no such stream, or it was closed.
        """
        flow = self.flows.get(socket_id)  # ``stream`` inline (per read)
        if flow is None or flow.transport is None:
            raise self._not_a_stream(socket_id, flow)
        transport = flow.transport
        data = transport.read(max_bytes)
        flow.bytes_received += len(data)
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
        segment: wire_stream.StreamSegment | None = None  # parsed here only for a new flow
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
                half_open = self._half_open.get(flow.obj, 0)
                if half_open >= self.retry_above and not self._admit_syn_under_load(
                    flow, h, segment, half_open, now
                ):
                    return
                flow.transport = StreamConnection(
                    "server", segment.nonce, now, self.stream_options, mss_ceiling=self._mss_ceiling
                )
                resumed = False
            elif listener is not None and listener.resumable and segment.type != wire_stream.StreamType.RST:
                # A mid-flow segment of a flow whose server is gone: this replica takes it
                # over and learns the stream offsets from the client (RESUME, §5.1). It answers
                # a source not proven yet, so it counts as half-open, and is not retried.
                if self._half_open.get(flow.obj, 0) >= self.retry_above:
                    self._forget(flow, "half-open-full", notify=False)
                    self.drops["half-open-full"] += 1
                    return
                flow.transport = StreamConnection.resume(
                    segment.nonce, now, options=self.stream_options, mss_ceiling=self._mss_ceiling
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
            flow.half_open = True
            # (``get``: a Counter's missing key is a Python call, ``__missing__``)
            self._half_open[flow.obj] = self._half_open.get(flow.obj, 0) + 1
            flow.nonce = segment.nonce
            self._streams[flow.socket_id] = flow
            self._events.append(FlowAccepted(flow.socket_id, flow.obj, flow.flow, resumed))
            if resumed:
                self._pump(flow, now)  # RESUME goes out; the peer resends what we lack
                return
        flow.packets_received += 1
        flow.last_active = now
        # A new flow's SYN goes to its transport as parsed above, not parsed again.
        flow.transport.receive_segment(body if segment is None else segment, now)
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

    def _not_here(self, h: Header, data: Packet, now: float) -> bool:
        """Answer a stream SYN for an object nobody here listens on with NOT_HERE (§4.2.9);
        False if the packet is not such a SYN (it is then dropped ``no-listener``).

        The object switches still sent it here: the listener just went (a replica withdrawn,
        migrated, drained) and the tables have not caught up. The client re-sends its SYN
        within milliseconds, re-resolved, instead of after its 1 s retransmission timeout.
        Stateless, no larger than the SYN (both are a header and a fixed segment at least),
        and it echoes the SYN's nonce: only the client that sent the SYN can act on it. Its
        source is not verified, so the answers are rate-limited (``not_here_budget``): a SYN
        beyond that is dropped and counted, and its client resends it on its timer.
        """
        if (
            h.proto != Proto.STREAM
            or h.dst_socket
            or not (h.src_dc and h.src_host and h.src_socket)
            or len(data) < HEADER_LEN + wire_stream.FIXED_LEN
            or data[HEADER_LEN + wire_stream.TYPE_OFFSET] != wire_stream.StreamType.SYN
        ):
            return False
        try:
            syn = wire_stream.parse(memoryview(data)[HEADER_LEN:])
        except MalformedPacket:
            return False
        if not self.not_here_budget.take(now):
            self.drops["not-here-rate-limited"] += 1
            return True
        self.counters["no-listener-answered"] += 1
        answer = wire_stream.StreamSegment(wire_stream.StreamType.NOT_HERE, syn.nonce)
        # From no socket (no state), and a server's packet to a client (TO_CLIENT, §3.3).
        reply = h.reply(Proto.STREAM, self.dc_id, self.host_id, flags=Flags.TO_CLIENT)
        self._out.append((self.gateway, wire_header.encode(reply, wire_stream.encode(answer))))
        return True

    # -- half-open streams and retry tokens (§4.2.8) ---------------------------------------------

    def _admit_syn_under_load(
        self, flow: Flow, h: Header, segment: wire_stream.StreamSegment, half_open: int, now: float
    ) -> bool:
        """Whether a SYN that finds ``half_open`` (at least ``retry_above``) half-open streams
        of its object may have state; if not, the flow is forgotten (and answered RETRY).
        Below ``retry_above`` every SYN is admitted, without a call."""
        if not self._token_valid(segment.ack, h, segment.nonce, now):
            # Under load, state only for a source that proved it receives at its locator.
            self._forget(flow, "retry", notify=False)
            self.counters["syn-retry"] += 1
            retry = wire_stream.StreamSegment(
                wire_stream.StreamType.RETRY, segment.nonce, ack=self._token(h, segment.nonce, now)
            )
            # A server's packet to a client (TO_CLIENT, §3.3): never re-resolved to a replica.
            reply = h.reply(Proto.STREAM, self.dc_id, self.host_id, flags=Flags.TO_CLIENT)
            self._out.append((self.gateway, wire_header.encode(reply, wire_stream.encode(retry))))
            return False
        if half_open >= self.half_open_limit:
            self._forget(flow, "half-open-full", notify=False)
            self.drops["half-open-full"] += 1
            return False
        return True

    def _token(self, h: Header, nonce: int, now: float, period: int | None = None) -> int:
        """The retry token of a SYN: the period in the top 8 bits, a keyed hash of the
        period, the flow and its source below."""
        if period is None:
            period = int(now // TOKEN_PERIOD)
        if self._token_key is None:
            self._token_key = self._rng.getrandbits(256).to_bytes(32, "big")
        message = _TOKEN_INPUT.pack(period, h.flow, nonce, h.src_dc, h.src_host, h.src_socket, h.obj)
        mac = int.from_bytes(hashlib.blake2b(message, key=self._token_key, digest_size=8).digest())
        return ((period & 0xFF) << _MAC_BITS) | (mac >> (64 - _MAC_BITS)) or 1

    def _token_valid(self, token: int, h: Header, nonce: int, now: float) -> bool:
        if not token:
            return False
        current = int(now // TOKEN_PERIOD)
        for period in (current, current - 1):
            if token >> _MAC_BITS == period & 0xFF and token == self._token(h, nonce, now, period):
                return True
        return False
