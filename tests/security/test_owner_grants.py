"""Who may serve an object, against a real ``scaffold up`` network (docs/protocol.md §6.7):
an owned object only with its owner's grant for that host, checked by the controller
(signature, owner prefix, host, expiry) and withdrawn when it expires; a plain-named one
only where the operator's policy allows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.core.controller.commands import Allow
from scaffold.deploy.joining import join_from_state
from scaffold.deploy.state_file import load_state
from scaffold.errors import ObjectNotFound, UsageError
from scaffold.ids import ObjectId
from scaffold.runtime.aio import run, wait_until
from scaffold.wire import control

from .attacker import (
    UpNetwork,
    connect,
    controller_counts,
    delta,
    echo_ten_on,
    exchange,
    issue,
    operator_call,
    replicas,
)


def scaffold(net: UpNetwork, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=net.directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def owner(net: UpNetwork, name: str) -> tuple[Path, str]:
    """A new owner key (its file, its public key in hex)."""
    path = net.directory / f"{name}.key"
    printed = scaffold(net, "owner", "new", "--out", str(path))
    return path, printed.split()[2]


def grant(net: UpNetwork, key: Path, host: str, valid: float = 600) -> bytes:
    path = net.directory / f"grant-{host}-{valid}"
    scaffold(net, "grant", "--owner", str(key), "--host", host, "--valid", str(valid), "--out", str(path))
    return path.read_bytes()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def test_an_owned_object_is_served_only_with_its_owners_grant(up_network: UpNetwork) -> None:
    key, public = owner(up_network, "alice")
    other_key, _ = owner(up_network, "mallory")
    photos = f"owner:{public}/photos"
    obj = ObjectId.of(photos)
    assert obj == ObjectId.from_owner(bytes.fromhex(public), "photos")
    good = grant(up_network, key, "pub-alice")
    thief = issue(up_network, "thief")
    forged = good[:-1] + bytes([good[-1] ^ 1])
    wrong_owner = grant(up_network, other_key, "thief")
    expired = grant(up_network, key, "thief", valid=0.05)

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        publisher = await join_from_state("pub-alice", state=up_network.state_path)
        client = await join_from_state("client-owned", state=up_network.state_path)
        try:
            await publisher.start_server(echo, photos, grant=good)
            assert await replicas(up_network.state_path, photos) == {"pub-alice"}
            # Clients name it by owner/name or by its obj: text.
            served = await echo_ten_on(client, photos) + await echo_ten_on(client, str(obj))
            assert served == ["pub-alice"] * 20
            # Another host with the same grant, a forged one, another owner's, an expired one.
            await asyncio.sleep(0.1)  # let the 50 ms grant run out (its expiry is wall-clock time)
            stream = await connect(up_network.state.controller, thief)
            hello = control.Hello("thief", "host", gateway="dc2-fs1", address=("127.0.0.1", 9))
            binds = [
                control.Bind(obj.raw.hex(), 1000, "photos", grant=g)
                for g in (good, forged, wrong_owner, expired)
            ]
            got, closed = await exchange(stream, hello, *binds)
            assert not closed and isinstance(got[0], control.Welcome)
            stream[1].close()
            with pytest.raises(UsageError, match="grant"):
                await client.start_server(echo, photos, grant=good)  # said locally first
            after = await controller_counts(up_network.state_path)
            for reason in ("grant-wrong-host", "grant-bad-signature", "grant-wrong-owner", "grant-expired"):
                assert delta(before, after, reason) == 1, reason
            assert await replicas(up_network.state_path, photos) == {"pub-alice"}
            assert await echo_ten_on(client, photos) == ["pub-alice"] * 10
        finally:
            await client.close()
            await publisher.close()

    run(main())


def test_a_replica_leaves_when_its_grant_expires(up_network: UpNetwork) -> None:
    key, public = owner(up_network, "bob")
    photos = f"owner:{public}/short"

    async def main() -> None:
        publisher = await join_from_state("pub-bob", state=up_network.state_path)
        client = await join_from_state("client-expiry", state=up_network.state_path)
        try:
            # Signed once both have joined, and valid long enough to bind and echo ten times
            # on a loaded machine (2 s was not always: the Bind came after the expiry).
            short = await asyncio.to_thread(grant, up_network, key, "pub-bob", 8.0)
            await publisher.start_server(echo, photos, grant=short)
            assert await echo_ten_on(client, photos) == ["pub-bob"] * 10

            async def withdrawn() -> bool:
                return not await replicas(up_network.state_path, photos)

            await wait_until(withdrawn, 30, "the grant to expire")
            counts = await controller_counts(up_network.state_path)
            assert counts.get("grant-expired", 0) >= 1

            async def not_found() -> bool:
                try:
                    await client.open_connection(photos, timeout=2)
                except ObjectNotFound:
                    return True
                return False

            await wait_until(not_found, 5, "object switches to drop the replica")
        finally:
            await client.close()
            await publisher.close()

    run(main())


def test_plain_names_are_served_only_where_the_operator_allows(up_network: UpNetwork) -> None:
    evil = issue(up_network, "extra-web")
    web = ObjectId.from_name("web").raw.hex()
    hello = control.Hello("extra-web", "host", gateway="dc2-fs1", address=("127.0.0.1", 9))

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        stream = await connect(load_state(up_network.state_path).controller, evil)
        got, _ = await exchange(stream, hello, control.Bind(web, name="web"))
        assert isinstance(got[0], control.Welcome)
        assert "extra-web" not in await replicas(up_network.state_path, alive=False)
        await operator_call(up_network.state_path, Allow("web", "extra-web"))
        await exchange(stream, control.Bind(web, name="web"), wait=0.1)
        assert "extra-web" in await replicas(up_network.state_path, alive=False)  # (it never heartbeats)
        stream[1].close()  # it leaves: withdrawn again
        after = await controller_counts(up_network.state_path)
        assert delta(before, after, "bind-not-allowed") == 1

    run(main())
