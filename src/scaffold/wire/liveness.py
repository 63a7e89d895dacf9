"""Liveness bundles: the keepalives of many stream flows in one packet (proto 5,
docs/protocol.md §4.4).

A host whose streams to one peer host are due for a keepalive sends one PROBE listing them;
the peer refreshes each flow it holds under that Socket ID and nonce and returns the list of
those it holds in an ANSWER (never longer than the probe; empty when it holds none of them).
The packet travels in a SCAFFOLD header from host to host (destination Socket ID 0); its
body::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     type      |  reserved (0) |          entry count          |   0
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        bundle id (32)                         |   4
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Socket ID (32) of the flow at the receiver           |   8  } entry,
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+     } 12 bytes,
    |                        flow nonce (64)                        |  12  } count
    |                                                               |      } times
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The nonce in each entry is what lets a flow's keepalive travel outside the flow's own
packets: only a sender that knows it refreshes the flow (the nonce guard of §3.4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import MalformedPacket, UsageError

__all__ = ["ENTRY", "FIXED", "MAX_ENTRIES", "Bundle", "BundleType", "encode", "parse"]

FIXED = struct.Struct("!BxHI")
ENTRY = struct.Struct("!IQ")
#: entries per packet: a bundle and its header stay under 1200 bytes (76 + 8 + 90 * 12 = 1164)
MAX_ENTRIES = 90


class BundleType(IntEnum):
    #: are these flows alive at your end? (their keepalives)
    PROBE = 1
    #: these are: the entries of the probe this host holds, addressed by the prober's Socket IDs
    ANSWER = 2


_TYPES = frozenset(int(t) for t in BundleType)
#: a PROBE lists at least one flow; an ANSWER may hold none of them
_FEWEST = {BundleType.PROBE: 1, BundleType.ANSWER: 0}


@dataclass(frozen=True, slots=True)
class Bundle:
    type: BundleType
    bundle_id: int
    #: (Socket ID at the receiver, nonce) per flow
    entries: list[tuple[int, int]]


def encode(bundle: Bundle) -> bytes:
    """Serialize a bundle: a PROBE of 1 to ``MAX_ENTRIES`` entries, an ANSWER of 0 to
    ``MAX_ENTRIES``.

    Raises:
        UsageError: too many entries, or a PROBE of none.
    """
    count = len(bundle.entries)
    if not _FEWEST[bundle.type] <= count <= MAX_ENTRIES:
        raise UsageError(f"a liveness {bundle.type.name} holds 1..{MAX_ENTRIES} entries, not {count}")
    pack = ENTRY.pack
    return FIXED.pack(bundle.type, count, bundle.bundle_id) + b"".join(pack(s, n) for s, n in bundle.entries)


def parse(data: bytes) -> Bundle:
    """Parse an untrusted bundle.

    Raises:
        MalformedPacket: ``truncated``, ``bad-bundle-type`` or ``bad-length`` (a PROBE of no
            entries, more than ``MAX_ENTRIES``, or a size that is not the entries').
    """
    if len(data) < FIXED.size:
        raise MalformedPacket("truncated", f"liveness bundle of {len(data)} bytes")
    kind, count, bundle_id = FIXED.unpack_from(data)
    if kind not in _TYPES:
        raise MalformedPacket("bad-bundle-type", f"type {kind}")
    if not _FEWEST[kind] <= count <= MAX_ENTRIES or len(data) != FIXED.size + count * ENTRY.size:
        raise MalformedPacket("bad-length", f"{len(data)} bytes for {count} entries")
    entries = list(ENTRY.iter_unpack(memoryview(data)[FIXED.size :]))
    return Bundle(BundleType(kind), bundle_id, entries)
