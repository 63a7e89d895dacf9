"""The replicated object store (scaffold.apps.objectstore) on the aio runtime."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import scaffold
from scaffold.apps.objectstore import (
    IntegrityError,
    ObjectStore,
    StoreError,
    StoreReplica,
    fetch,
    fetch_to_file,
    object_id_of,
    open_download,
    put,
)
from scaffold.runtime.aio import run, wait_until

MIB = 1 << 20
REPLICAS = ("dc1-h1", "dc1-h2", "dc2-h1")
CLIENT = "dc2-h3"  # a host without a replica

Main = Callable[[scaffold.Testbed, ObjectStore], Awaitable[None]]


def with_store(root: Path, main: Main) -> None:
    async def go() -> None:
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=3) as net:
            store = await ObjectStore.start([net.host(h) for h in REPLICAS], root)
            await asyncio.wait_for(main(net, store), 20)

    run(go())


async def withdrawn(net: scaffold.Testbed, host: str) -> None:
    """Wait until the controller declared ``host`` dead and every object switch applied it."""
    ctl = net.controller
    await wait_until(lambda: not ctl.hosts[host].alive, 5.0, f"{host} declared dead")
    await tables_applied(net)


async def tables_applied(net: scaffold.Testbed) -> None:
    """Wait until every object switch applied the controller's latest tables."""
    ctl = net.controller
    targets = {n: s.version for n, s in ctl.switches.items() if s.role == "object-switch"}

    def applied() -> bool:
        return all(getattr(net.network.nodes[n].core, "version", 0) >= v for n, v in targets.items())

    await wait_until(applied, 5.0, "object switches to withdraw it")


def test_put_then_fetch_from_another_dc_is_verified_and_on_every_disk(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 12345)

    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        client = net.host(CLIENT)
        assert client.dc != net.host("dc1-h1").dc
        oid = await store.put(client, data)
        assert oid == object_id_of(data) == scaffold.ObjectId(hashlib.sha256(data).digest())
        for replica in store.replicas:
            assert replica.path(oid).read_bytes() == data
        assert not [p for r in store.replicas for p in r.directory.iterdir() if p.name.startswith(".")]
        got = await fetch(net.host("dc1-h3"), oid)
        assert hashlib.sha256(got).digest() == oid.raw
        target = tmp_path / "copy.bin"
        assert await fetch_to_file(client, oid, target) == len(data)
        assert target.read_bytes() == data
        assert await put(client, data) == oid  # idempotent: same content, same object

    with_store(tmp_path / "store", main)


def test_fetching_an_unknown_id_raises_object_not_found(tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        with pytest.raises(scaffold.ObjectNotFound):
            await fetch(net.host(CLIENT), object_id_of(b"never stored"))

    with_store(tmp_path, main)


def test_download_continues_on_another_replica_when_the_server_dies(tmp_path: Path) -> None:
    data = os.urandom(6 * MIB)

    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        client = net.host(CLIENT)
        oid = await store.put(client, data)
        received = bytearray()
        victim = None
        async with await open_download(client, oid) as download:
            async for chunk in download.chunks():
                received += chunk
                if victim is None:
                    victim = download.writer.get_extra_info("peer_host")
                    assert victim in REPLICAS
                    await net.host(victim).node.close()  # the serving replica dies mid-stream
            assert download.verified
            served_by = download.served_by
        assert bytes(received) == data
        assert len(served_by) == 2 and served_by[0] == victim and served_by[1] in REPLICAS
        assert served_by[1] != victim
        resumed = store.replica(served_by[1]).resumed
        assert len(resumed) == 1 and resumed[0][0] == oid and 0 < resumed[0][1] < len(data)

    with_store(tmp_path, main)


def test_a_replica_serving_wrong_bytes_is_detected(tmp_path: Path) -> None:
    data = os.urandom(MIB)

    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        client = net.host(CLIENT)
        oid = await store.put(client, data)
        for replica in store.replicas:  # bit rot on every copy
            raw = bytearray(replica.path(oid).read_bytes())
            raw[len(raw) // 2] ^= 0x01
            replica.path(oid).write_bytes(raw)
        with pytest.raises(IntegrityError):
            await fetch(client, oid)
        target = tmp_path / "out.bin"
        with pytest.raises(IntegrityError):
            await fetch_to_file(client, oid, target)
        assert not target.exists() and not list(tmp_path.glob("*.partial"))
        assert issubclass(IntegrityError, scaffold.ProtocolError)

    with_store(tmp_path / "store", main)


def test_an_impostor_bound_on_the_id_is_detected(tmp_path: Path) -> None:
    data = b"the real content" * 1000
    oid = object_id_of(data)

    async def impostor(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
        writer.write(b"SIZE %d\n" % len(data) + bytes(len(data)))
        await writer.drain()

    async def liar(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
        writer.write(b"HELLO\n")
        await writer.drain()

    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        await net.host("dc1-h3").start_server(impostor, oid)
        with pytest.raises(IntegrityError):
            await fetch(net.host(CLIENT), oid)
        other = object_id_of(b"other")
        await net.host("dc1-h3").start_server(liar, other)
        with pytest.raises(StoreError, match="malformed header"):
            await fetch(net.host(CLIENT), other)

    with_store(tmp_path, main)


def test_upload_refusals_and_a_dead_peer(tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        client = net.host(CLIENT)
        reader, writer = await client.open_connection("objectstore")
        writer.write(b"GET 3\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"ERR ")
        writer.close()
        # A dead replica is skipped: the upload lands on the live ones.
        await net.host("dc2-h1").node.close()
        await withdrawn(net, "dc2-h1")
        data = os.urandom(100_000)
        oid = await put(client, data)
        assert [r.path(oid).exists() for r in store.replicas] == [True, True, False]
        assert await fetch(client, oid) == data

    with_store(tmp_path, main)


def test_a_replica_started_on_a_directory_serves_the_files_in_it(tmp_path: Path) -> None:
    data = os.urandom(200_000)

    async def main(net: scaffold.Testbed, store: ObjectStore) -> None:
        client = net.host(CLIENT)
        oid = await put(client, data)
        shutil.copytree(store.replicas[0].directory, tmp_path / "moved")
        fresh = StoreReplica(net.host("dc1-h3"), tmp_path / "moved")
        await fresh.start()  # binds every file it finds
        for replica in store.replicas:
            replica.close()

        def only_fresh() -> bool:
            return set(net.controller.objects.get(oid.raw.hex(), {})) == {"dc1-h3"}

        await wait_until(only_fresh, 5.0, "the old replicas to be withdrawn")
        await tables_applied(net)
        async with await open_download(client, oid) as download:
            assert b"".join([c async for c in download.chunks()]) == data
            assert download.served_by == ["dc1-h3"]

    with_store(tmp_path / "store", main)
