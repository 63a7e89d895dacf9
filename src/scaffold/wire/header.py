"""The SCAFFOLD header (docs/protocol.md §2).

Every data-plane packet is ``UDP | SCAFFOLD header | transport segment``. The header is a
fixed 76 bytes, network byte order::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    version    |     proto     |     flags     |      ttl      |   0
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Flow ID (64)                           |   4
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                                                               |  12
    |               destination Object ID (256 bits)                |
    |                          ...                                  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    destination DC ID (32)                     |  44
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   destination Host ID (64)                    |  48
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  destination Socket ID (32)                   |  56
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      source DC ID (32)                        |  60
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     source Host ID (64)                       |  64
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    source Socket ID (32)                      |  72
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

A zero destination DC, Host or Socket ID means "not refined yet" (§3). Flow switches read
and rewrite only the fixed-offset fields below, without building a ``Header``; object
switches, which see only first packets and re-resolutions, parse the whole header.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

import msgspec

from ..errors import MalformedPacket
from ..ids import OBJECT_ID_BYTES

__all__ = [
    "DST_LOCATOR",
    "DST_OFFSET",
    "DELIVERY",
    "DST_ROUTE",
    "FLAGS_OFFSET",
    "HEADER",
    "HEADER_LEN",
    "HOP",
    "MAX_TTL",
    "ROUTING",
    "TTL_OFFSET",
    "VERSION",
    "Flags",
    "Header",
    "Proto",
    "encode",
    "parse",
    "presence",
]

VERSION = 1
MAX_TTL = 32

HEADER = struct.Struct("!BBBBQ32sIQIIQI")
HEADER_LEN = HEADER.size  # 76

# Nodes read and rewrite a few fields of a packet in place, without building a ``Header``;
# these are the only places that know where those fields sit (the diagram above).

#: (version, proto, flags, ttl, dst DC ID, dst Host ID): all a flow switch reads to route a
#: packet, in one call.
ROUTING = struct.Struct("!BBBB40xIQ")
#: (ttl, Flow ID, Object ID, dst DC ID, dst Host ID, dst Socket ID): a trace record's fields.
HOP = struct.Struct("!3xBQ32sIQI")
#: (version, proto, flags, Flow ID, Object ID, dst Host ID, dst Socket ID, src DC ID, src Host
#: ID, src Socket ID): what a host reads to deliver a segment of an established flow.
DELIVERY = struct.Struct("!BBBxQ32s4xQIIQI")
#: the flags byte (a node sets ``REDIRECTED`` in place) and the TTL byte (decremented per hop)
FLAGS_OFFSET = 2
TTL_OFFSET = 3
#: where the destination locator starts; ``DST_ROUTE`` and ``DST_LOCATOR`` are packed here.
DST_OFFSET = 44
#: (dst DC ID, dst Host ID): rewritten when a stale DC ID is corrected or a packet forwarded.
DST_ROUTE = struct.Struct("!IQ")
#: (dst DC ID, dst Host ID, dst Socket ID): rewritten by object switches.
DST_LOCATOR = struct.Struct("!IQI")
#: (dst DC ID, dst Host ID, dst Socket ID, src DC ID, src Host ID): the locators a host's
#: cached header of a flow was encoded for (``HostStackBase._emit`` compares them in place).
LOCATORS = struct.Struct("!IQIIQ")


class Proto(IntEnum):
    """What follows the header (docs/protocol.md §2.1)."""

    DATAGRAM = 1
    STREAM = 2
    SIGNAL = 3
    #: a host tells its gateway flow switch it is alive; never forwarded (§6.2)
    PRESENCE = 4
    #: host to host: keepalives of many stream flows in one packet (docs/protocol.md §4.4)
    LIVENESS = 5


class Flags(IntFlag):
    """Header flags (docs/protocol.md §2.2)."""

    NONE = 0
    #: every node that handles the packet records a refinement trace record.
    TRACE = 0x01
    #: the packet was re-resolved after its Host ID was cleared (failover, §5).
    REDIRECTED = 0x02
    #: sent by the server end of a flow: its destination is a client, which no object
    #: lookup can find again, so it is never re-resolved (§3.3, §5.1).
    TO_CLIENT = 0x04


_PROTOS = frozenset(int(p) for p in Proto)
_KNOWN_FLAGS = int(Flags.TRACE | Flags.REDIRECTED | Flags.TO_CLIENT)
# Enum members by value: a dict lookup per packet instead of an enum constructor call.
_PROTO_OF = {int(p): p for p in Proto}
_FLAGS_OF = {value: Flags(value) for value in range(_KNOWN_FLAGS + 1) if not value & ~_KNOWN_FLAGS}


class Header(msgspec.Struct, frozen=True, gc=False):
    """A parsed SCAFFOLD header. ``obj`` is the raw 32-byte destination Object ID. (An
    immutable record: a msgspec Struct, ten times cheaper to build than a frozen dataclass.)"""

    proto: Proto
    flow: int
    obj: bytes
    dst_dc: int = 0
    dst_host: int = 0
    dst_socket: int = 0
    src_dc: int = 0
    src_host: int = 0
    src_socket: int = 0
    flags: Flags = Flags.NONE
    ttl: int = MAX_TTL

    def with_dst(self, dc: int, host: int, socket: int) -> Header:
        """A copy with the destination locator replaced."""
        return msgspec.structs.replace(self, dst_dc=dc, dst_host=host, dst_socket=socket)

    def reply(
        self, proto: Proto, src_dc: int, src_host: int = 0, src_socket: int = 0, flags: Flags = Flags.NONE
    ) -> Header:
        """A header for the same flow and object, addressed to this packet's source."""
        return Header(
            proto,
            self.flow,
            self.obj,
            self.src_dc,
            self.src_host,
            self.src_socket,
            src_dc,
            src_host,
            src_socket,
            flags,
        )


