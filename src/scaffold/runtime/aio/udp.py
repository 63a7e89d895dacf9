"""Batched UDP I/O for the ``aio`` runtime: GSO trains out, GRO trains in (docs/architecture.md §3.2).

Linux sends a *train* of datagrams to one address in one ``sendmsg`` when the socket is given
the segment size (``UDP_SEGMENT``, "GSO"), and hands a socket that asked for it (``UDP_GRO``)
the datagrams of one underlay flow coalesced into one buffer, with their size in a control
message. The datagrams stay datagrams on the wire: a receiver that did not ask for GRO gets
them one by one. Both are what QUIC stacks use to send and read many packets per system call.

:class:`UdpEndpoint` is one node's data-plane socket:

* :meth:`~UdpEndpoint.read` returns one datagram or one train (its bytes and segment size) in
  a buffer reused by the next read: callers copy what they keep;
* :meth:`~UdpEndpoint.push` queues a datagram for an address; consecutive datagrams for the
  same address of one size (the last may be shorter) go out as one train when
  :meth:`~UdpEndpoint.flush` (or the next datagram that cannot join) sends it;
* datagrams are sent with "don't fragment" (``IP_PMTUDISC_PROBE``): a datagram larger than the
  interface allows is refused (``send-too-big``), never fragmented, so path-MTU probing
  (docs/protocol.md §4.2.6) measures what the path really carries.

Kernel support is checked once (:func:`offload_support`); without it, or with
``offload=False``, every datagram takes its own system call and nothing else changes. A
train the kernel refuses at send time is sent again datagram by datagram, and GSO is turned
off for the socket (``gso-fallback``). Send errors are counted per datagram in ``stats``:
``send-buffer-full``, ``send-too-big``, ``send-error``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ...core.events import Packet
from .links import Address

__all__ = [
    "MAX_DATAGRAM",
    "MAX_TRAIN_BYTES",
    "MAX_TRAIN_SEGMENTS",
    "SOCKET_BUFFER",
    "Offload",
    "UdpEndpoint",
    "mtu_towards",
    "offload_support",
]

# Linux constants the socket module does not name (linux/udp.h, linux/in.h).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IP_MTU = 14
#: as a plain int: ``flags & socket.MSG_TRUNC`` would be enum arithmetic on every read
_MSG_TRUNC = int(socket.MSG_TRUNC)

#: the largest UDP payload over IPv4 (65535 - 8 - 20)
MAX_DATAGRAM = 65507
#: a train's limits: the kernel takes at most 64 segments (128 on newer kernels) and one
#: UDP length's worth of bytes in one GSO send
MAX_TRAIN_SEGMENTS = 64
MAX_TRAIN_BYTES = MAX_DATAGRAM
SOCKET_BUFFER = 4 * 1024 * 1024
_READ_BUFFER = 65536
_GRO_SIZE = struct.Struct("=i")
_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size)
#: errors that say "this kernel or device cannot do GSO" rather than "this datagram failed"
_NO_GSO = {errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT}


@dataclass(frozen=True, slots=True)
class Offload:
    """What the kernel offers: GSO (send trains) and GRO (read trains)."""

    gso: bool
    gro: bool


@functools.cache
def offload_support() -> Offload:
    """Whether this kernel takes ``UDP_SEGMENT`` and ``UDP_GRO`` (checked once, on a throwaway
    socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.getsockopt(SOL_UDP, UDP_SEGMENT)
            gso = True
        except OSError:
            gso = False
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            gro = True
        except OSError:
            gro = False
    return Offload(gso, gro)


def mtu_towards(address: Address) -> int | None:
    """The MTU of the interface the kernel routes ``address`` through (``IP_MTU`` of a
    connected socket), or None if it cannot tell. Nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            return int(sock.getsockopt(socket.IPPROTO_IP, IP_MTU))
        except OSError:
            return None


class UdpEndpoint:
    """A node's non-blocking UDP socket with batched reads and sends.

    ``offload=False`` (or a kernel without support) reads and sends datagram by datagram;
    ``reuse_port`` lets worker processes share the address (``SO_REUSEPORT``: the kernel
    spreads underlay flows over them by 4-tuple).

    Raises:
        OSError: the address cannot be bound.
    """

    __slots__ = (
        "_buffer",
        "_buffers",
        "_cmsg",
        "_train",
        "_train_address",
        "_train_bytes",
        "_train_closed",
        "_train_size",
        "_view",
        "address",
        "gro",
        "gso",
        "sock",
        "stats",
    )

    def __init__(
        self,
        bind: Address,
        stats: Counter[str],
        *,
        offload: bool = True,
        reuse_port: bool = False,
        buffer: int = SOCKET_BUFFER,
    ) -> None:
        support = offload_support() if offload else Offload(False, False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, buffer)
            # Never fragment: path-MTU probing must see what the path carries (§4.2.6).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            gro = support.gro
            if gro:
                try:
                    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                except OSError:
                    gro = False
            sock.bind(bind)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.address: Address = sock.getsockname()[:2]
        self.stats = stats
        self.gso = support.gso
        self.gro = gro
        self._buffer = bytearray(_READ_BUFFER)
        self._buffers = [self._buffer]
        self._view = memoryview(self._buffer)
        self._cmsg: dict[int, list[tuple[int, int, bytes]]] = {}
        self._train: list[Packet] = []
        self._train_address: Address | None = None
        self._train_size = 0
        self._train_bytes = 0
        self._train_closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self._train.clear()
        self.sock.close()

    # -- reading -------------------------------------------------------------------------

    def read(self) -> tuple[memoryview, int, Address] | None:
        """One datagram or train, or None when nothing is waiting.

        Returns ``(data, segment_size, sender)``: ``segment_size`` is 0 for a single datagram;
        for a train, every datagram in ``data`` has that size except the last, which may be
        shorter. ``data`` lives in a buffer the next read reuses.
        """
        try:
            if self.gro:
                n, ancillary, flags, address = self.sock.recvmsg_into(self._buffers, _CMSG_SPACE)
            else:
                n, address = self.sock.recvfrom_into(self._buffer)
                return self._view[:n], 0, address
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            self.stats["recv-error"] += 1
            return None
        size = 0
        for level, kind, data in ancillary:
            if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SIZE.size:
                size = _GRO_SIZE.unpack_from(data)[0]
        if flags & _MSG_TRUNC:
            self.stats["recv-truncated"] += 1
            return self._view[:0], 0, address
        if size >= n:
            size = 0  # one datagram (the kernel may still say what its size was)
        return self._view[:n], size, address

    # -- sending -------------------------------------------------------------------------

    def push(self, data: Packet, address: Address) -> None:
        """Queue one datagram for ``address``; it joins the train being built when it can."""
        train = self._train
        if train:
            size = len(data)
            if (
                address == self._train_address
                and size <= self._train_size
                and not self._train_closed
                and len(train) < MAX_TRAIN_SEGMENTS
                and self._train_bytes + size <= MAX_TRAIN_BYTES
                and self.gso
            ):
                train.append(data)
                self._train_bytes += size
                if size < self._train_size:
                    self._train_closed = True  # only the last datagram may be shorter
                return
            self.flush()
        train.append(data)
        self._train_address = address
        self._train_size = self._train_bytes = len(data)
        self._train_closed = False

    def flush(self) -> None:
        """Send the train being built (one system call)."""
        train = self._train
        if not train:
            return
        address = self._train_address
        assert address is not None
        if len(train) == 1:
            self.send(train[0], address)
        else:
            self.send_train(train, self._train_size, address)
        train.clear()

    def send(self, data: Packet | memoryview, address: Address) -> None:
        """Send one datagram now."""
        try:
            self.sock.sendto(data, address)
        except BlockingIOError:
            self.stats["send-buffer-full"] += 1
        except OSError as exc:
            self.stats["send-too-big" if exc.errno == errno.EMSGSIZE else "send-error"] += 1

    def send_train(self, packets: Sequence[Packet | memoryview], size: int, address: Address) -> None:
        """Send a train to ``address`` in one call (one by one without GSO): the datagrams of
        ``size`` bytes (the last may be shorter) that ``packets`` hold back to back -- one
        buffer each, or a whole train read from the kernel in one."""
        if not self.gso:
            self._send_split(packets, size, address)
            return
        cmsg = self._cmsg.get(size)
        if cmsg is None:
            cmsg = self._cmsg[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        try:
            self.sock.sendmsg(packets, cmsg, 0, address)
            self.stats["trains-sent"] += 1
        except BlockingIOError:
            self.stats["send-buffer-full"] += len(packets)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                self.stats["send-too-big"] += len(packets)
            elif exc.errno in _NO_GSO:
                # Either a datagram is too big for the interface (then each one fails alone
                # too) or the device or kernel cannot segment: then send this train the slow
                # way, and every later one too.
                too_big = self.stats["send-too-big"]
                self._send_split(packets, size, address)
                if self.stats["send-too-big"] == too_big:
                    self.stats["gso-fallback"] += 1
                    self.gso = False
            else:
                self.stats["send-error"] += len(packets)

    def _send_split(self, packets: Sequence[Packet | memoryview], size: int, address: Address) -> None:
        for data in packets:
            if len(data) <= size:
                self.send(data, address)
            else:
                for offset in range(0, len(data), size):
                    self.send(data[offset : offset + size], address)
