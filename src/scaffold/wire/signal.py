"""Signals: messages the network sends to a host (proto 3, docs/protocol.md §4.3).

A signal travels in a SCAFFOLD header addressed to the host that caused it, with the
offending packet's Flow ID and Object ID, so the host can match it to a flow::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     type      |   reserved (0)                                |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          argument a (64)                      |
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          argument b (64)                      |
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

========================  ==========================  ==========================
type                      a                           b
========================  ==========================  ==========================
1 OBJECT_NOT_FOUND        0                           0
2 REFINE (stale DC ID)    Host ID                     its current DC ID
3 UNREACHABLE             DC ID or Host ID            0
========================  ==========================  ==========================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import MalformedPacket

__all__ = ["SIGNAL", "Signal", "SignalType", "encode", "parse"]

SIGNAL = struct.Struct("!BxxxQQ")


class SignalType(IntEnum):
    OBJECT_NOT_FOUND = 1
    REFINE = 2
    UNREACHABLE = 3


_TYPES = frozenset(int(t) for t in SignalType)


@dataclass(frozen=True, slots=True)
class Signal:
    type: SignalType
    a: int = 0
    b: int = 0


def encode(signal: Signal) -> bytes:
    return SIGNAL.pack(signal.type, signal.a, signal.b)


def parse(data: bytes) -> Signal:
    """Parse an untrusted signal body.

    Raises:
        MalformedPacket: ``truncated``, ``bad-length`` or ``bad-signal-type``.
    """
    if len(data) < SIGNAL.size:
        raise MalformedPacket("truncated", f"signal of {len(data)} bytes")
    if len(data) != SIGNAL.size:
        raise MalformedPacket("bad-length", f"signal of {len(data)} bytes, want {SIGNAL.size}")
    kind, a, b = SIGNAL.unpack(data)
    if kind not in _TYPES:
        raise MalformedPacket("bad-signal-type", f"type {kind}")
    return Signal(SignalType(kind), a, b)
