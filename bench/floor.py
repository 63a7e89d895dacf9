"""The floor of a Python ingress: the least a pipeline of the deployment's shape does.

A peer for ``bench/ingress.py`` (its ``floor-1p`` and ``floor-3p`` setups), not a benchmark of
its own. It carries a client's TCP connection to a replica the way the scaffold ingress does
-- client --TCP--> ingress --UDP--> switch --UDP--> publisher --TCP--> replica, and back -- on
uvloop, with nothing else: no transport (no sequence numbers, acknowledgments, retransmission
or flow control), no names, no health checks, no failover. Each datagram is a 5-byte header
(direction, connection id) and one chunk of bytes; an empty chunk closes the connection. The
switch forwards by the direction byte alone (one index); the ingress and the publisher find
the connection by its id (one dict lookup). So what it spends per request is what any Python
program of that shape spends on the event loop, the system calls and the callbacks -- the floor
under ``scaffold ingress`` + ``scaffold up`` + ``scaffold publish``, whatever their protocol
does. UDP on loopback with large socket buffers loses nothing at these rates; nothing here
would survive a loss.

    python bench/floor.py --listen PORT --replicas P1,P2            # one process, one loop
    python bench/floor.py --role switch --switch S --ingress I --publisher P
    python bench/floor.py --role ingress --listen PORT --switch S --ingress I
    python bench/floor.py --role publisher --replicas P1,P2 --switch S --publisher P

(``S``, ``I`` and ``P``: the three UDP ports on 127.0.0.1.) New connections to the replicas
go round-robin, one per client connection.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import struct

import uvloop

LOCAL = "127.0.0.1"
#: direction (0: towards the replica, 1: towards the client), connection id
HEADER = struct.Struct("!BI")
#: the most bytes of a chunk in one datagram
CHUNK = 60_000
#: each UDP socket's buffers: a burst of every connection's datagram is never dropped
SOCKET_BUFFER = 4 << 20

Address = tuple[str, int]


def udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.bind((LOCAL, port))
    sock.setblocking(False)
    return sock


def send_chunks(
    transport: asyncio.DatagramTransport, direction: int, cid: int, data: bytes, to: Address
) -> None:
    for start in range(0, len(data), CHUNK):
        transport.sendto(HEADER.pack(direction, cid) + data[start : start + CHUNK], to)


class Switch(asyncio.DatagramProtocol):
    """Forwards each datagram by its direction byte: to the publisher or to the ingress."""

    def __init__(self, hops: tuple[Address, Address]) -> None:
        self.hops = hops
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if data and data[0] < 2:
            self.transport.sendto(data, self.hops[data[0]])  # type: ignore[union-attr]


class _End(asyncio.DatagramProtocol):
    """The ingress or the publisher: a UDP socket to the switch and the TCP connections it
    carries (its legs), by connection id."""

    def __init__(self, switch: Address) -> None:
        self.switch = switch
        self.transport: asyncio.DatagramTransport | None = None
        self.legs: dict[int, _Leg] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]


class _Leg(asyncio.Protocol):
    """One TCP connection of an end: what it receives goes to the switch as datagrams of
    ``direction``, and its end as an empty one."""

    direction = 0

    def __init__(self, end: _End, cid: int) -> None:
        self.end = end
        self.cid = cid
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        end = self.end
        send_chunks(end.transport, self.direction, self.cid, data, end.switch)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        end = self.end
        if end.legs.pop(self.cid, None) is not None:
            end.transport.sendto(HEADER.pack(self.direction, self.cid), end.switch)  # type: ignore[union-attr]


class Ingress(_End):
    """Accepts clients; sends their bytes to the switch, and the switch's to them."""

    def __init__(self, switch: Address) -> None:
        super().__init__(switch)
        self.ids = itertools.count()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) < HEADER.size:
            return
        _, cid = HEADER.unpack_from(data)
        client = self.legs.get(cid)
        if client is None or client.transport is None:
            return
        if len(data) == HEADER.size:  # the replica closed
            del self.legs[cid]
            client.transport.close()
        else:
            client.transport.write(data[HEADER.size :])

    def client(self) -> asyncio.Protocol:
        cid = next(self.ids)
        leg = self.legs[cid] = _Leg(self, cid)
        return leg


class Publisher(_End):
    """Connects to a replica for each new connection id, and carries its bytes both ways."""

    def __init__(self, switch: Address, replicas: list[Address]) -> None:
        super().__init__(switch)
        self.replicas = itertools.cycle(replicas)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) < HEADER.size:
            return
        _, cid = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        target = self.legs.get(cid)
        if target is None:
            if not payload:
                return
            target = self.legs[cid] = _Target(self, cid)
            asyncio.get_running_loop().create_task(target.connect(next(self.replicas)))
        assert isinstance(target, _Target)
        target.send(payload)


class _Target(_Leg):
    """A connection to a replica: what comes for it before it is made is held."""

    direction = 1

    def __init__(self, publisher: Publisher, cid: int) -> None:
        super().__init__(publisher, cid)
        self.held: list[bytes] = []

    async def connect(self, replica: Address) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, *replica)
        except OSError:
            self.connection_lost(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        for data in self.held:
            self.send(data)
        self.held.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.held.append(data)
        elif data:
            self.transport.write(data)
        else:  # the client closed
            self.end.legs.pop(self.cid, None)
            self.transport.close()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    replicas = [(LOCAL, int(p)) for p in args.replicas.split(",")] if args.replicas else []
    one = args.role is None
    switch_port = 0 if one else args.switch
    roles = ("switch", "ingress", "publisher") if one else (args.role,)
    socks = {role: udp_socket(0 if one else getattr(args, role)) for role in roles}
    ports = {role: sock.getsockname()[1] for role, sock in socks.items()}
    switch = (LOCAL, ports["switch"] if one else switch_port)
    if "switch" in roles:
        hops = (
            ((LOCAL, ports["publisher"]), (LOCAL, ports["ingress"]))
            if one
            else (
                (LOCAL, args.publisher),
                (LOCAL, args.ingress),
            )
        )
        await loop.create_datagram_endpoint(lambda: Switch(hops), sock=socks["switch"])
    if "publisher" in roles:
        await loop.create_datagram_endpoint(lambda: Publisher(switch, replicas), sock=socks["publisher"])
    if "ingress" in roles:
        ingress = Ingress(switch)
        await loop.create_datagram_endpoint(lambda: ingress, sock=socks["ingress"])
        await loop.create_server(ingress.client, LOCAL, args.listen, backlog=1024)
    await asyncio.Event().wait()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--role", choices=("switch", "ingress", "publisher"), help="one part (default: all three)"
    )
    parser.add_argument("--listen", type=int, help="the ingress's TCP port")
    parser.add_argument("--replicas", help="the replicas' TCP ports on 127.0.0.1, comma-separated")
    for role in ("switch", "ingress", "publisher"):
        parser.add_argument(f"--{role}", type=int, default=0, help=f"the {role}'s UDP port (a part of three)")
    args = parser.parse_args(argv)
    if args.role in (None, "ingress") and not args.listen:
        parser.error("--listen PORT is needed for the ingress")
    if args.role in (None, "publisher") and not args.replicas:
        parser.error("--replicas P1,P2 is needed for the publisher")
    if args.role is not None and not (args.switch and args.ingress and args.publisher):
        parser.error("a part of three needs --switch, --ingress and --publisher (UDP ports)")
    return args


if __name__ == "__main__":
    uvloop.run(main(parse()))
