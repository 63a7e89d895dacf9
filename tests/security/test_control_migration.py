"""Flow-state transfers: in parts that fit one control frame, and hostile state fails its own
flow only -- counted, the migration goes on, the host keeps working (docs/protocol.md §6.6)."""

from __future__ import annotations

import msgspec

from scaffold.core.controller import Controller
from scaffold.core.controller.commands import MigrateObject
from scaffold.core.host import HostStack
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.wire import control, header
from scaffold.wire.flow_state import FlowState

WEB = ObjectId.from_name("web")


def test_hostile_migrated_flow_states_fail_alone() -> None:
    host = HostStack("west-h4", "west-fs2")
    host.receive_control(control.Welcome("west-h4", dc_id=2, host_id=9), 0.0)
    good = FlowState(
        socket_id=5,
        flow=1,
        nonce=2,
        obj=WEB.raw,
        proto=2,
        role="server",
        peer_dc=1,
        peer_host=1,
        peer_socket=1,
    )
    hostile = [
        b"\xff\xfe",  # not MessagePack
        msgspec.msgpack.encode(good).replace(b"server", b"serv\xff\xfe"),  # invalid UTF-8
        msgspec.msgpack.encode(msgspec.structs.replace(good, role="nobody")),
        msgspec.msgpack.encode(msgspec.structs.replace(good, transport=b"\x93\x01\x02")),  # a broken snapshot
        msgspec.msgpack.encode(msgspec.structs.replace(good, socket_id=0)),
    ]
    host.receive_control(control.MigrateIn(WEB.raw.hex(), "web", 1, True, hostile, more=True), 1.0)
    assert host.drops["bad-migrated-flow"] == len(hostile)
    assert WEB.raw in host.listeners  # the replica arrived; only the flows failed
    assert not host.flows
    host.handle_timer(2.0)  # and it keeps telling its gateway it is alive
    presence = header.presence(host.dc_id, host.host_id)
    assert any(bytes(d) == presence for _, d in host.datagrams_to_send(2.0))


def test_flow_states_travel_in_parts_that_fit_a_frame() -> None:
    states = [bytes(300 * 1024) for _ in range(7)]  # 2.1 MB of flow state
    parts = control.chunk_states(states)
    assert len(parts) > 2 and [s for part in parts for s in part] == states
    ctl = Controller(default_topology())
    for name, gateway in (("west-h1", "west-fs1"), ("west-h4", "west-fs2")):
        ctl.receive_message(name, control.Hello(name, "host", gateway=gateway), 0.0)
    ctl.receive_message("west-h1", control.Bind(WEB.raw.hex(), 3, "web"), 0.0)
    ctl.command(MigrateObject("web", "west-h1", "west-h4"), 0.1)
    ctl.messages_to_send()
    for k, part in enumerate(parts):
        out = control.FlowsOut(WEB.raw.hex(), "west-h4", "web", 3, True, part, more=k < len(parts) - 1)
        assert len(control.frame(out)) <= control.MAX_FRAME
        ctl.receive_message("west-h1", control.decode(control.encode(out)), 0.2)
    sent = [m for n, m in ctl.messages_to_send() if n == "west-h4" and isinstance(m, control.MigrateIn)]
    assert [m.states for m in sent] == parts and [m.more for m in sent] == [True] * (len(parts) - 1) + [False]
    assert ctl.objects[WEB.raw.hex()] == {"west-h4": 3}
    assert not ctl.churn.migrations
    assert not ctl.drops
