"""Control-plane messages between nodes and the controller (docs/protocol.md §6).

Typed records (msgspec ``Struct``) encoded as MessagePack and framed on a byte stream by a
4-byte big-endian length::

    +--------+--------+--------+--------+----------------------------+
    |        frame length (32)          |  msgpack record (length)   |
    +--------+--------+--------+--------+----------------------------+

Every record carries its type as a tag (``{"type": "hello", ...}``), so one decoder reads
them all. Object IDs travel as hex text, IDs as integers, addresses as ``[ip, port]``.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from ..errors import MalformedPacket

__all__ = [
    "FRAME",
    "AdminReply",
    "AdminRequest",
    "MAX_FRAME",
    "Bind",
    "ControlMessage",
    "Drain",
    "DrainDone",
    "FlowsOut",
    "MigrateIn",
    "MigrateOut",
    "Relocate",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "HostLiveness",
    "LinkSettings",
    "MetricSample",
    "NodeStats",
    "NotLeader",
    "RECORD_BUDGET",
    "SwitchTables",
    "SyncRequest",
    "TableDelta",
    "TableKeys",
    "TableSync",
    "Unbind",
    "Welcome",
    "decode",
    "encode",
    "encode_value",
    "frame",
]

FRAME = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024

Address = tuple[str, int]
#: [target ID, weight] pairs of a replica set: DC IDs (wide area) or Host IDs (in a DC),
#: sorted by ID. Empty in an exact entry: "no live replica", which a prefix rule does not
#: override (docs/protocol.md §3.2). Tuples, so a switch can intern equal sets.
Replicas = tuple[tuple[int, int], ...]
#: the largest control record the controller builds (a chunk of a sync or of a delta); the
#: frame limit of a control connection is larger, so a part always fits
RECORD_BUDGET = 512 * 1024


class Hello(msgspec.Struct, tag="hello", frozen=True):
    """First message of a node on its control connection."""

    node: str
    role: str  # "host" | "flow-switch" | "object-switch"
    dc: str = ""  # switches: the DC they belong to
    gateway: str = ""  # hosts: the flow switch they attach to
    address: Address | None = None  # the node's data-plane UDP address, if it has one


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    """The controller's answer to ``Hello``: the IDs it assigned."""

    node: str
    dc_id: int
    host_id: int = 0
    gateway_address: Address | None = None
    heartbeat_interval: float = 0.2


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    node: str
    seq: int


class Bind(msgspec.Struct, tag="bind", frozen=True):
    """A host serves a replica of ``obj`` (hex) with ``weight``."""

    obj: str
    weight: int = 1
    name: str = ""  # the human name, for tables and reports


class Unbind(msgspec.Struct, tag="unbind", frozen=True):
    obj: str


class SwitchTables(msgspec.Struct, frozen=True, omit_defaults=True):
    """A switch's forwarding state; also the 'upsert' half of a delta.

    Flow switches use ``dc_routes`` (DC ID -> next-hop node), ``host_routes`` (Host ID ->
    next-hop node in this DC), ``moved_hosts`` (Host ID -> its current DC, for stale DC IDs),
    ``object_switch`` (next hop towards this DC's object switch), ``attached`` (host name ->
    Host ID of the hosts it is the gateway of, whose presence it watches) and
    ``presence_timeout`` (seconds of silence after which such a host is reported down; 0:
    watch nobody). Object switches use
    ``wide`` (Object ID hex -> [DC ID, weight]), ``local`` (Object ID hex -> [Host ID,
    weight] in this DC), ``prefixes`` and ``local_prefixes`` ("hex/bits" -> the same, for
    every Object ID under an owner prefix) and ``gateway`` (the flow switch they hang off).
    ``peers`` maps neighbour node names to UDP addresses.
    """

    dc_routes: dict[int, str] = {}
    host_routes: dict[int, str] = {}
    moved_hosts: dict[int, int] = {}
    attached: dict[str, int] = {}
    presence_timeout: float = 0.0
    object_switch: str = ""
    gateway: str = ""
    wide: dict[str, Replicas] = {}
    local: dict[str, Replicas] = {}
    prefixes: dict[str, Replicas] = {}
    local_prefixes: dict[str, Replicas] = {}
    peers: dict[str, Address] = {}


class TableKeys(msgspec.Struct, frozen=True, omit_defaults=True):
    """Keys removed by a delta, per table of ``SwitchTables``."""

    dc_routes: list[int] = []
    host_routes: list[int] = []
    moved_hosts: list[int] = []
    attached: list[str] = []
    wide: list[str] = []
    local: list[str] = []
    prefixes: list[str] = []
    local_prefixes: list[str] = []
    peers: list[str] = []


class TableSync(msgspec.Struct, tag="sync", frozen=True):
    """The whole table at ``version`` (sent on connect and on request), in parts of at most
    ``RECORD_BUDGET`` bytes: every part but the last has ``more``; the switch applies them
    all at once when the last arrives, forwarding on its old tables until then (§6.2)."""

    version: int
    dc_id: int
    tables: SwitchTables
    more: bool = False


class TableDelta(msgspec.Struct, tag="delta", frozen=True):
    """The change from ``version - 1`` to ``version``, in parts like ``TableSync``."""

    version: int
    upsert: SwitchTables
    remove: TableKeys
    more: bool = False


class HostLiveness(msgspec.Struct, tag="liveness", frozen=True):
    """Flow switch -> controller: hosts attached to it that fell silent (``down``) or were
    heard again (``up``), from their presence packets (docs/protocol.md §6.2). Sent only on
    a change, so the controller's load follows churn, not the number of hosts."""

    node: str
    up: list[str] = []
    down: list[str] = []


