"""Trains of datagrams: a flow switch routes a GRO train whole when every datagram in it goes
to one next hop, and one by one otherwise -- in the core, in the sim, and over real sockets
with the kernel's GSO / GRO (and with them forced off)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

import pytest

from conftest import WEB
from scaffold.core.controller import Controller
from scaffold.core.events import Train
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.host import HostStack
from scaffold.core.topology import DatacenterSpec, HostSpec, Topology, default_topology
from scaffold.runtime.aio import AddressBook, ControllerRuntime, NodeRuntime, run, wait_until
from scaffold.runtime.aio.udp import SOL_UDP, UDP_GRO, UDP_SEGMENT, offload_support
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import control
from scaffold.wire.control import SwitchTables, TableSync
from scaffold.wire.header import HEADER_LEN, TTL_OFFSET, Flags, Header, Proto, encode, presence

SIZE = 300


def packet(host: int, seq: int, *, dc: int = 1, size: int = SIZE, flags: Flags = Flags.NONE) -> bytes:
    """A refined datagram packet to ``host`` in DC ``dc``, its payload numbered ``seq``."""
    header = Header(
        Proto.DATAGRAM, flow=7, obj=WEB.raw, dst_dc=dc, dst_host=host, src_dc=1, src_host=9, flags=flags
    )
    return encode(header, seq.to_bytes(4, "big") + bytes(size - HEADER_LEN - 4))


def switch() -> FlowSwitch:
    core = FlowSwitch("fs", "dc")
    tables = SwitchTables(host_routes={1: "a", 2: "b"}, dc_routes={5: "border"}, object_switch="os")
    core.receive_control(TableSync(version=1, dc_id=1, tables=tables), 0.0)
    while core.next_event() is not None:
        pass
    return core


def test_a_train_for_one_next_hop_is_routed_whole_in_place() -> None:
    core = switch()
    train = bytearray(b"".join(packet(1, i) for i in range(5)) + packet(1, 5)[:200])  # last shorter
    assert core.route_train(train, SIZE, "src", 0.0) == "a"
    assert [train[o + TTL_OFFSET] for o in range(0, len(train), SIZE)] == [31] * 6
    assert core.forwarded == 6 and core.datagrams_to_send(0.0) == []
    assert core.forwarded_bytes == len(train)  # the same bytes as six datagrams


def test_a_servers_train_is_routed_whole_too() -> None:
    core = switch()
    train = bytearray(b"".join(packet(2, i, flags=Flags.TO_CLIENT) for i in range(4)))
    assert core.route_train(train, SIZE, "src", 0.0) == "b" and core.forwarded == 4


def test_a_train_split_across_two_next_hops_goes_out_one_by_one_in_order() -> None:
    core = switch()
    packets = [packet(1, 0), packet(1, 1), packet(2, 2), packet(1, 3), packet(5, 4, dc=5)]
    assert core.route_train(bytearray(b"".join(packets)), SIZE, "src", 0.0) is None
    out = core.datagrams_to_send(0.0)
    assert [(port, int.from_bytes(data[HEADER_LEN : HEADER_LEN + 4])) for port, data in out] == [
        ("a", 0),
        ("a", 1),
        ("b", 2),
        ("a", 3),
        ("border", 4),
    ]
    assert all(data[TTL_OFFSET] == 31 for _, data in out) and core.forwarded == 5


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda p: b"\x07" + p[1:], "bad-version"),
        (lambda p: p[:2] + b"\x80" + p[3:], "bad-flags"),
        (lambda p: p[:3] + b"\x01" + p[4:], "ttl-expired"),
    ],
)
def test_a_corrupt_datagram_inside_a_train_is_dropped_alone(
    corrupt: Callable[[bytes], bytes], reason: str
) -> None:
    core = switch()
    packets = [packet(1, i) for i in range(4)]
    packets[2] = corrupt(packets[2])
    assert core.route_train(bytearray(b"".join(packets)), SIZE, "src", 0.0) is None
    assert [int.from_bytes(d[HEADER_LEN : HEADER_LEN + 4]) for _, d in core.datagrams_to_send(0.0)] == [
        0,
        1,
        3,
    ]
    assert core.drops == {reason: 1}


def gateway_of_h() -> FlowSwitch:
    """A flow switch that is the gateway of host ``h`` (Host ID 9), silent 0.6 s = down."""
    core = FlowSwitch("fs", "dc")
    tables = SwitchTables(
        host_routes={1: "a", 2: "b", 9: "h"},
        object_switch="os",
        attached={"h": 9},
        presence_timeout=0.6,
    )
    core.receive_control(TableSync(version=1, dc_id=1, tables=tables), 0.0)
    while core.next_event() is not None:
        pass
    return core


def liveness(core: FlowSwitch, now: float) -> list[control.HostLiveness]:
    """Run the switch's due check at ``now``; what it reported."""
    timer = core.get_timer()
    if timer is not None and timer <= now:
        core.handle_timer(now)
    return [m for m in core.control_to_send() if isinstance(m, control.HostLiveness)]


