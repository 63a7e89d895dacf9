"""Operators against a real ``scaffold up`` network: every admin command needs an operator
certificate, and its arguments are typed and range-checked (docs/security.md; §6.5, §6.6)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scaffold.core.controller.commands import Counters, MigrateObject, SetWeight, Status
from scaffold.errors import ScaffoldError, UsageError
from scaffold.runtime import admin
from scaffold.runtime.aio import run
from scaffold.wire import control

from .attacker import LEGIT, UpNetwork, connect, controller_counts, delta, echo_ten, exchange, issue, replicas

COMMANDS: list[tuple[str, dict[str, control.AdminValue]]] = [
    ("status", {}),
    ("counters", {}),
    ("migrate-object", {"object": "web", "from_host": "dc1-h1", "to_host": "dc1-h2"}),
    ("drain", {"host": "dc1-h1", "object": "web"}),
    ("set-weight", {"object": "web", "host": "dc1-h1", "weight": 1000}),
    ("allow", {"object": "web", "where": "*"}),
]


def test_admin_commands_need_an_operator_certificate(up_network: UpNetwork) -> None:
    state = up_network.state
    host = issue(up_network, "evil-admin")
    switch = issue(up_network, "dc1-fs1-copy", "flow-switch")

    async def main() -> None:
        before = await controller_counts(up_network.state_path)
        for name, args in COMMANDS:
            # Without a certificate: no TLS, no answer.
            with pytest.raises(ScaffoldError):
                await admin.call_raw(state.controller, name, args, timeout=3, credentials=None)
            # With a host's certificate: refused, and said so.
            with pytest.raises(admin.AdminError, match="needs an operator certificate"):
                await admin.call_raw(state.controller, name, args, credentials=host)
        # A switch may report only its own ports.
        port = {"node": "dc1-fs1", "peer": "dc2-fs1", "up": False}
        with pytest.raises(admin.AdminError, match="needs an operator certificate"):
            await admin.call_raw(state.controller, "port", port, credentials=switch)
        after = await controller_counts(up_network.state_path)
        assert delta(before, after, "admin-not-operator") == len(COMMANDS) + 1
        assert await replicas(up_network.state_path) == LEGIT
        status = await admin.call(state.controller, Status(), credentials=state.operator())
        assert {r["host"]: r["weight"] for o in status["objects"] for r in o["replicas"]} == {
            "dc1-h1": 1,
            "dc2-h1": 1,
        }
        assert not status["drops"].get("drain")
        served = await echo_ten(up_network.state_path, "client-admin")
        assert set(served) <= LEGIT and len(served) == 10

    run(main())


def test_admin_arguments_are_typed_and_range_checked(up_network: UpNetwork) -> None:
    state = up_network.state
    operator = state.operator()

    async def main() -> None:
        for weight in (0, 65536, 2**64 - 1):
            with pytest.raises(admin.AdminError, match="weight"):
                await admin.call_raw(
                    state.controller,
                    "set-weight",
                    {"object": "web", "host": "dc1-h1", "weight": weight},
                    credentials=operator,
                )
        with pytest.raises(UsageError):
            SetWeight("web", "dc1-h1", 2**64 - 1)
        # Arguments are scalars: a nested one does not even decode, and the connection is cut.
        nested = control.encode(control.AdminRequest(1, "status", {"a": 1})).replace(
            b"\xa1a\x01", b"\xa1a\x91\x90"
        )
        got, closed = await exchange(
            await connect(state.controller, operator), control.FRAME.pack(len(nested)) + nested
        )
        assert closed and not got
        with pytest.raises(admin.AdminError, match="unknown command"):
            await admin.call_raw(state.controller, "format-disk", {}, credentials=operator)
        with pytest.raises(admin.AdminError):
            await admin.call(state.controller, MigrateObject("web", "dc1-h1", "nobody"), credentials=operator)
        counters = await admin.call(state.controller, Counters(), credentials=operator)
        assert counters["dc1-fs1"]["version"] > 0  # switches still take their tables
        served = await echo_ten(up_network.state_path, "client-args")
        assert set(served) <= LEGIT and len(served) == 10

    run(main())


def test_unsafe_names_are_refused_and_status_never_reads_markup(up_network: UpNetwork) -> None:
    for name in ("[/oops]", "../../x", "a/b", ""):
        out = subprocess.run(
            [sys.executable, "-m", "scaffold", "credentials", "issue", name, "--role", "host", "--out", "x"],
            cwd=up_network.directory,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 2 and "not a node name" in out.stderr, out.stderr
    status = subprocess.run(
        [sys.executable, "-m", "scaffold", "status"],
        cwd=up_network.directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "dc1-h1" in status.stdout
