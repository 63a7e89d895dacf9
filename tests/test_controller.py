"""Controller logic in memory: registration, table sync and deltas, versions, liveness."""

from __future__ import annotations

from scaffold.core.controller import Controller
from scaffold.core.controller.commands import Link
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.wire import control

WEB = ObjectId.from_name("web")


def deliver(
    ctl: Controller,
    switches: dict[str, FlowSwitch | ObjectSwitch],
    now: float,
    *,
    lose: int = 0,
    others: list[tuple[str, control.ControlMessage]] | None = None,
) -> int:
    """Hand every queued controller record to its switch, losing the first ``lose`` deltas;
    records for other nodes go to ``others``."""
    lost = 0
    ctl.flush_tables()  # the coalescing window closes now
    for node, message in ctl.messages_to_send():
        if node not in switches:
            if others is not None:
                others.append((node, message))
            continue
        if isinstance(message, control.TableDelta) and lost < lose:
            lost += 1
            continue
        # Through the real encoding, as on the wire.
        switches[node].receive_control(control.decode(control.encode(message)), now)
        for reply in switches[node].control_to_send():
            ctl.receive_message(node, reply, now)
    return lost


def setup() -> tuple[Controller, dict[str, FlowSwitch | ObjectSwitch]]:
    topo = default_topology()
    ctl = Controller(topo)
    switches: dict[str, FlowSwitch | ObjectSwitch] = {}
    for dc in topo.datacenters:
        for fs in dc.flow_switches:
            switches[fs] = FlowSwitch(fs, dc.name)
        switches[dc.object_switch] = ObjectSwitch(dc.object_switch, dc.name)
    for sw in switches.values():
        sw.hello(("127.0.0.1", 1000 + len(sw.name)))
        for message in sw.control_to_send():
            ctl.receive_message(sw.name, message, 0.0)
    deliver(ctl, switches, 0.0)
    return ctl, switches


def register(
    ctl: Controller, switches: dict[str, FlowSwitch | ObjectSwitch], host: str, gateway: str, now: float
) -> int:
    ctl.receive_message(host, control.Hello(node=host, role="host", gateway=gateway), now)
    others: list[tuple[str, control.ControlMessage]] = []
    deliver(ctl, switches, now, others=others)
    welcome = [m for n, m in others if n == host]
    assert isinstance(welcome[0], control.Welcome)
    return welcome[0].host_id


def test_full_sync_then_deltas_keep_switches_equal_to_desired() -> None:
    ctl, switches = setup()
    assert all(s.synced for s in switches.values())
    register(ctl, switches, "east-h1", "east-fs1", 0.1)
    ctl.receive_message("east-h1", control.Bind(obj=WEB.raw.hex(), weight=2, name="web"), 0.1)
    deliver(ctl, switches, 0.1)
    for name, sw in switches.items():
        desired = ctl.desired_tables(name)
        assert sw.snapshot() == desired, name
    east_os = switches["east-os"]
    assert isinstance(east_os, ObjectSwitch)
    host_id = ctl.hosts["east-h1"].host_id
    assert east_os.resolve(WEB.raw, 12345) == (ctl.dc_ids["east"], host_id)


def test_lost_delta_is_repaired_by_a_full_sync() -> None:
    ctl, switches = setup()
    ctl.receive_message("east-h1", control.Hello(node="east-h1", role="host", gateway="east-fs1"), 0.1)
    assert deliver(ctl, switches, 0.1, lose=2) == 2
    ctl.receive_message("east-h1", control.Bind(obj=WEB.raw.hex(), weight=1, name="web"), 0.2)
    # The next change to the same switches reveals the gap: SyncRequest -> TableSync.
    ctl.receive_message("east-h2", control.Hello(node="east-h2", role="host", gateway="east-fs2"), 0.2)
    deliver(ctl, switches, 0.2)
    deliver(ctl, switches, 0.2)
    gaps = sum(sw.drops["stale-table-delta"] for sw in switches.values())
    assert gaps >= 1
    for name, sw in switches.items():
        assert sw.snapshot() == ctl.desired_tables(name), name


def test_host_ids_are_stable_across_reregistration() -> None:
    ctl, switches = setup()
    first = register(ctl, switches, "west-h2", "west-fs2", 0.0)
    again = register(ctl, switches, "west-h2", "west-fs2", 1.0)
    other = register(ctl, switches, "west-h3", "west-fs1", 1.0)
    assert first == again != other
    assert first != 0


