"""A flow's complete state, serialized to move it to another host (docs/protocol.md §5.4).

MessagePack of ``FlowState``: the flow's identity (Flow ID, nonce, Object ID), its locators
and counters, and for a stream the transport's own snapshot (``transport.snapshot``). The
restoring host keeps the Socket ID, so the peer's fully refined packets still demultiplex.
"""

from __future__ import annotations

import msgspec

from ..errors import MalformedPacket

__all__ = ["FLOW_STATE_VERSION", "FlowState", "decode", "encode"]

FLOW_STATE_VERSION = 1


class FlowState(msgspec.Struct, frozen=True, kw_only=True):
    version: int = FLOW_STATE_VERSION
    socket_id: int
    flow: int
    nonce: int
    obj: bytes
    proto: int
    role: str  # "client" | "server"
    peer_dc: int
    peer_host: int
    peer_socket: int
    served_by: list[int] = []
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    #: ``StreamConnection.export_state()`` for a stream flow
    transport: bytes | None = None


_decoder: msgspec.msgpack.Decoder[FlowState] = msgspec.msgpack.Decoder(FlowState)


def encode(state: FlowState) -> bytes:
    return msgspec.msgpack.encode(state)


def decode(data: bytes) -> FlowState:
    """Decode untrusted flow state.

    Raises:
        MalformedPacket: ``bad-flow-state`` (undecodable, or an unknown version).
    """
    try:
        state = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise MalformedPacket("bad-flow-state", str(exc)) from None
    if state.version != FLOW_STATE_VERSION:
        raise MalformedPacket("bad-flow-state", f"version {state.version}")
    return state
