"""``StreamSnapshot``: a whole connection as one typed record, and its versioned encoding
(docs/protocol.md §4.2.5).

Each component exports and restores its own record: the sender (``SenderState``: the send
stream, the scoreboard, the RTT estimator and the congestion controller's state), the
receiver (``ReceiverState``: the receive stream and the ACK policy) and the segment
builder's timestamp clock (``BuilderState``); the snapshot composes
them with the connection's own fields. Times are not part of it: the restoring host re-arms
every timer from its own ``now``. The encoding is MessagePack of :class:`StreamSnapshot`,
whose ``version`` changes with its layout. Snapshots cross hosts (flow migration, §5.4), so
decoding treats them as untrusted bytes: anything wrong raises one
``MalformedPacket("bad-flow-state")``.
"""

from __future__ import annotations

import msgspec

from ..errors import MalformedPacket, ScaffoldError
from .builder import BuilderState
from .options import StreamOptions
from .receiver import ReceiverState
from .sender import SenderState
from .state import StreamState

__all__ = ["SNAPSHOT_VERSION", "StreamSnapshot", "decode", "encode"]

#: 1: one flat record; 2: one record per component.
SNAPSHOT_VERSION = 2
_STATES = frozenset(state.value for state in StreamState)


class StreamSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The complete state of a connection (``StreamConnection.snapshot()``)."""

    version: int
    role: str
    nonce: int
    state: str
    options: StreamOptions
    error_reason: str | None
    #: we shut down after the peer's FIN arrived: no TIME_WAIT at the end.
    closed_last: bool
    segments_received: int
    builder: BuilderState
    sender: SenderState
    receiver: ReceiverState
    drops: dict[str, int]

    def __post_init__(self) -> None:
        if self.version != SNAPSHOT_VERSION:
            raise ValueError(f"version {self.version}, not {SNAPSHOT_VERSION}")
        if self.role not in ("client", "server") or self.state not in _STATES:
            raise ValueError(f"role {self.role!r} in state {self.state!r}")
        if not 0 <= self.nonce < 2**64:
            raise ValueError("nonce out of range")
        if self.options.congestion != type(self.sender.congestion).__struct_config__.tag:
            raise ValueError(f"congestion state is not {self.options.congestion}")


class _Version(msgspec.Struct):
    version: int


_version_decoder = msgspec.msgpack.Decoder(_Version)
_decoder = msgspec.msgpack.Decoder(StreamSnapshot)


def encode(snapshot: StreamSnapshot) -> bytes:
    return msgspec.msgpack.encode(snapshot)


def decode(data: bytes) -> StreamSnapshot:
    """Decode an untrusted snapshot.

    Raises:
        MalformedPacket: ``bad-flow-state``: not MessagePack, wrong types, another version,
            invalid options, or inconsistent values.
    """
    try:
        version = _version_decoder.decode(data).version
        if version != SNAPSHOT_VERSION:
            raise MalformedPacket("bad-flow-state", f"stream snapshot version {version} unsupported")
        return _decoder.decode(data)
    except MalformedPacket:
        raise
    except (msgspec.MsgspecError, ValueError, ScaffoldError) as exc:
        # ValueError: invalid UTF-8 in a string; ScaffoldError: UsageError from the options.
        raise MalformedPacket("bad-flow-state", f"stream snapshot: {exc}") from None
