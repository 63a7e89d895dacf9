"""The datagram transport segment (proto 1, docs/protocol.md §4.1).

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     type      |   reserved (0)                                |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        flow nonce (64)                        |
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     payload (to the end) ...                  |

The nonce is the random secret the initiator chose for the flow; the receiving host drops a
segment whose nonce differs from the one it learned with the flow's first packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import MalformedPacket

__all__ = ["NONCE", "SEGMENT", "DatagramSegment", "DatagramType", "encode", "parse"]

SEGMENT = struct.Struct("!BxxxQ")
#: the flow nonce, read in place from the start of a segment (a host checks it before parsing)
NONCE = struct.Struct("!4xQ")


class DatagramType(IntEnum):
    DATA = 1
    #: the sender closed its end; the receiver forgets the flow.
    CLOSE = 2
    #: no payload: the sender moved; its new locator is this packet's source (§5.4).
    MOVED = 3


_TYPES = frozenset(int(t) for t in DatagramType)


@dataclass(frozen=True, slots=True)
class DatagramSegment:
    type: DatagramType
    nonce: int
    payload: bytes = b""


def encode(segment: DatagramSegment) -> bytes:
    return SEGMENT.pack(segment.type, segment.nonce) + segment.payload


def parse(data: bytes) -> DatagramSegment:
    """Parse an untrusted datagram segment.

    Raises:
        MalformedPacket: ``truncated`` or ``bad-datagram-type``.
    """
    if len(data) < SEGMENT.size:
        raise MalformedPacket("truncated", f"datagram segment of {len(data)} bytes")
    kind, nonce = SEGMENT.unpack_from(data)
    if kind not in _TYPES:
        raise MalformedPacket("bad-datagram-type", f"type {kind}")
    return DatagramSegment(DatagramType(kind), nonce, bytes(data[SEGMENT.size :]))
