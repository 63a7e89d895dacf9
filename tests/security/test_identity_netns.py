"""Node identity on the namespace testbed (``scaffold up --netns``): every node a process in
its own namespace, with a certificate naming its node IP. From the root namespace, an attacker
cannot register, take over a switch or a host, or announce a node's address; the network
serves `web` 10/10 from its legitimate replicas throughout (docs/security.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.deploy.netns import available, leftovers
from scaffold.deploy.state_file import load_state
from scaffold.runtime.aio import run
from scaffold.runtime.tls import Credentials
from scaffold.wire import control

from .attacker import TOPOLOGY, connect, controller_counts, echo_ten, exchange, replicas

REASON = available()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(REASON is not None, reason=f"namespace testbed unavailable: {REASON}"),
]


def test_no_takeover_on_the_namespace_testbed(tmp_path: Path) -> None:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    scaffold = [sys.executable, "-m", "scaffold"]
    up = subprocess.run(
        [*scaffold, "up", "--netns", "--detach", "topology.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    state_path = tmp_path / ".scaffold" / "state.json"
    state = load_state(state_path)
    try:
        subprocess.run(
            [*scaffold, "credentials", "issue", "evil", "--role", "host", "--out", "evil"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
        evil = Credentials(tmp_path / "evil")
        switch = Credentials(Path(state.credentials) / "nodes" / "dc1-fs1")
        victim_ip = state.nodes["dc1-h1"].node_ip

        async def main() -> None:
            before = await controller_counts(state_path)
            hello = control.Hello("evil", "host", gateway="dc1-fs1", address=(state.access_ip, 7000))
            _, closed = await exchange(await connect(state.controller), hello)
            assert closed  # no certificate: no TLS
            for claim in (
                control.Hello("dc1-h1", "host", gateway="dc1-fs1", address=(victim_ip, 7000)),
                control.Hello("evil", "host", gateway="dc1-fs1", address=(victim_ip, 7000)),
            ):
                got, closed = await exchange(await connect(state.controller, evil), claim)
                assert closed and isinstance(got[0], control.Refused)
            stolen = control.Hello(
                "dc1-fs1", "flow-switch", dc="dc1", address=(state.nodes["dc1-fs1"].node_ip, 7000)
            )
            got, closed = await exchange(await connect(state.controller, switch), stolen)
            assert closed and got == [control.Refused("hello-already-connected")]
            after = await controller_counts(state_path)
            for reason in ("hello-name-mismatch", "hello-address-mismatch", "hello-already-connected"):
                assert after.get(reason, 0) - before.get(reason, 0) == 1, reason
            assert await replicas(state_path) == {"dc1-h1", "dc2-h1"}
            served = await echo_ten(state_path, "client-netns")
            assert set(served) <= {"dc1-h1", "dc2-h1"} and len(served) == 10

        run(main())
    finally:
        down = subprocess.run(
            [*scaffold, "down"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert down.returncode == 0, down.stderr
    assert not leftovers(state.run_id)
