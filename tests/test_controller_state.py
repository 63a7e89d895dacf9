"""The controller's durable state is an output of the core (docs/protocol.md §6.4): replayed
into a fresh controller it restores the same registrations and Host IDs; runtimes commit it
before they send the records that depend on it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from scaffold.core.controller import Controller, ControllerState, HostState, StateChange, StateRows
from scaffold.core.controller.commands import (
    Allow,
    Disallow,
    Drain,
    Link,
    MigrateHost,
    MigrateObject,
    MoveHost,
    SetWeight,
)
from scaffold.core.controller.state import ObjectReplicas
from scaffold.core.ownership import owner_public_key, sign_grant
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.runtime.aio import ControllerRuntime, run, wait_until
from scaffold.runtime.sim import SimNetwork
from scaffold.runtime.sqlite_store import FOLD_NICE, INSERT_ROWS, SqliteStore
from scaffold.runtime.store import controller_outputs
from scaffold.wire import control

WEB = ObjectId.from_name("web").raw.hex()
SESSION = ObjectId.from_name("session").raw.hex()


def hello(ctl: Controller, host: str, gateway: str, now: float) -> None:
    ctl.receive_message(host, control.Hello(node=host, role="host", gateway=gateway), now)
    ctl.receive_message(host, control.Heartbeat(node=host, seq=1), now)


def commit(ctl: Controller, rows: StateRows) -> list[tuple[str, control.ControlMessage]]:
    """What a runtime does after each input: commit the state changes, then take the records."""
    rows.apply(ctl.state_changes())
    return ctl.messages_to_send()


def assert_committed_is_everything(ctl: Controller, rows: StateRows) -> None:
    # Every durable change was emitted: the rows committed so far are the whole state.
    assert rows.rows == StateRows(ctl.snapshot()).rows


def test_outputs_replayed_into_a_fresh_controller_restore_registrations_and_host_ids() -> None:
    topo = default_topology()
    ctl = Controller(topo)
    rows = StateRows()
    commit(ctl, rows)
    for host, gateway in (("east-h1", "east-fs1"), ("east-h2", "east-fs2"), ("west-h1", "west-fs1")):
        hello(ctl, host, gateway, 0.0)
    hello(ctl, "roamer", "north-fs1", 0.0)  # not in the topology: the next Host ID
    steps: list[Callable[[], object]] = [
        lambda: ctl.receive_message("east-h1", control.Bind(WEB, 1, "web"), 0.1),
        lambda: ctl.receive_message("east-h2", control.Bind(WEB, 2, "web"), 0.1),
        lambda: ctl.receive_message("west-h1", control.Bind(WEB, 3, "web"), 0.1),
        lambda: ctl.receive_message("west-h1", control.Bind(SESSION, 1, "session"), 0.1),
        lambda: ctl.receive_message("roamer", control.Bind(SESSION, 1, "session"), 0.1),
        lambda: ctl.receive_message("roamer", control.Unbind(SESSION), 0.1),
        lambda: ctl.command(SetWeight("web", "east-h1", 7), 0.2),
        lambda: ctl.command(Drain("east-h2", "web"), 0.3),
        lambda: ctl.command(Drain("west-h1", "session"), 0.3),
        lambda: ctl.receive_message("west-h1", control.DrainDone(SESSION), 0.4),
        lambda: ctl.command(MigrateObject("web", "west-h1", "roamer"), 0.5),
        lambda: ctl.receive_message("west-h1", control.FlowsOut(WEB, "roamer", "web", 3, True, []), 0.5),
        lambda: ctl.command(MigrateHost("east-h1", "north"), 0.6),
        lambda: ctl.command(MoveHost("roamer", "west-fs2"), 0.7),
        lambda: ctl.command(Link("east", "west", False), 0.8),
        lambda: ctl.command(Allow("session", "north"), 0.9),
        lambda: ctl.command(Allow("web", "*"), 0.9),
        lambda: ctl.command(Disallow("web", "*"), 0.9),
        lambda: ctl.command(Disallow("web", "west-h1"), 0.9),
    ]
    for step in steps:
        step()
        commit(ctl, rows)
        assert_committed_is_everything(ctl, rows)

    saved = rows.snapshot()
    assert saved is not None
    fresh = Controller(topo, saved=saved)
    assert {n: r.host_id for n, r in fresh.hosts.items()} == {n: r.host_id for n, r in ctl.hosts.items()}
    assert {n: (r.dc, r.gateway, r.previous_dcs) for n, r in fresh.hosts.items()} == {
        n: (r.dc, r.gateway, r.previous_dcs) for n, r in ctl.hosts.items()
    }
    assert fresh.objects == ctl.objects == {WEB: {"east-h1": 7, "east-h2": 2, "roamer": 3}}
    assert fresh.object_names == ctl.object_names
    assert fresh.registry.draining == {"east-h2": {WEB}}
    assert fresh.registry.links_up == ctl.registry.links_up
    assert fresh.policy.allowed == ctl.policy.allowed  # the operator's rules, over the topology's
    # A clean restore rewrites nothing, and a new host gets a Host ID nobody holds.
    assert fresh.state_changes() == []
    hello(fresh, "newcomer", "east-fs1", 1.0)
    taken = {r.host_id for n, r in fresh.hosts.items() if n != "newcomer"}
    assert fresh.hosts["newcomer"].host_id not in taken


def test_a_restore_deletes_what_it_could_not_take_back() -> None:
    topo = default_topology()
    ctl = Controller(topo)
    hello(ctl, "east-h1", "east-fs1", 0.0)
    ctl.receive_message("east-h1", control.Bind(WEB, 1, "web"), 0.0)
    good = ctl.snapshot()
    ghost = HostState("ghost", 99, "mars", "mars-fs1")  # its gateway is not in this topology
    saved = ControllerState(
        good.next_host_id,
        [*good.hosts, ghost],
        {WEB: {"east-h1": 1, "ghost": 5}},
        good.object_names,
        {**good.links, "east|mars": False},
    )
    rows = StateRows(saved)
    fresh = Controller(topo, saved=saved)
    assert fresh.drops["restore-unknown-gateway"] == 1
    changes = fresh.state_changes()
    assert StateChange("host", "ghost") in changes
    assert StateChange("link", "east|mars") in changes
    rows.apply(changes)
    assert_committed_is_everything(fresh, rows)
    assert fresh.objects == {WEB: {"east-h1": 1}}
    assert fresh.registry.next_host_id > max(r.host_id for r in fresh.hosts.values())


def test_no_record_leaves_before_the_state_it_depends_on_is_committed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "controller.sqlite3"
    store = SqliteStore(path)
    ctl = Controller(default_topology())
    ctl.receive_message("roamer", control.Hello(node="roamer", role="host", gateway="east-fs1"), 0.0)
    with pytest.raises(OSError):
        controller_outputs(ctl, store)  # the new Host ID cannot be stored: nothing to send
    blocker.unlink()
    sent = controller_outputs(ctl, store)  # the retry commits the rows again, then hands out
    welcome = [m for node, m in sent if node == "roamer"]
    assert isinstance(welcome[0], control.Welcome)
    stored = SqliteStore(path).load()
    assert stored is not None
    assert {h.name: h.host_id for h in stored.hosts}["roamer"] == welcome[0].host_id


def test_the_sim_stores_what_the_controller_emits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "controller.sqlite3")
    net = SimNetwork(default_topology(), seed=5, store=store)
    net.start()
    net.settle()
    stored = SqliteStore(tmp_path / "controller.sqlite3").load()
    assert stored is not None
    assert {h.name: h.host_id for h in stored.hosts} == {
        name: net.host(name).host_id for name, node in net.nodes.items() if node.role == "host"
    }
    assert StateRows(stored).rows == StateRows(net.controller.snapshot()).rows


def test_the_aio_controller_holds_records_back_while_its_store_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = SqliteStore(blocker / "controller.sqlite3")

    async def main() -> None:
        runtime = ControllerRuntime(Controller(default_topology(), heartbeat_interval=0.05), store=store)
        await runtime.start()
        reader, writer = await asyncio.open_connection(*runtime.address)
        unblocked = asyncio.Event()

        async def first_record() -> tuple[control.ControlMessage, bool]:
            decoder = control.FrameDecoder()
            while chunk := await reader.read(65536):
                for message in decoder.feed(chunk):
                    return message, unblocked.is_set()
            raise AssertionError("the controller closed the connection")

        reading = asyncio.create_task(first_record())
        try:
            writer.write(control.frame(control.Hello(node="roamer", role="host", gateway="east-fs1")))
            await wait_until(lambda: runtime.stats["store-failed"] >= 2, 5, "a failed commit")
            assert not reading.done()
            unblocked.set()
            blocker.unlink()
            message, after = await asyncio.wait_for(reading, 5)
            assert isinstance(message, control.Welcome) and after
            stored = SqliteStore(blocker / "controller.sqlite3").load()
            assert stored is not None and "roamer" in {h.name for h in stored.hosts}
        finally:
            reading.cancel()
            writer.close()
            await runtime.close()

    run(main())


def test_the_operators_allow_and_disallow_outlive_the_controller() -> None:
    topo = default_topology()
    ctl = Controller(topo)
    rows = StateRows()
    commit(ctl, rows)
    hello(ctl, "north-h1", "north-fs1", 0.0)
    ctl.receive_message("north-h1", control.Bind(SESSION, 1, "session"), 0.1)
    assert ctl.drops["bind-not-allowed"] == 1 and SESSION not in ctl.objects
    assert ctl.command(Allow("session", "north"), 0.2) == {"object": "session", "allowed": "north"}
    assert ctl.command(Disallow("web", "east-h1"), 0.2)["was_allowed"] is True  # the topology's
    commit(ctl, rows)
    saved = rows.snapshot()
    assert saved is not None
    fresh = Controller(topo, saved=saved)  # a restart, or a standby taking over
    hello(fresh, "north-h1", "north-fs1", 1.0)
    fresh.receive_message("north-h1", control.Bind(SESSION, 1, "session"), 1.1)
    assert fresh.objects[SESSION] == {"north-h1": 1}
    hello(fresh, "east-h1", "east-fs1", 1.0)
    fresh.receive_message("east-h1", control.Bind(WEB, 1, "web"), 1.1)
    assert fresh.drops["bind-not-allowed"] == 1 and WEB not in fresh.objects


def test_the_sqlite_log_folds_into_its_base_and_loads_the_same_rows(tmp_path: Path) -> None:
    # A registration appends to the log; once it is as large as the base it is folded in.
    # Whether a row was last written before or after a fold, a reopened store loads it.
    path = tmp_path / "controller.sqlite3"
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    store = SqliteStore(path, compact_min=4, drop_chunk=3)  # a folded part dropped in steps
    ctl = Controller(default_topology(), open_binding=True)
    rows = StateRows()
    hello(ctl, "north-h1", "north-fs1", 0.0)
    for k in range(40):
        key = ObjectId.from_name(f"o{k}").raw.hex()
        ctl.receive_message("north-h1", control.Bind(key, 1 + k % 3), 0.1)
        if k % 3 == 0:
            ctl.receive_message("north-h1", control.Unbind(ObjectId.from_name(f"o{k // 2}").raw.hex()), 0.1)
        changes = ctl.state_changes()
        rows.apply(changes)
        store.commit(changes)
        loaded = SqliteStore(path).load()
        assert loaded is not None and StateRows(loaded).rows == rows.rows
        store.wait_fold()  # folds run in a thread: loads are the same before and after
        loaded = SqliteStore(path).load()
        assert loaded is not None and StateRows(loaded).rows == rows.rows
    with sqlite3.connect(store.base_path) as base:
        assert base.execute("SELECT count(*) FROM rows").fetchone()[0] > 40 // 2  # folded
    with sqlite3.connect(path) as log:
        assert log.execute("SELECT count(*) FROM log").fetchone()[0] < 40  # and dropped
    assert StateRows(store.load()).rows == StateRows(ctl.snapshot()).rows
    # The folds ran at the lowest CPU priority, in their own thread only: the caller's (the
    # core's, in a daemon) is as it was.
    assert store.folds >= 2 and store.fold_nice == FOLD_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == nice


def test_a_restored_controller_takes_only_hosts_that_registered_as_alive() -> None:
    # A standby that takes over right after the first leader started (its lease lost on a
    # loaded machine) restores every topology host's row: one that never said Hello must not
    # pass for a live node, or it could never join (netns demo: "already has a live node").
    topo = default_topology()
    ctl = Controller(topo)
    ctl.receive_message(
        "east-h1",
        control.Hello(node="east-h1", role="host", gateway="east-fs1", address=("10.0.0.5", 7000)),
        0.0,
    )
    saved = ctl.snapshot()
    fresh = Controller(topo, saved=saved)
    assert fresh.hosts["east-h1"].alive
    assert not fresh.hosts["north-h1"].alive  # in the topology, never registered
    assert fresh.hosts["north-h1"].host_id == ctl.hosts["north-h1"].host_id


def test_a_grant_expiry_is_durable_and_a_core_built_from_the_rows_withdraws_on_time() -> None:
    """An owned replica's grant expiry is on its replicas row: the core a restart or a new
    leader builds from the committed rows (§6.8) withdraws the replica when the grant expires,
    though its host never binds again (§6.7)."""
    topo = default_topology()
    ctl = Controller(topo)
    ctl.wall_offset = 1000.0  # Unix time is the runtime's clock plus this
    rows = StateRows()
    commit(ctl, rows)
    owner = ed25519.Ed25519PrivateKey.generate()
    key = ObjectId.from_owner(owner_public_key(owner), "owned").raw.hex()
    hello(ctl, "east-h1", "east-fs1", 0.0)
    grant = sign_grant(owner, expires=1010.0, host="east-h1")
    ctl.receive_message("east-h1", control.Bind(obj=key, grant=grant), 1.0)
    commit(ctl, rows)
    assert_committed_is_everything(ctl, rows)
    replicas = rows.rows[("replicas", key)]
    assert isinstance(replicas, ObjectReplicas) and replicas.expires == {"east-h1": 1010.0}

    new = Controller(topo, saved=rows.snapshot())
    new.wall_offset = 1000.0
    for now in (2.0, 9.9):  # checked every heartbeat interval: not expired yet
        new.handle_timer(now)
    assert "east-h1" in new.objects[key]
    new.handle_timer(10.5)
    assert key not in new.objects and new.drops["grant-expired"] == 1
    commit(new, rows)
    assert ("replicas", key) not in rows.rows


def test_a_sqlite_commit_appends_its_rows_in_a_few_statements_whatever_their_number(tmp_path: Path) -> None:
    # Each statement hands the GIL back and forth: a commit from the daemon's store thread,
    # beside a busy event loop, waited for it once per row. Counted, not timed: the INSERTs
    # of a commit are one per INSERT_ROWS rows, and what they store loads back the same.
    path = tmp_path / "controller.sqlite3"
    store = SqliteStore(path)
    ctl = Controller(default_topology(), open_binding=True)
    rows = StateRows()
    hello(ctl, "north-h1", "north-fs1", 0.0)
    statements: list[str] = []
    for count in (1, 2 * INSERT_ROWS + 7):
        for k in range(count):
            ctl.receive_message("north-h1", control.Bind(ObjectId.from_name(f"{count}-{k}").raw.hex()), 0.1)
        ctl.receive_message("north-h1", control.Unbind(ObjectId.from_name("1-0").raw.hex()), 0.1)
        changes = ctl.state_changes()
        rows.apply(changes)
        store._connection().set_trace_callback(statements.append)
        store.commit(changes)
        store._connection().set_trace_callback(None)
        inserts = [s for s in statements if s.startswith("INSERT")]
        assert len(inserts) == -(-len({(c.kind, c.key) for c in changes}) // INSERT_ROWS)
        statements.clear()
    loaded = SqliteStore(path).load()
    assert loaded is not None and StateRows(loaded).rows == rows.rows == StateRows(ctl.snapshot()).rows
