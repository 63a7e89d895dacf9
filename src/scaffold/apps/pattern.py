"""A verifiable byte stream: the byte at every offset is a pure function of the offset.

A content service that serves ``pattern(offset, n)`` is resumable by construction (any
replica continues from any offset), and a receiver checks every byte with ``PatternChecker``,
which also tells lost bytes from duplicated ones: the stream is made of 1 KiB blocks that
start with their own absolute offset, so after a mismatch the next block header says how
far the stream jumped.

    block k:  | offset k*1024 (64-bit) | 1016 bytes derived from k |
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["BLOCK", "PatternChecker", "pattern"]

BLOCK = 1024
_HEADER = struct.Struct("!Q")
_BODY = BLOCK - _HEADER.size
_SEED = hashlib.sha256(b"scaffold pattern").digest() * (_BODY // 32 + 3)  # rotations up to 63


def _block(index: int) -> bytes:
    rotate = (index * 37) % 64
    return _HEADER.pack(index * BLOCK) + _SEED[rotate : rotate + _BODY]


def pattern(offset: int, length: int) -> bytes:
    """``length`` bytes of the stream starting at absolute ``offset``."""
    if length <= 0:
        return b""
    first, last = offset // BLOCK, (offset + length - 1) // BLOCK
    data = b"".join(_block(i) for i in range(first, last + 1))
    start = offset - first * BLOCK
    return data[start : start + length]


class PatternChecker:
    """Checks a received pattern stream byte by byte.

    ``offset`` is how many bytes were verified in order; ``lost`` and ``duplicated`` count
    bytes skipped or repeated (detected from block headers); ``corrupted`` counts bytes that
    matched nothing.
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.lost = 0
        self.duplicated = 0
        self.corrupted = 0
        self._pending = b""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.corrupted)

    def feed(self, data: bytes) -> None:
        data = self._pending + data
        self._pending = b""
        while data:
            expected = pattern(self.offset, len(data))
            if data == expected:
                self.offset += len(data)
                return
            same = _common_prefix(data, expected)
            self.offset += same
            data = data[same:]
            shift = self._resync(data)
            if shift is None:
                if len(data) < 2 * BLOCK:
                    self._pending = data  # wait for more bytes to find a block header
                    return
                self.corrupted += BLOCK
                self.offset += BLOCK
                data = data[BLOCK:]
                continue
            position, header_offset = shift
            start = header_offset - position  # where the bytes before the header claim to be
            if position and data[:position] != pattern(max(0, start), position):
                self.corrupted += position
            if start > self.offset:
                self.lost += start - self.offset
            elif start < self.offset:
                self.duplicated += self.offset - start
            self.offset = header_offset
            data = data[position:]

    def _resync(self, data: bytes) -> tuple[int, int] | None:
        """Find a block header in ``data`` whose block follows: (its position, its offset)."""
        for position in range(0, len(data) - BLOCK + 1):
            (value,) = _HEADER.unpack_from(data, position)
            if value % BLOCK == 0 and data[position : position + BLOCK] == _block(value // BLOCK):
                return position, value
        return None


def _common_prefix(a: bytes, b: bytes) -> int:
    low, high = 0, min(len(a), len(b))
    while low < high:  # binary search on equal prefixes: fast for long matches
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low