def test_a_host_that_only_sends_trains_stays_alive_at_its_gateway() -> None:
    core = gateway_of_h()
    core.receive_datagram(presence(1, 9), "h", 0.0)
    assert liveness(core, 0.0) == [control.HostLiveness(node="fs", up=["h"])]
    now = 0.0
    for seq in range(15):  # 3 s of trains routed whole, no presence packet among them
        now += 0.2
        train = bytearray(b"".join(packet(1, 4 * seq + i) for i in range(4)))
        assert core.route_train(train, SIZE, "h", now) == "a"
        assert liveness(core, now) == []
    for _ in range(5):  # silent for longer than the timeout: down
        now += 0.2
        reports = liveness(core, now)
        if reports:
            break
    assert reports == [control.HostLiveness(node="fs", down=["h"])]


def test_a_presence_packet_inside_a_train_is_taken_not_forwarded() -> None:
    core = gateway_of_h()
    beacon = presence(1, 9)
    # Presence packets alone: of one size, a train for one next hop (the object switch, by
    # their zero destination) -- never sent on whole.
    assert core.route_train(bytearray(beacon * 3), len(beacon), "h", 0.1) is None
    assert core.datagrams_to_send(0.1) == [] and core.forwarded == 0
    assert liveness(core, 0.1) == [control.HostLiveness(node="fs", up=["h"])]
    # Behind data (a header alone is shorter: the train's last): the data goes on, it does not.
    train = bytearray(packet(1, 0) + packet(1, 1) + beacon)
    assert core.route_train(train, SIZE, "h", 0.2) is None
    assert [port for port, _ in core.datagrams_to_send(0.2)] == ["a", "a"]
    assert core.forwarded == 2 and not core.drops


def test_garbage_trains_never_crash_the_switch() -> None:
    core = switch()
    for size in (0, 1, 75, 76, 300, 10_000):
        for train in (b"", bytes(5), bytes(1000), packet(1, 0) * 3 + b"\x01"):
            core.route_train(bytearray(train), size, "src", 0.0)
    assert sum(core.drops.values()) > 0


def test_the_sim_delivers_trains_to_flow_switches_and_streams_stay_exact() -> None:
    net = SimNetwork(default_topology(), seed=3)
    net.start()
    net.settle()
    routed = []
    fs = net.switch("east-fs1")
    assert isinstance(fs, FlowSwitch)
    original = fs.route_train

    def spy(train: Train, size: int, port: str, now: float) -> str | None:
        hop = original(train, size, port, now)
        routed.append(hop)
        return hop

    fs.route_train = spy  # type: ignore[method-assign]
    received = bytearray()
    net.act("east-h1", lambda h, now: h.bind(WEB, 1, "web"))
    net.run(0.1)

    def on_server(stack: HostStack, event: object, now: float) -> None:
        flow = getattr(event, "socket_id", None)
        if flow is not None and flow in stack.flows and stack.flows[flow].transport:
            received.extend(stack.stream_read(flow, 1 << 20, now))

    net.on_event("east-h1", on_server)
    data = bytes(range(256)) * 800
    flow = net.act("east-h3", lambda h, now: h.open_stream(WEB, now))
    net.run(0.05)
    net.act("east-h3", lambda h, now: h.stream_send(flow.socket_id, data, now, force=True))
    net.run(2.0)
    assert bytes(received) == data
    assert any(hop is not None for hop in routed)  # bursts of a stream went through whole


# -- real sockets ---------------------------------------------------------------------------

needs_offload = pytest.mark.skipif(
    not (offload_support().gso and offload_support().gro), reason="this kernel has no UDP GSO / GRO"
)


