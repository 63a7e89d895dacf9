"""Control-plane messages between nodes and the controller (docs/protocol.md §6).

Typed records (msgspec ``Struct``) encoded as MessagePack and framed on a byte stream by a
4-byte big-endian length::

    +--------+--------+--------+--------+----------------------------+
    |        frame length (32)          |  msgpack record (length)   |
    +--------+--------+--------+--------+----------------------------+

A frame of length 0 carries no record: it is the keepalive (``KEEPALIVE_FRAME``), which a
reader takes as a sign of life and nothing else (§6.6).

Every record carries its type as a tag (``{"type": "hello", ...}``), so one decoder reads
them all. Object IDs travel as hex text, IDs as integers, addresses as ``[ip, port]``.

Bounds (docs/protocol.md §6.6): a frame is at most ``MAX_FRAME`` (1 MiB), refused from its
length prefix alone, before any of it is buffered; every field a peer can grow has a type and
a range (names, weights 1..65535, ports 1..65535, list lengths, admin arguments scalars only),
checked by the decoder. Flow-state transfers that would not fit one frame are sent in parts
(``FlowsOut.more``, ``MigrateIn.more``; ``chunk_states``).
"""

from __future__ import annotations

import struct
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..errors import MalformedPacket

__all__ = [
    "FRAME",
    "KEEPALIVE_FRAME",
    "AdminReply",
    "AdminRequest",
    "MAX_FRAME",
    "MAX_FRAME_FROM_CONTROLLER",
    "MAX_WEIGHT",
    "Bind",
    "ControlMessage",
    "Drain",
    "DEMAND_OBJECTS",
    "Demand",
    "DrainDone",
    "FlowsOut",
    "MigrateIn",
    "MigrateOut",
    "Refused",
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
    "chunk_states",
    "decode",
    "encode",
    "encode_value",
    "frame",
]

FRAME = struct.Struct("!I")
#: an empty frame: a node's keepalive, which only keeps its connection from going idle (§6.6)
KEEPALIVE_FRAME = FRAME.pack(0)
#: the largest record body; a longer length prefix closes the connection (§6.6)
MAX_FRAME = 1024 * 1024
#: what a node or an operator accepts from the controller it verified by its certificate:
#: table syncs of a large network are not chunked yet (planned, docs/protocol.md §6.2)
MAX_FRAME_FROM_CONTROLLER = 64 * 1024 * 1024
#: the largest replica weight: a sum over 2^16 replicas still fits 32 bits (§6.6)
MAX_WEIGHT = 65535

Name = Annotated[str, Meta(max_length=64)]
Text = Annotated[str, Meta(max_length=256)]
ObjectHex = Annotated[str, Meta(max_length=64)]
Port = Annotated[int, Meta(ge=1, le=65535)]
Address = tuple[Annotated[str, Meta(max_length=64)], Port]
Weight = Annotated[int, Meta(ge=1, le=MAX_WEIGHT)]
#: [target ID, weight] pairs of a replica set: DC IDs (wide area) or Host IDs (in a DC),
#: sorted by ID. Empty in an exact entry: "no live replica", which a prefix rule does not
#: override (docs/protocol.md §3.2). Tuples, so a switch can intern equal sets.
Replicas = tuple[tuple[int, int], ...]
#: an admin argument: a scalar, never a container (so a request cannot nest)
AdminValue = str | int | float | bool | None
#: the largest control record the controller builds (a part of a sync or of a delta): half
#: the frame limit, so a part always fits
RECORD_BUDGET = 512 * 1024


class Hello(msgspec.Struct, tag="hello", frozen=True):
    """First message of a node on its control connection."""

    node: Name
    role: Name  # "host" | "flow-switch" | "object-switch"
    dc: Name = ""  # switches: the DC they belong to
    gateway: Name = ""  # hosts: the flow switch they attach to
    #: the node's data-plane UDP address, if it has one: an IP literal the node's
    #: certificate or its connection vouches for (§6.6)
    address: Address | None = None


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    """The controller's answer to ``Hello``: the IDs it assigned."""

    node: str
    dc_id: int
    host_id: int = 0
    gateway_address: Address | None = None
    heartbeat_interval: float = 0.2
    dc: str = ""  # the name of DC ``dc_id``
    #: the controller cuts this host's control connection when it is silent this long (s);
    #: the host keeps it alive every third of it (0: not said, the node's default, §6.6)
    idle_timeout: float = 0.0