def encode(header: Header, payload: bytes = b"") -> bytes:
    """The header's wire form followed by ``payload``."""
    return (
        HEADER.pack(
            VERSION,
            header.proto,
            header.flags,
            header.ttl,
            header.flow,
            header.obj,
            header.dst_dc,
            header.dst_host,
            header.dst_socket,
            header.src_dc,
            header.src_host,
            header.src_socket,
        )
        + payload
    )


def presence(src_dc: int, src_host: int) -> bytes:
    """A presence packet: a header alone, proto ``PRESENCE``, only the source set. The host's
    gateway takes it as a sign of life and drops it (docs/protocol.md §6.2)."""
    return HEADER.pack(VERSION, Proto.PRESENCE, 0, MAX_TTL, 0, bytes(32), 0, 0, 0, src_dc, src_host, 0)


def parse(data: bytes) -> Header:
    """Parse the header of an untrusted packet; the payload starts at ``HEADER_LEN``.

    Raises:
        MalformedPacket: reason ``truncated``, ``bad-version``, ``bad-proto``, ``bad-flags``
            or ``zero-object``.
    """
    if len(data) < HEADER_LEN:
        raise MalformedPacket("truncated", f"{len(data)} bytes, header needs {HEADER_LEN}")
    (
        version,
        proto,
        flags,
        ttl,
        flow,
        obj,
        dst_dc,
        dst_host,
        dst_socket,
        src_dc,
        src_host,
        src_socket,
    ) = HEADER.unpack_from(data)
    if version != VERSION:
        raise MalformedPacket("bad-version", f"version {version}, want {VERSION}")
    if proto not in _PROTOS:
        raise MalformedPacket("bad-proto", f"proto {proto}")
    if flags & ~_KNOWN_FLAGS:
        raise MalformedPacket("bad-flags", f"flags {flags:#04x}")
    if obj == _ZERO_OBJECT:
        raise MalformedPacket("zero-object", "the destination Object ID is all zero")
    return Header(
        _PROTO_OF[proto],
        flow,
        obj,
        dst_dc,
        dst_host,
        dst_socket,
        src_dc,
        src_host,
        src_socket,
        _FLAGS_OF[flags],
        ttl,
    )


_ZERO_OBJECT = bytes(OBJECT_ID_BYTES)
