"""A replicated object store on SCAFFOLD: every stored file *is* an object.

A file's Object ID is the SHA-256 of its bytes (self-certifying: a client checks what it
fetched against the name it asked for). Each ``StoreReplica`` keeps files in its own
directory and binds every file's Object ID with ``resumable=True``, so a fetch is anycast to
any replica holding the file and, if that replica dies mid-download, continued by another
one from the stream offset (docs/objectstore.md).

Wire formats (all on SCAFFOLD streams):

* fetch, on the file's Object ID: the client sends nothing; the replica sends
  ``SIZE <n>\\n`` then the n bytes. The response is a pure function of the file, so a replica
  taking the stream over at ``send_offset`` sends the same bytes from that offset on.
* upload, on the service object ``objectstore`` (every replica binds it): ``PUT <n>\\n`` and
  n bytes; the replica stores the file, copies it to its peers, and answers
  ``OK <obj-id>\\n`` (or ``ERR <reason>\\n``).
* replication, on ``objectstore-peer/<host name>`` (each replica binds its own):
  ``COPY <n>\\n`` and n bytes; answer ``OK <obj-id>\\n`` once stored and bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ObjectNotFound, ProtocolError, ScaffoldError
from ..ids import ObjectId

if TYPE_CHECKING:
    from ..api.host import Host, Server
    from ..api.streams import StreamReader, StreamWriter

__all__ = [
    "SERVICE",
    "Download",
    "IntegrityError",
    "ObjectStore",
    "StoreError",
    "StoreReplica",
    "fetch",
    "fetch_to_file",
    "object_id_of",
    "open_download",
    "peer_service",
    "put",
]

SERVICE = "objectstore"
CHUNK = 64 * 1024
MAX_OBJECT = 256 * 1024 * 1024
_LINE_LIMIT = 128
_SIZE = re.compile(rb"SIZE (\d{1,12})\n")
_REQUEST = re.compile(rb"(PUT|COPY) (\d{1,12})\n")
_OK = re.compile(rb"OK (obj:[0-9a-f]{64})\n")


class StoreError(ProtocolError):
    """A store replica answered something the protocol does not allow, or refused."""


class IntegrityError(StoreError):
    """The bytes fetched do not hash to the Object ID they were fetched by."""


def object_id_of(data: bytes) -> ObjectId:
    """The Object ID of a file: the SHA-256 of its content."""
    return ObjectId(hashlib.sha256(data).digest())


def peer_service(host_name: str) -> str:
    """The object name a replica on ``host_name`` receives copies on."""
    return f"objectstore-peer/{host_name}"


async def _read_line(reader: StreamReader, what: str) -> bytes:
    """One ``\\n``-terminated line of at most ``_LINE_LIMIT`` bytes (read byte by byte, so
    nothing after the line is consumed and a peer cannot make us buffer without bound)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        if len(line) >= _LINE_LIMIT:
            raise StoreError(f"{what}: line longer than {_LINE_LIMIT} bytes")
        byte = await reader.read(1)
        if not byte:
            raise StoreError(f"{what}: stream ended after {bytes(line)!r}")
        line += byte
    return bytes(line)


async def _send(writer: StreamWriter, data: bytes) -> None:
    for start in range(0, len(data), CHUNK):
        writer.write(data[start : start + CHUNK])
        await writer.drain()


# -- client ------------------------------------------------------------------------------


async def put(host: Host, data: bytes, *, timeout: float = 60.0) -> ObjectId:
    """Store ``data`` through any replica; returns its Object ID once every live replica
    holds it and serves it.

    Raises:
        StoreError: the replica refused or answered with the wrong ID.
        PathError: no replica is registered, or the path broke (the upload can be retried).
    """
    expected = object_id_of(data)
    async with asyncio.timeout(timeout):
        reader, writer = await host.open_connection(SERVICE)
        try:
            writer.write(b"PUT %d\n" % len(data))
            await _send(writer, data)
            line = await _read_line(reader, "upload answer")
        finally:
            writer.close()
    match = _OK.fullmatch(line)
    if match is None:
        raise StoreError(f"upload refused: {line.decode(errors='replace').strip()}")
    if ObjectId.parse(match[1].decode()) != expected:
        raise StoreError(f"the replica named the upload {match[1].decode()}, expected {expected}")
    return expected


