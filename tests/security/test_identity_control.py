"""Node identity against a real ``scaffold up`` network: nobody joins as a node, or takes over
one, without that node's certificate (docs/security.md; docs/protocol.md §6.6).

Each test is an attack from this machine: a plain TCP client, a certificate from another CA,
a compromised host's valid certificate used to claim other names, roles and addresses, a
second connection with a stolen certificate, stats under names that never said Hello, a
revoked certificate. Each checks the refusal, that it was counted by reason, and that `web`
is still served 10/10 by its legitimate replicas only.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

from scaffold.core.controller.commands import Counters
from scaffold.runtime.aio import run
from scaffold.runtime.tls import CertificateAuthority, Credentials
from scaffold.wire import control

from .attacker import (
    LEGIT,
    WEB,
    UpNetwork,
    connect,
    controller_counts,
    delta,
    echo_ten,
    exchange,
    issue,
    operator_call,
    replicas,
)


def test_no_certificate_or_a_foreign_one_cannot_register_or_bind(
    up_network: UpNetwork, tmp_path: Path
) -> None:
    state = up_network.state
    foreign = CertificateAuthority.create(tmp_path / "ca").issue("evil", "host", tmp_path / "evil")

    async def main() -> None:
        hello = control.Hello("evil", "host", gateway="dc1-fs1", address=("127.0.0.1", 9))
        bind = control.Bind(WEB, weight=1000, name="web")
        plain = await connect(state.controller)
        _, closed = await exchange(plain, hello, bind)
        assert closed  # a TLS server: plain records end the connection
        # It does not care who the controller is; it presents its own certificate.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(foreign.cert_file, foreign.key_file)
        alien = await connect(state.controller, context=context)
        _, closed = await exchange(alien, hello, bind)
        assert closed  # not under the network's CA
        assert await replicas(up_network.state_path) == LEGIT
        served = await echo_ten(up_network.state_path, "client-a")
        assert set(served) <= LEGIT and len(served) == 10

    run(main())


def test_a_valid_host_certificate_claims_only_its_own_name_role_and_address(up_network: UpNetwork) -> None:
    state = up_network.state
    evil = issue(up_network, "evil")
    web = WEB

    async def attempt(hello: control.Hello) -> list[control.ControlMessage]:
        got, closed = await exchange(await connect(state.controller, evil), hello)
        assert closed, hello
        return got

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        takeovers = [
            control.Hello("dc1-h1", "host", gateway="dc1-fs1", address=("127.0.0.1", 9)),  # a host's name
            control.Hello("dc1-fs1", "flow-switch", dc="dc1", address=("127.0.0.1", 9)),  # a switch's
            control.Hello("evil", "flow-switch", dc="dc1", address=("127.0.0.1", 9)),  # another role
            control.Hello("evil", "host", gateway="dc1-fs1", address=("10.9.9.9", 7000)),  # not its address
            control.Hello("evil", "host", gateway="dc1-fs1", address=("evil.example", 7000)),  # a name
        ]
        for hello in takeovers:
            got = await attempt(hello)
            assert got and isinstance(got[0], control.Refused)
        # A port out of range does not even decode: the connection is cut.
        raw = control.encode(control.Hello("evil", "host", gateway="dc1-fs1", address=("127.0.0.1", 9)))
        bad_port = raw.replace(
            b"\xa7address\x92\xa9127.0.0.1\x09", b"\xa7address\x92\xa9127.0.0.1\xce\x00\x01\x11\x70"
        )
        assert bad_port != raw
        got, closed = await exchange(
            await connect(state.controller, evil), control.FRAME.pack(len(bad_port)) + bad_port
        )
        assert closed and not got
        # Its own name works, but it may not serve `web` (not where the topology allows it).
        stream = await connect(state.controller, evil)
        hello = control.Hello("evil", "host", gateway="dc1-fs1", address=("127.0.0.1", 9))
        got, closed = await exchange(stream, hello, control.Bind(web, weight=1000, name="web"))
        assert not closed and isinstance(got[0], control.Welcome)
        # ... and saying Hello again, 5,000 times, changes nothing and costs little.
        started = asyncio.get_running_loop().time()
        got, closed = await exchange(stream, *[hello] * 5000, wait=0.5)
        assert not closed and asyncio.get_running_loop().time() - started < 5
        stream[1].close()
        after = await controller_counts(up_network.state_path)
        assert delta(before, after, "hello-name-mismatch") == 2
        assert delta(before, after, "hello-wrong-role") == 1
        assert delta(before, after, "hello-address-mismatch") == 1
        assert delta(before, after, "hello-bad-address") == 1
        assert delta(before, after, "control-bad-control") == 1
        assert delta(before, after, "bind-not-allowed") == 1
        assert delta(before, after, "hello-repeated") == 5000
        assert await replicas(up_network.state_path) == LEGIT
        served = await echo_ten(up_network.state_path, "client-b")
        assert set(served) <= LEGIT and len(served) == 10

    run(main())


def test_a_stolen_certificate_cannot_take_over_a_live_node(up_network: UpNetwork) -> None:
    state = up_network.state
    stolen = Credentials(Path(state.credentials) / "nodes" / "dc1-h1")

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        hello = control.Hello("dc1-h1", "host", gateway="dc1-fs1", address=("127.0.0.1", 9))
        got, closed = await exchange(await connect(state.controller, stolen), hello)
        assert closed and got == [control.Refused("hello-already-connected")]  # no tables, no Welcome
        after = await controller_counts(up_network.state_path)
        assert delta(before, after, "hello-already-connected") == 1
        served = await echo_ten(up_network.state_path, "client-c")
        assert set(served) <= LEGIT and len(served) == 10

    run(main())


def test_stats_only_from_the_connections_own_registered_node(up_network: UpNetwork) -> None:
    state = up_network.state
    evil = issue(up_network, "evil-stats")

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        junk = [control.NodeStats(f"ghost-{i}", "host", trace=[]) for i in range(20)]
        _, closed = await exchange(await connect(state.controller, evil), *junk, wait=0.5)
        assert not closed
        counters = await operator_call(up_network.state_path, Counters())
        assert not any(name.startswith("ghost-") for name in counters)
        after = await controller_counts(up_network.state_path)
        assert delta(before, after, "stats-from-unregistered") == 20

    run(main())


def test_a_revoked_certificate_is_cut_and_refused(up_network: UpNetwork) -> None:
    state = up_network.state
    evil = issue(up_network, "evil-revoked")

    async def main() -> None:
        stream = await connect(state.controller, evil)
        hello = control.Hello("evil-revoked", "host", gateway="dc2-fs1", address=("127.0.0.1", 9))
        got, closed = await exchange(stream, hello)
        assert not closed and isinstance(got[0], control.Welcome)
        revoke = [sys.executable, "-m", "scaffold", "credentials", "revoke", str(evil.directory)]
        subprocess.run(revoke, cwd=up_network.directory, check=True, capture_output=True)
        # The next connection (anyone's) makes the controller read the CRL again: the revoked
        # one is refused and the live one cut.
        _, closed = await exchange(await connect(state.controller, evil), hello)
        assert closed
        _, closed = await exchange(stream, wait=2.0)
        assert closed
        counts = await controller_counts(up_network.state_path)
        assert counts.get("revoked-certificate", 0) >= 2

    run(main())
