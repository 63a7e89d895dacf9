"""The reliable stream transport segment (proto 2, docs/protocol.md §4.2).

A stream segment follows the SCAFFOLD header. Network byte order, a fixed 44-byte part, then
``sack count`` SACK blocks, then ``payload length`` bytes of stream data::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     type      |     flags     |        payload length         |   0
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   receive window (32, bytes)                  |   4
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        flow nonce (64)                        |   8
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    sequence number (64)                       |  16
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 cumulative acknowledgment (64)                |  24
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    timestamp value (32)                       |  32
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    timestamp echo (32)                        |  36
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  sack count   |              reserved (0)                     |  40
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         SACK block start (32, offset above the ack)           |  44  } repeated
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+      } sack count
    |         SACK block end (32, offset above the ack)             |  48  } times (0..4)
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  payload (payload length bytes)  ...          |

Fields:

* ``type`` -- :class:`StreamType`. Only SYN, SYN-ACK, DATA, FIN and PROBE (padding) may carry
  payload.
* ``flags`` -- :class:`StreamFlags`; unknown bits are kept by the parser and ignored by the
  state machine (send them as zero).
* ``receive window`` -- free receive-buffer bytes above ``ack``: the sender may have
  sequence numbers up to ``ack + window`` outstanding.
* ``nonce`` -- the random 64-bit secret the initiator chose for the flow, in every segment.
  It replaces TCP's random initial sequence number as the guard against blind injection and
  old duplicates, so both directions simply start at stream offset 0.
* ``sequence number`` -- the stream offset of the first payload byte (of the FIN for an
  empty FIN). A FIN occupies one sequence number after the last data byte, as in TCP.
* ``ack`` -- the next sequence number the sender of the segment expects (valid when
  ``StreamFlags.ACK`` is set).
* ``timestamp value / echo`` -- RFC 7323-style timestamps in microseconds modulo 2**32;
  echo 0 means "nothing to echo". They give unambiguous RTT samples for retransmitted data.
* Per type: SYN has ``seq`` 0 and no ACK flag (the window is valid); it may carry the first
  bytes of the stream (data on SYN, docs/protocol.md §4.2.7) and, in ``ack``, a retry token
  (0: none). SYN-ACK has ``seq`` 0 and ``ack`` = the SYN bytes the server took. RETRY has no
  ACK flag and the token in ``ack``; NOT_HERE has nothing but the SYN's nonce. RESUME has no
  ACK flag and ``seq`` = ``ack`` = 0 (the window is valid); RESUME-ACK carries the offsets
  in ``seq`` / ``ack`` (see ``StreamType.RESUME_ACK``); RST and KEEPALIVE carry ``seq`` = the
  sender's next sequence number; PROBE carries the probed segment size in ``seq`` and padding
  as payload, PROBE-ACK echoes that ``seq`` and has no payload (path-MTU discovery,
  docs/protocol.md §4.2.6).
* SACK blocks -- up to :data:`MAX_SACK_BLOCKS` ranges ``[start, end)`` of out-of-order data
  the receiver holds (RFC 2018), encoded as 32-bit offsets above ``ack`` (the window is 32
  bits, so they always fit). SACK lets the sender repair several losses per round trip
  instead of one (plain NewReno), which matters on lossy paths. In :class:`StreamSegment`
  the blocks are absolute sequence numbers.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

import msgspec

from ..errors import MalformedPacket, UsageError

__all__ = [
    "FIXED",
    "FIXED_LEN",
    "MAX_SACK_BLOCKS",
    "NONCE",
    "TYPE_OFFSET",
    "SACK_BLOCK",
    "StreamFlags",
    "StreamSegment",
    "StreamType",
    "encode",
    "parse",
]

FIXED = struct.Struct("!BBHIQQQIIB3x")
FIXED_LEN = FIXED.size  # 44
#: where the segment type sits, and the flow nonce read in place: a host checks both before
#: it parses a segment (docs/protocol.md §3.4)
TYPE_OFFSET = 0
NONCE = struct.Struct("!8xQ")
SACK_BLOCK = struct.Struct("!II")
MAX_SACK_BLOCKS = 4
MAX_PAYLOAD = 0xFFFF


class StreamType(IntEnum):
    """Segment types (docs/protocol.md §4.2.1)."""

    #: client -> server: open the flow; carries the nonce, the client's window, maybe the
    #: first stream bytes (data on SYN) and a retry token in ``ack``.
    SYN = 1
    #: server -> client: accept; echoes the nonce; ``ack`` = the SYN bytes it took.
    SYN_ACK = 2
    #: stream data and/or acknowledgment (an empty DATA segment is a pure ACK).
    DATA = 3
    #: like DATA, and the stream ends after its payload (occupies one sequence number).
    FIN = 4
    #: abort the flow; never answered.
    RST = 5
    #: asks for an immediate ACK: keepalive and zero-window (persist) probe.
    KEEPALIVE = 6
    #: a host that does not know an established flow asks the peer for its offsets.
    RESUME = 7
    #: the answer: ``seq`` = next byte the new host should expect, ``ack`` = next byte it
    #: should send (docs/protocol.md §4.2.5).
    RESUME_ACK = 8
    #: path-MTU probe: padding as payload, ``seq`` = the segment size it tests; takes no
    #: sequence space (docs/protocol.md §4.2.6).
    PROBE = 9
    #: the answer to a PROBE that arrived: ``seq`` = the size it tested.
    PROBE_ACK = 10
    #: server -> client, instead of state for a SYN: send the SYN again with the token in
    #: ``ack`` (docs/protocol.md §4.2.8).
    RETRY = 11
    #: host -> client, instead of state for a SYN: no listener for the object here (the
    #: tables were stale); send the SYN again soon, re-resolved (docs/protocol.md §4.2.9).
    NOT_HERE = 12


class StreamFlags(IntFlag):
    NONE = 0
    #: the ack and window fields are valid.
    ACK = 0x01
    #: RESUME_ACK: the sender already received the stream end (FIN) of the other direction.
    FIN_RECEIVED = 0x02
    #: RESUME_ACK: the sender's own FIN was already acknowledged (its stream ended at seq-1).
    FIN_ACKED = 0x04


_TYPES = frozenset(int(t) for t in StreamType)
_TYPE_OF = {int(t): t for t in StreamType}  # a dict lookup per segment, not an enum call
_PAYLOAD_TYPES = frozenset(
    (StreamType.SYN, StreamType.SYN_ACK, StreamType.DATA, StreamType.FIN, StreamType.PROBE)
)


class StreamSegment(msgspec.Struct, frozen=True, gc=False):
    """One parsed stream segment (an immutable record; a msgspec Struct because one is built
    per segment, and building a frozen dataclass costs ten times as much)."""

    type: StreamType
    nonce: int
    seq: int = 0
    ack: int = 0
    window: int = 0
    flags: int = 0
    ts_value: int = 0
    ts_echo: int = 0
    #: absolute ``(start, end)`` sequence ranges, each ``ack < start < end <= ack + 2**32-1``.
    sack: tuple[tuple[int, int], ...] = ()
    payload: bytes = b""


def encode(segment: StreamSegment) -> bytes:
    """Serialize a segment.

    Raises:
        UsageError: a field does not fit its width, too many SACK blocks, or a SACK block
            not strictly above the ack.
    """
    sack = segment.sack
    ack = segment.ack
    if len(sack) > MAX_SACK_BLOCKS:
        raise UsageError(f"{len(sack)} SACK blocks, at most {MAX_SACK_BLOCKS}")
    try:
        parts = [
            FIXED.pack(
                segment.type,
                segment.flags,
                len(segment.payload),
                segment.window,
                segment.nonce,
                segment.seq,
                ack,
                segment.ts_value,
                segment.ts_echo,
                len(sack),
            )
        ]
        for start, end in sack:
            if not ack < start < end:
                raise UsageError(f"SACK block [{start}, {end}) not above ack {ack}")
            parts.append(SACK_BLOCK.pack(start - ack, end - ack))
    except struct.error as exc:
        raise UsageError(f"stream segment field out of range: {exc}") from exc
    if segment.payload:
        parts.append(segment.payload)
    return b"".join(parts)


def parse(data: bytes | memoryview) -> StreamSegment:
    """Parse an untrusted stream segment.

    Raises:
        MalformedPacket: ``truncated`` (shorter than its header, SACK blocks or payload
            length), ``bad-length`` (bytes after the payload, or payload on a type that
            carries none), ``bad-stream-type`` or ``bad-sack`` (too many blocks, or a block
            that is empty or not above the ack).
    """
    size = len(data)
    if size < FIXED_LEN:
        raise MalformedPacket("truncated", f"stream segment of {size} bytes")
    kind, flags, length, window, nonce, seq, ack, ts_value, ts_echo, count = FIXED.unpack_from(data)
    if kind not in _TYPES:
        raise MalformedPacket("bad-stream-type", f"type {kind}")
    if count > MAX_SACK_BLOCKS:
        raise MalformedPacket("bad-sack", f"{count} SACK blocks")
    payload_at = FIXED_LEN + count * SACK_BLOCK.size
    end = payload_at + length
    if size < end:
        raise MalformedPacket("truncated", f"{size} bytes, header and payload need {end}")
    if size > end:
        raise MalformedPacket("bad-length", f"{size - end} bytes after the payload")
    if length and kind not in _PAYLOAD_TYPES:
        raise MalformedPacket("bad-length", f"type {kind} with {length} payload bytes")
    sack: tuple[tuple[int, int], ...] = ()
    if count:
        blocks = []
        for offset in range(FIXED_LEN, payload_at, SACK_BLOCK.size):
            start, stop = SACK_BLOCK.unpack_from(data, offset)
            if not 0 < start < stop:
                raise MalformedPacket("bad-sack", f"block [{start}, {stop}) above the ack")
            blocks.append((ack + start, ack + stop))
        sack = tuple(blocks)
    return StreamSegment(
        _TYPE_OF[kind],
        nonce,
        seq,
        ack,
        window,
        flags,
        ts_value,
        ts_echo,
        sack,
        bytes(data[payload_at:end]),
    )