class Download:
    """A fetch in progress: the header was read; ``chunks()`` yields the file's bytes and
    checks the SHA-256 against the Object ID after the last one."""

    def __init__(self, obj: ObjectId, reader: StreamReader, writer: StreamWriter, size: int) -> None:
        self.obj = obj
        self.size = size
        self.received = 0
        self.verified = False
        self.reader = reader
        self.writer = writer

    @property
    def served_by(self) -> list[str]:
        """Every replica that served this download, in order."""
        return list(self.writer.get_extra_info("served_by") or [])

    async def chunks(self) -> AsyncIterator[bytes]:
        """
        Raises:
            IntegrityError: the bytes do not hash to the Object ID.
            StoreError: the stream ended early.
            BrokenPathError: the replica died and no other one could continue.
        """
        digest = hashlib.sha256()
        while self.received < self.size:
            data = await self.reader.read(min(CHUNK, self.size - self.received))
            if not data:
                raise StoreError(f"{self.obj.short()}: stream ended at {self.received} of {self.size}")
            digest.update(data)
            self.received += len(data)
            yield data
        if digest.digest() != self.obj.raw:
            raise IntegrityError(f"{self.obj.short()}: content hashes to {digest.hexdigest()[:12]}…")
        self.verified = True

    def close(self) -> None:
        self.writer.close()

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def open_download(host: Host, obj: ObjectId, *, timeout: float = 10.0) -> Download:
    """Open a stream to a replica of ``obj`` and read the header.

    Raises:
        ObjectNotFound: no replica holds ``obj``.
        StoreError: the header is malformed.
    """
    reader, writer = await host.open_connection(obj, timeout=timeout)
    try:
        match = _SIZE.fullmatch(await _read_line(reader, f"{obj.short()} header"))
        if match is None:
            raise StoreError(f"{obj.short()}: malformed header")
    except BaseException:
        writer.close()
        raise
    return Download(obj, reader, writer, int(match[1]))


async def fetch(host: Host, obj: ObjectId, *, timeout: float = 60.0) -> bytes:
    """The verified content of ``obj`` (see ``Download.chunks`` for the errors)."""
    async with asyncio.timeout(timeout), await open_download(host, obj) as download:
        return b"".join([chunk async for chunk in download.chunks()])


async def fetch_to_file(host: Host, obj: ObjectId, path: Path, *, timeout: float = 600.0) -> int:
    """Stream ``obj`` into ``path`` (renamed into place only once verified); its size."""
    partial = path.with_name(path.name + ".partial")
    try:
        async with asyncio.timeout(timeout), await open_download(host, obj) as download:
            with partial.open("wb") as out:
                async for chunk in download.chunks():
                    out.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return download.size


# -- replicas ----------------------------------------------------------------------------