class NotLeader(msgspec.Struct, tag="not-leader", frozen=True):
    """A standby controller replica to a node that connected to it: go to ``leader``
    (``None``: no replica leads right now; try the others) (docs/protocol.md §6.6)."""

    leader: Address | None = None


class SyncRequest(msgspec.Struct, tag="sync-request", frozen=True):
    """A switch missed a delta: it asks for a full sync."""

    node: str
    have_version: int


class AdminRequest(msgspec.Struct, tag="admin", frozen=True):
    """An operator's command to the controller (``scaffold status``, churn and fault
    commands). It may be the first record on a connection: no ``Hello`` needed."""

    id: int
    command: str
    args: dict[str, Any] = {}


class AdminReply(msgspec.Struct, tag="admin-reply", frozen=True):
    """The answer to ``AdminRequest`` ``id``: ``result`` when ``ok``, else ``error``."""

    id: int
    ok: bool
    result: Any = None
    error: str = ""


class LinkSettings(msgspec.Struct, tag="link-settings", frozen=True):
    """Controller -> node: change the egress link emulation towards neighbour ``peer``
    (``scaffold fault delay``; docs/deployment.md). ``None`` leaves a setting as it is;
    ``delay`` in seconds, ``loss`` as a fraction."""

    peer: str
    delay: float | None = None
    loss: float | None = None
    up: bool | None = None


class MetricSample(msgspec.Struct, array_like=True, frozen=True):
    """One value of one metric (docs/protocol.md §7): encoded as ``[name, value, labels]``.
    ``core/metrics.py`` defines the names; an empty ``labels`` is the metric's only value."""

    name: str
    value: int | float
    labels: dict[str, str] = {}


class NodeStats(msgspec.Struct, tag="node-stats", frozen=True):
    """Node -> controller: the node's metrics (its core's and its runtime's), for ``scaffold
    status`` (sent every few seconds and after each table change)."""

    node: str
    role: str
    metrics: list[MetricSample] = []
    #: the node's latest refinement trace hops (packets flagged TRACE), at most 32:
    #: [Flow ID, Object ID hex, role, dst DC, dst Host, dst Socket, TTL, time]
    trace: list[tuple[int, str, str, int, int, int, int, float]] = []


class Drain(msgspec.Struct, tag="drain", frozen=True):
    """Controller -> host: no new flows for ``obj`` will come; say ``DrainDone`` once the
    established ones have finished (docs/protocol.md §5.2)."""

    obj: str


class MigrateOut(msgspec.Struct, tag="migrate-out", frozen=True):
    """Controller -> host: hand the replica of ``obj`` and its live flows to ``to_host``."""

    obj: str
    to_host: str
    to_host_id: int
    to_dc_id: int


class FlowsOut(msgspec.Struct, tag="flows-out", frozen=True):
    """Host -> controller: the replica of ``obj`` left this host; here are its flows
    (``wire.flow_state`` records) for ``to_host``."""

    obj: str
    to_host: str
    name: str
    weight: int
    resumable: bool
    states: list[bytes]


class MigrateIn(msgspec.Struct, tag="migrate-in", frozen=True):
    """Controller -> host: serve ``obj`` from now on, and continue these flows."""

    obj: str
    name: str
    weight: int
    resumable: bool
    states: list[bytes]


class Relocate(msgspec.Struct, tag="relocate", frozen=True):
    """Controller -> host: you are attached to ``gateway`` in DC ``dc_id`` now (VM
    migration, or a mobile host's move). With ``announce`` the host tells every peer in-band,
    with each flow's nonce (docs/protocol.md §5.3, §5.4)."""

    gateway: str
    dc_id: int
    gateway_address: Address | None = None
    announce: bool = False


class DrainDone(msgspec.Struct, tag="drain-done", frozen=True):
    """Host -> controller: the last flow of drained ``obj`` ended; the replica is gone."""

    obj: str


ControlMessage = (
    Hello
    | Welcome
    | Heartbeat
    | Bind
    | Unbind
    | TableSync
    | TableDelta
    | SyncRequest
    | HostLiveness
    | NotLeader
    | AdminRequest
    | AdminReply
    | LinkSettings
    | NodeStats
    | Drain
    | MigrateOut
    | FlowsOut
    | MigrateIn
    | Relocate
    | DrainDone
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[ControlMessage] = msgspec.msgpack.Decoder(ControlMessage)


def encode(message: ControlMessage) -> bytes:
    """The record's MessagePack body (unframed)."""
    return _encoder.encode(message)


def encode_value(value: SwitchTables | TableKeys) -> bytes:
    """A part of a record as MessagePack, to embed in records as ``msgspec.Raw`` (the
    controller encodes the tables every object switch gets alike only once)."""
    return _encoder.encode(value)


def decode(body: bytes) -> ControlMessage:
    """Decode an untrusted record body.

    Raises:
        MalformedPacket: ``bad-control`` with msgspec's explanation.
    """
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise MalformedPacket("bad-control", str(exc)) from None


def frame(message: ControlMessage) -> bytes:
    """The record framed for a stream."""
    body = _encoder.encode(message)
    return FRAME.pack(len(body)) + body


class FrameDecoder:
    """Reassembles framed records from stream chunks (sans-IO).

    ``feed(chunk)`` returns the complete records. A frame longer than ``MAX_FRAME`` or an
    undecodable record raises ``MalformedPacket``; the caller closes the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[ControlMessage]:
        self._buffer += chunk
        out: list[ControlMessage] = []
        while len(self._buffer) >= FRAME.size:
            (length,) = FRAME.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise MalformedPacket("bad-length", f"control frame of {length} bytes")
            end = FRAME.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[FRAME.size : end])
            del self._buffer[:end]
            out.append(decode(body))
        return out