async def over_sockets(
    make: Callable[[dict[str, int]], list[list[bytes]]], *, offload: bool
) -> tuple[dict[str, list[int]], FlowSwitch, dict[str, int]]:
    """A real ``FlowSwitch`` in a ``NodeRuntime`` (tables from a real controller over TCP);
    ``src`` sends each train ``make(host ids)`` returns in one GSO send. Returns the sequence
    numbers hosts ``a`` and ``b`` received, in order, the core, and the runtime's stats."""
    controller = ControllerRuntime(Controller(bench_topology(), heartbeat_interval=3600))
    await controller.start()
    for host in ("a", "b", "src"):
        hello = control.Hello(node=host, role="host", gateway="fs")
        controller.core.receive_message(host, hello, controller.now())
    controller.flush()
    ids = {h: controller.core.hosts[h].host_id for h in ("a", "b")}
    sockets = {name: udp() for name in ("a", "b", "src")}
    book = AddressBook()
    for name, sock in sockets.items():
        book.add(name, sock.getsockname())
    core = FlowSwitch("fs", "dc")
    node = NodeRuntime(core, book, {}, controller.address, offload=offload)
    got: dict[str, list[int]] = {"a": [], "b": []}
    try:
        await node.start()
        await wait_until(lambda: core.synced and len(core.tables["host_routes"]) == 3, 10, "tables")
        trains = make(ids)
        for train in trains:
            cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(train[0])))]
            sockets["src"].sendmsg([b"".join(train)], cmsg, 0, node.address)
        expected = sum(map(len, trains))

        def arrived() -> bool:
            for name, seqs in got.items():
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data = sockets[name].recv(65536)
                        seqs.append(int.from_bytes(data[HEADER_LEN : HEADER_LEN + 4]))
            return sum(map(len, got.values())) + sum(core.drops.values()) >= expected

        await wait_until(arrived, 10, "every datagram forwarded or dropped")
        return got, core, dict(node.stats)
    finally:
        await node.close()
        await controller.close()
        for sock in sockets.values():
            sock.close()


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def bench_topology() -> Topology:
    hosts = tuple(HostSpec(name, "fs") for name in ("a", "b", "src"))
    return Topology(datacenters=(DatacenterSpec("dc", ("fs",), "os", hosts),))


def split_train(ids: dict[str, int]) -> list[list[bytes]]:
    """One train: datagrams 0-3 for ``a``, 4-7 for ``b``, then 8-9 for ``a``."""
    return [[packet(ids["a" if i < 4 or i > 7 else "b"], i) for i in range(10)]]


@needs_offload
def test_a_gro_train_split_across_two_next_hops_over_real_sockets() -> None:
    got, core, stats = run(over_sockets(split_train, offload=True))
    assert got == {"a": [0, 1, 2, 3, 8, 9], "b": [4, 5, 6, 7]}
    assert core.forwarded == 10 and stats["trains-received"] == 1
    assert stats["trains-sent"] >= 2  # the runs for a, for b, for a again: one GSO send each


@needs_offload
def test_a_uniform_gro_train_is_forwarded_whole() -> None:
    got, core, stats = run(
        over_sockets(lambda ids: [[packet(ids["b"], i) for i in range(20)]] * 3, offload=True)
    )
    assert got == {"a": [], "b": list(range(20)) * 3}
    assert stats["trains-forwarded"] == 3 and core.forwarded == 60


@needs_offload
def test_a_gro_train_with_a_corrupt_datagram_inside() -> None:
    def make(ids: dict[str, int]) -> list[list[bytes]]:
        train = [packet(ids["a"], i) for i in range(8)]
        train[5] = b"\x09" + train[5][1:]  # bad version, in the middle of the train
        return [train]

    got, core, stats = run(over_sockets(make, offload=True))
    assert got == {"a": [0, 1, 2, 3, 4, 6, 7], "b": []}
    assert core.drops == {"bad-version": 1} and core.forwarded == 7
    assert stats["trains-received"] == 1 and "trains-forwarded" not in stats


def test_without_offload_every_datagram_takes_its_own_system_call() -> None:
    """The fallback, forced: the sender's train reaches the switch as datagrams (no GRO on
    its socket), and it sends them one by one (no GSO) -- the same datagrams, in order."""
    got, core, stats = run(over_sockets(split_train, offload=False))
    assert got == {"a": [0, 1, 2, 3, 8, 9], "b": [4, 5, 6, 7]}
    assert core.forwarded == 10
    assert not {"trains-received", "trains-sent", "trains-forwarded"} & set(stats)


@needs_offload
def test_the_sender_builds_trains_of_one_size_per_address() -> None:
    """``UdpEndpoint.push``: consecutive datagrams to one address, of one size (the last may
    be shorter), at most 64, leave as one GSO send; anything else starts a new train."""
    from collections import Counter

    from scaffold.runtime.aio.udp import MAX_TRAIN_SEGMENTS, UdpEndpoint

    stats: Counter[str] = Counter()
    sender = UdpEndpoint(("127.0.0.1", 0), stats)
    receivers = []
    for _ in range(2):
        sock = udp()
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        receivers.append(sock)
    a, b = (sock.getsockname() for sock in receivers)
    try:
        for size, address in [(100, a)] * 3 + [(50, a), (100, a), (100, b), (100, a)]:
            sender.push(bytes(size), address)
        for _ in range(MAX_TRAIN_SEGMENTS + 1):
            sender.push(bytes(10), b)
        sender.flush()

        def reads(sock: socket.socket) -> list[int]:
            out = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    out.append(len(sock.recv(65536)))
            return out

        assert reads(receivers[0]) == [350, 100, 100]
        assert reads(receivers[1]) == [100, 10 * MAX_TRAIN_SEGMENTS, 10]
        assert stats["trains-sent"] == 2  # the two multi-datagram trains; the rest one by one
    finally:
        sender.close()
        for sock in receivers:
            sock.close()