def test_a_host_silent_at_its_gateway_is_reported_down_and_heard_again_up() -> None:
    from scaffold.wire.header import presence

    ctl, switches = setup()
    register(ctl, switches, "east-h1", "east-fs1", 0.0)
    ctl.receive_message("east-h1", control.Bind(obj=WEB.raw.hex(), weight=1), 0.0)
    deliver(ctl, switches, 0.0)
    gateway = switches["east-fs1"]
    assert isinstance(gateway, FlowSwitch)
    host_id = ctl.hosts["east-h1"].host_id
    reports: list[control.ControlMessage] = []

    def advance(now: float, *, heard: bool) -> None:
        if heard:
            gateway.receive_datagram(presence(1, host_id), "east-h1", now)
        timer = gateway.get_timer()
        if timer is not None and timer <= now:
            gateway.handle_timer(now)
        for message in gateway.control_to_send():
            assert isinstance(message, control.HostLiveness)
            if "east-h1" in message.up + message.down:  # not the topology's other hosts
                reports.append(message)
            ctl.receive_message("east-fs1", message, now)
        deliver(ctl, switches, now)

    def alive() -> bool:  # a call: mypy would carry an attribute's narrowing past advance()
        return ctl.hosts["east-h1"].alive

    now = 0.0
    for _ in range(10):  # presence every 0.2 s: one "up" report, then silence at the controller
        now += 0.2
        advance(now, heard=True)
    assert alive()
    assert reports == [control.HostLiveness(node="east-fs1", up=["east-h1"])]
    for _ in range(5):  # silent: within the timeout plus a check period, one "down" report
        now += 0.2
        advance(now, heard=False)
    assert not alive()
    assert reports[1:] == [control.HostLiveness(node="east-fs1", down=["east-h1"])]
    east_os = switches["east-os"]
    assert isinstance(east_os, ObjectSwitch)
    assert east_os.resolve(WEB.raw, 1) is None
    assert host_id not in ctl.desired_tables("east-fs1").host_routes
    advance(now + 0.2, heard=True)  # heard again: up, and back in the tables
    assert alive() and east_os.resolve(WEB.raw, 1) is not None
    # Only the host's gateway speaks for it.
    ctl.receive_message("west-fs1", control.HostLiveness(node="west-fs1", down=["east-h1"]), now)
    assert alive() and ctl.drops["liveness-not-gateway"] == 1


def test_link_down_reroutes_dc_traffic() -> None:
    ctl, switches = setup()
    west = ctl.dc_ids["west"]
    assert ctl.desired_tables("east-fs1").dc_routes[west] == "west-fs1"
    ctl.command(Link("east", "west", False), 1.0)
    deliver(ctl, switches, 1.0)
    assert ctl.desired_tables("east-fs1").dc_routes[west] == "north-fs1"
    assert switches["east-fs1"].snapshot().dc_routes[west] == "north-fs1"
    # an edge switch sends everything foreign to its border switch
    assert ctl.desired_tables("east-fs2").dc_routes[west] == "east-fs1"


def test_unknown_nodes_and_bad_binds_are_counted() -> None:
    ctl, _ = setup()
    ctl.receive_message("ghost", control.Hello(node="ghost", role="flow-switch", dc="east"), 0.0)
    ctl.receive_message("ghost", control.Bind(obj="zz"), 0.0)
    ctl.receive_message("ghost", control.Heartbeat(node="ghost", seq=1), 0.0)
    assert ctl.drops["hello-unknown-node"] == 1
    assert ctl.drops["bad-bind"] == 1
    assert ctl.drops["heartbeat-from-unknown"] == 1


def test_a_stalled_gateway_does_not_blame_its_hosts() -> None:
    """A flow switch whose own timer ran 2 s late (a busy loop, a paused process) has not read
    the presence packets of that time yet: its hosts are not reported down, and are only after
    ``presence_timeout`` of silence counted from when it runs again."""
    from scaffold.wire.header import presence

    ctl, switches = setup()
    register(ctl, switches, "east-h1", "east-fs1", 0.0)
    gateway = switches["east-fs1"]
    assert isinstance(gateway, FlowSwitch)
    gateway.receive_datagram(presence(1, ctl.hosts["east-h1"].host_id), "east-h1", 0.2)
    gateway.control_to_send()
    now = 0.2 + 2.0  # the stall
    gateway.handle_timer(now)
    assert gateway.control_to_send() == []
    for _ in range(2):
        now += 0.2
        gateway.handle_timer(now)
    assert gateway.control_to_send() == []
    for _ in range(3):
        now += 0.2
        gateway.handle_timer(now)
    reports = [m for m in gateway.control_to_send() if isinstance(m, control.HostLiveness)]
    assert any("east-h1" in m.down for m in reports)