class Refused(msgspec.Struct, tag="refused", frozen=True):
    """Controller -> node: its ``Hello`` was refused (``reason``); the connection closes."""

    reason: Text


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    """A host is alive; from a switch, only keeps its idle connection open (§6.6)."""

    node: Name
    seq: int


class Bind(msgspec.Struct, tag="bind", frozen=True):
    """A host serves a replica of ``obj`` (hex) with ``weight``. An owned object needs
    ``grant``: a ``core.ownership.Grant`` signed by its owner that names this host or its
    datacenter (§6.7)."""

    obj: ObjectHex
    weight: Weight = 1
    name: Text = ""  # the human name, for tables and reports
    grant: Annotated[bytes, Meta(max_length=1024)] = b""
    #: the object's resolution policy (docs/protocol.md §3.5): "nearest", "weighted", or
    #: "" to leave it as it is (a new object: "nearest"); the latest Bind that names one wins
    policy: Annotated[str, Meta(max_length=16)] = ""
    #: new flows per second this replica takes before its DC spills to the next nearest
    #: (docs/protocol.md §3.5); 0: no limit
    capacity: Annotated[float, Meta(ge=0, le=1e9)] = 0.0


class Unbind(msgspec.Struct, tag="unbind", frozen=True):
    obj: ObjectHex


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

    Locality (docs/protocol.md §3.5), object switches only: ``dc_costs`` (source DC ID ->
    destination DC ID -> route cost in microseconds), ``policies`` (Object ID hex -> policy
    name, only for objects not under the default ``nearest``) and ``spill`` (Object ID hex ->
    [DC ID, source DC ID, accept fraction out of 65536] for the replica DCs that take only
    part of the flows a source offers them; source 0: every source without its own line).
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
    dc_costs: dict[int, dict[int, int]] = {}
    policies: dict[str, Annotated[str, Meta(max_length=16)]] = {}
    spill: dict[str, tuple[tuple[int, int, int], ...]] = {}


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
    dc_costs: list[int] = []
    policies: list[str] = []
    spill: list[str] = []


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

    node: Name
    up: Annotated[list[Name], Meta(max_length=4096)] = []
    down: Annotated[list[Name], Meta(max_length=4096)] = []


#: objects one ``Demand`` report lists at most (a switch counts no more than that)
DEMAND_OBJECTS = 1024


class Demand(msgspec.Struct, tag="demand", frozen=True):
    """Object switch -> controller: the first packets it resolved at the wide-area level
    in the last ``interval`` seconds, per object and source DC ID, for the objects whose
    replicas declare a capacity (those with a ``spill`` entry; docs/protocol.md §3.5).
    Sent about once a second while there are any, and once more with ``flows`` empty when
    they stop; the controller's spill-over plan follows the sum over the object switches."""

    node: Name
    interval: Annotated[float, Meta(gt=0, le=3600)]
    #: which worker process of a switch run as several (``--workers``) counted it, from 1;
    #: 0: the switch itself. The controller sums the latest report of each.
    worker: Annotated[int, Meta(ge=0, le=4096)] = 0
    flows: Annotated[
        dict[ObjectHex, Annotated[dict[int, Annotated[int, Meta(ge=0, le=1 << 32)]], Meta(max_length=4096)]],
        Meta(max_length=DEMAND_OBJECTS),
    ] = {}


class NotLeader(msgspec.Struct, tag="not-leader", frozen=True):
    """A standby controller replica to a node that connected to it: go to ``leader``
    (``None``: no replica leads right now; try the others) (docs/protocol.md §6.8)."""

    leader: Address | None = None


class SyncRequest(msgspec.Struct, tag="sync-request", frozen=True):
    """A switch missed a delta: it asks for a full sync."""

    node: str
    have_version: int