class StoreReplica:
    """One store replica: files under ``directory``, each bound as its own object."""

    def __init__(self, host: Host, directory: Path | str, peers: Iterable[str] = ()) -> None:
        self.host = host
        self.directory = Path(directory)
        self.peers = [p for p in peers if p != host.name]
        self.servers: dict[ObjectId, Server] = {}
        #: (object, send offset) of every download this replica took over mid-stream
        self.resumed: list[tuple[ObjectId, int]] = []
        self.served = 0
        self.services: list[Server] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Bind the upload and peer services and every file already in the directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.iterdir()):
            if re.fullmatch(r"[0-9a-f]{64}", path.name):
                await self._bind(ObjectId(bytes.fromhex(path.name)))
        self.services = [
            await self.host.start_server(self._upload, SERVICE),
            await self.host.start_server(self._copy, peer_service(self.host.name)),
        ]

    def path(self, obj: ObjectId) -> Path:
        return self.directory / obj.raw.hex()

    def close(self) -> None:
        """Withdraw this replica's services and objects (running downloads go on)."""
        for server in [*self.services, *self.servers.values()]:
            server.close()

    async def store(self, data: bytes) -> ObjectId:
        """Write ``data`` (temporary file, then rename) and serve it."""
        obj = object_id_of(data)
        async with self._lock:
            if obj not in self.servers:
                await asyncio.to_thread(self._write, obj, data)
                await self._bind(obj)
        return obj

    def _write(self, obj: ObjectId, data: bytes) -> None:
        temporary = self.directory / f".{obj.raw.hex()}.{os.getpid()}.tmp"
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path(obj))

    async def _bind(self, obj: ObjectId) -> None:
        async def serve(reader: StreamReader, writer: StreamWriter) -> None:
            await self._serve_file(obj, writer)

        self.servers[obj] = await self.host.start_server(serve, obj, resumable=True)

    async def _serve_file(self, obj: ObjectId, writer: StreamWriter) -> None:
        resume = writer.get_extra_info("resume")
        offset = resume[0] if resume is not None else 0
        if offset:
            self.resumed.append((obj, offset))
        with self.path(obj).open("rb") as source:
            head = b"SIZE %d\n" % os.fstat(source.fileno()).st_size
            if offset < len(head):
                writer.write(head[offset:])
            source.seek(max(0, offset - len(head)))
            while chunk := source.read(CHUNK):
                writer.write(chunk)
                await writer.drain()
        self.served += 1

    # -- uploads -------------------------------------------------------------------------

    async def _upload(self, reader: StreamReader, writer: StreamWriter) -> None:
        await self._receive(reader, writer, b"PUT")

    async def _copy(self, reader: StreamReader, writer: StreamWriter) -> None:
        await self._receive(reader, writer, b"COPY")

    async def _receive(self, reader: StreamReader, writer: StreamWriter, verb: bytes) -> None:
        try:
            match = _REQUEST.fullmatch(await _read_line(reader, "request"))
            if match is None or match[1] != verb:
                raise StoreError(f"expected {verb.decode()} <size>")
            size = int(match[2])
            if size > MAX_OBJECT:
                raise StoreError(f"object larger than {MAX_OBJECT} bytes")
            data = await reader.readexactly(size)
            obj = await self.store(data)
            if verb == b"PUT":
                await asyncio.gather(*(self._replicate(peer, data) for peer in self.peers))
            writer.write(b"OK %s\n" % str(obj).encode())
        except (ScaffoldError, asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
            reason = str(exc).replace("\n", " ").encode(errors="replace")[: _LINE_LIMIT - 8]
            writer.write(b"ERR %s\n" % reason)
        await writer.drain()

    async def _replicate(self, peer: str, data: bytes) -> None:
        """Copy ``data`` to ``peer`` and wait for its ack; a peer that is not registered
        (dead, withdrawn) is skipped: it is not a replica any more."""
        try:
            async with asyncio.timeout(30.0):
                reader, writer = await self.host.open_connection(peer_service(peer))
                try:
                    writer.write(b"COPY %d\n" % len(data))
                    await _send(writer, data)
                    line = await _read_line(reader, f"copy to {peer}")
                finally:
                    writer.close()
        except ObjectNotFound:
            return
        if _OK.fullmatch(line) is None:
            raise StoreError(f"{peer} refused the copy: {line.decode(errors='replace').strip()}")


class ObjectStore:
    """A store cluster: one ``StoreReplica`` per host, each directory under ``root``."""

    def __init__(self, replicas: list[StoreReplica]) -> None:
        self.replicas = replicas

    @classmethod
    async def start(cls, hosts: Iterable[Host], root: Path | str) -> ObjectStore:
        hosts = list(hosts)
        names = [h.name for h in hosts]
        replicas = [StoreReplica(h, Path(root) / h.name, names) for h in hosts]
        for replica in replicas:
            await replica.start()
        return cls(replicas)

    def replica(self, host_name: str) -> StoreReplica:
        return next(r for r in self.replicas if r.host.name == host_name)

    async def put(self, client: Host, data: bytes) -> ObjectId:
        return await put(client, data)

    async def fetch(self, client: Host, obj: ObjectId) -> bytes:
        return await fetch(client, obj)
