"""Malformed datagrams for the demo: every node must drop and count each one (docs/protocol.md §7)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter

from ..ids import ObjectId
from ..runtime.aio import Address
from ..wire import header as wire_header
from ..wire.header import MAX_TTL, VERSION, Header, Proto

__all__ = ["inject_junk"]


def _junk(rng: random.Random, template: bytes) -> list[bytes]:
    """Malformed datagrams, one kind after another: each is invalid for a known reason."""
    out = []
    for i in range(40):
        kind = i % 6
        if kind == 0:  # truncated header
            out.append(template[: rng.randrange(0, wire_header.HEADER_LEN)])
        elif kind == 1:  # random bytes with a wrong version byte
            data = bytearray(rng.randbytes(rng.randint(1, 300)))
            data[0] = rng.choice([0, 2, 7, 255])
            out.append(bytes(data))
        elif kind == 2:  # wrong version, otherwise fine
            out.append(bytes([VERSION + 1]) + template[1:])
        elif kind == 3:  # unknown proto
            out.append(template[:1] + bytes([99]) + template[2:])
        elif kind == 4:  # unknown flags
            out.append(template[:2] + bytes([0x80]) + template[3:])
        else:  # TTL exhausted
            out.append(template[:3] + bytes([0]) + template[4:])
    return out


async def inject_junk(targets: dict[str, Address], rng: random.Random, per_node: int) -> Counter[str]:
    """Send ``per_node`` malformed datagrams to each target, a few milliseconds apart; how
    many reached the socket per target (every one must be dropped and counted there)."""
    template = wire_header.encode(
        Header(Proto.DATAGRAM, 1, ObjectId.from_name("junk").raw, ttl=MAX_TTL), b"x" * 12
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent: Counter[str] = Counter()
    batches = [(name, address, _junk(rng, template)) for name, address in targets.items()]
    try:
        for round_ in range(per_node):
            for name, address, datagrams in batches:
                try:
                    sock.sendto(datagrams[round_ % len(datagrams)], address)
                    sent[name] += 1
                except OSError:  # a full buffer, or (netns) a node whose namespace went away
                    pass
            await asyncio.sleep(0.002)
    finally:
        sock.close()
    return sent