class AdminRequest(msgspec.Struct, tag="admin", frozen=True):
    """An operator's command to the controller (``scaffold status``, churn and fault
    commands). It may be the first record on a connection: no ``Hello`` needed."""

    id: int
    command: Name
    args: Annotated[dict[Name, AdminValue], Meta(max_length=16)] = {}


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

    name: Annotated[str, Meta(max_length=128)]
    value: int | float
    labels: Annotated[dict[Name, Text], Meta(max_length=8)] = {}


class NodeStats(msgspec.Struct, tag="node-stats", frozen=True):
    """Node -> controller: the node's metrics (its core's and its runtime's), for ``scaffold
    status`` (sent every few seconds and after each table change)."""

    node: Name
    role: Name
    metrics: Annotated[list[MetricSample], Meta(max_length=4096)] = []
    #: the node's latest refinement trace hops (packets flagged TRACE), at most 32:
    #: [Flow ID, Object ID hex, role, dst DC, dst Host, dst Socket, TTL, time]
    trace: Annotated[list[tuple[int, ObjectHex, Name, int, int, int, int, float]], Meta(max_length=32)] = []


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
    (``wire.flow_state`` records) for ``to_host``. With ``more``, further parts follow (the
    flows did not fit one frame); the last part has ``more`` false."""

    obj: ObjectHex
    to_host: Name
    name: Text
    weight: Weight
    resumable: bool
    states: list[bytes]
    more: bool = False


class MigrateIn(msgspec.Struct, tag="migrate-in", frozen=True):
    """Controller -> host: serve ``obj`` from now on, and continue these flows (one part
    of ``FlowsOut``; ``more``: further parts follow)."""

    obj: ObjectHex
    name: Text
    weight: Weight
    resumable: bool
    states: list[bytes]
    more: bool = False


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
    | Demand
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
    | Refused
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
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedPacket("bad-control", str(exc)[:200]) from None


def frame(message: ControlMessage) -> bytes:
    """The record framed for a stream."""
    body = _encoder.encode(message)
    return FRAME.pack(len(body)) + body


#: what the parts of one flow-state transfer may carry besides the states themselves
_PART_OVERHEAD = 4096


def chunk_states(states: list[bytes], limit: int = MAX_FRAME - _PART_OVERHEAD) -> list[list[bytes]]:
    """Split flow states into parts whose records each fit one frame (``FlowsOut.more``);
    at least one part, maybe empty. A state is never split: one larger than ``limit`` goes
    alone (and the receiver refuses its frame)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for state in states:
        cost = len(state) + 5  # msgpack bin32 header
        if parts[-1] and size + cost > limit:
            parts.append([])
            size = 0
        parts[-1].append(state)
        size += cost
    return parts


class FrameDecoder:
    """Reassembles framed records from stream chunks (sans-IO).

    ``feed(chunk)`` returns the complete records; an empty frame (``KEEPALIVE_FRAME``) is
    none, and is passed over without a decode. A length prefix over ``MAX_FRAME`` raises
    ``MalformedPacket("bad-length")`` as soon as its 4 bytes are in, so at most one frame
    plus one chunk is ever buffered; an undecodable record raises ``bad-control``. The
    caller closes the connection on either.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.limit = limit

    @property
    def partial(self) -> bool:
        """Part of a frame is buffered (the runtime's read deadline runs)."""
        return bool(self._buffer)

    def feed(self, chunk: bytes) -> list[ControlMessage]:
        self._buffer += chunk
        out: list[ControlMessage] = []
        while len(self._buffer) >= FRAME.size:
            (length,) = FRAME.unpack_from(self._buffer)
            if length > self.limit:
                self._buffer.clear()
                raise MalformedPacket("bad-length", f"control frame of {length} bytes")
            end = FRAME.size + length
            if len(self._buffer) < end:
                break
            if not length:  # a keepalive: it only had to arrive
                del self._buffer[:end]
                continue
            body = bytes(self._buffer[FRAME.size : end])
            del self._buffer[:end]
            out.append(decode(body))
        return out
