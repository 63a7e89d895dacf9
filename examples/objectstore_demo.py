"""Replicated object store on SCAFFOLD: a download survives the death of its replica.

    python examples/objectstore_demo.py [--mib 8] [--seed 1]

Starts an embedded two-datacenter network, three store replicas (each with its own
directory), puts a few files of several MiB (each file's Object ID is the SHA-256 of its
bytes), then downloads the largest one into a file and kills the replica serving it after
the first MiB. The network redirects the flow to another replica, which continues the
stream from the offset the client had reached; the client checks the SHA-256 against the
Object ID. Exit status 0 only if every download was verified.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

import scaffold
from scaffold.apps.objectstore import ObjectStore, fetch, open_download
from scaffold.runtime.aio import run

REPLICAS = ("dc1-h1", "dc1-h2", "dc2-h1")
CLIENT = "dc2-h3"
MIB = 1 << 20


async def demo(mib: int, seed: int, root: Path) -> bool:
    rng = random.Random(seed)
    files = {f"file-{i}.bin": rng.randbytes(size * MIB) for i, size in enumerate((2, mib // 2, mib), 1)}
    async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=3) as net:
        store = await ObjectStore.start([net.host(h) for h in REPLICAS], root / "replicas")
        client = net.host(CLIENT)
        print(f"replicas: {', '.join(REPLICAS)}   client: {CLIENT} (dc {client.dc})\n")

        print(f"{'file':<12} {'size':>9}  {'Object ID (SHA-256)':<22} {'put':>7}  on disk at")
        ids = {}
        for name, data in files.items():
            start = time.monotonic()
            ids[name] = oid = await store.put(client, data)
            took = time.monotonic() - start
            holders = ", ".join(r.host.name for r in store.replicas if r.path(oid).is_file())
            print(f"{name:<12} {len(data) / MIB:>5.1f} MiB  {oid.short():<22} {took:>6.2f}s  {holders}")

        name = max(files, key=lambda n: len(files[n]))
        oid, target = ids[name], root / "downloaded.bin"
        print(f"\ndownloading {name} ({oid.short()}) to {target.name}; killing its replica after 1 MiB")
        victim, killed_at, kill_time = None, 0, 0.0
        arrivals: list[tuple[int, float]] = []  # (bytes received so far, when)
        start = time.monotonic()
        async with await open_download(client, oid) as download:
            with target.open("wb") as out:
                async for chunk in download.chunks():
                    out.write(chunk)
                    arrivals.append((download.received, time.monotonic()))
                    if victim is None and download.received >= MIB:
                        victim, killed_at = download.writer.get_extra_info("peer_host"), download.received
                        print(f"  {download.received:>9,} bytes received from {victim}: killing {victim}")
                        kill_time = time.monotonic()
                        await net.host(victim).node.close()
            verified, served_by = download.verified, download.served_by
        took = time.monotonic() - start
        takers = [(r.host.name, offset) for r in store.replicas for o, offset in r.resumed if o == oid]
        header = len(b"SIZE %d\n" % len(files[name]))
        for host, offset in takers:
            print(f"  {host} took the stream over at offset {offset:,} (file byte {offset - header:,})")
            # the bytes before that offset were already on their way from the dead replica
            first = next(t for received, t in arrivals if received > offset - header)
            print(f"  {host}'s first new bytes arrived {(first - kill_time) * 1000:.0f} ms after the kill")
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        print(f"  served by {' -> '.join(served_by)}; {download.received:,} bytes in {took:.2f}s")
        print(f"  SHA-256 {digest[:16]}… {'matches' if verified else 'DOES NOT match'} the Object ID")

        checks = {
            "download verified against its Object ID": verified and digest == oid.raw.hex(),
            "the serving replica died mid-stream": victim is not None and killed_at < len(files[name]),
            "another replica finished it": len(served_by) == 2 and served_by[0] == victim and bool(takers),
        }
        for other, data in files.items():
            if other != name:
                fetched = await fetch(client, ids[other])
                checks[f"{other} still fetchable from the survivors"] = fetched == data
        print()
        for label, ok in checks.items():
            print(f"  [{'ok' if ok else 'FAILED'}] {label}")
        return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=8, help="size of the largest file (MiB, >= 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the file contents")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="objectstore-") as root:
        try:
            ok = run(asyncio.wait_for(demo(max(4, args.mib), args.seed, Path(root)), 120))
        except scaffold.ScaffoldError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
