"""Refined SCAFFOLD packets per second through one flow switch vs a minimal Python UDP relay.

Layout (the same for both relays)::

    harness process (CPU 0)                      relay process (CPU 1)
    +--------------------------+   loopback UDP  +--------------------------------+
    | generator --------------------------------> relay under test               |
    | sink      <-------------------------------- (dict relay | FlowSwitch)       |
    +--------------------------+                 +--------------------------------+

* ``dict`` relay (the peer): a blocking socket loop ``data, addr = recvfrom(); sendto(data,
  table[int.from_bytes(data[48:56])])`` -- one dict lookup per packet on the dst Host ID.
* ``flow-switch`` relay (ours): a real ``FlowSwitch`` driven by a real ``NodeRuntime`` on
  uvloop (non-blocking socket, ``add_reader``, batches of 64 ``recvfrom``, ``flush()``), its
  tables installed by a real ``Controller`` behind a real ``ControllerRuntime`` over TCP.

The generator keeps at most ``--window`` packets in flight (sent and not yet back at the
sink), so queues never overflow and the slower side -- the relay -- sets the pace. The
sink counts delivered packets over ``--duration`` seconds after ``--warmup``. Before the
relays, the harness measures its own ceiling (generator straight to sink): a relay rate
close to it would mean the harness, not the relay, was the bottleneck.

Each relay process is started by ``run_relay(kind, listen_addr, sink_addr)``, which runs
this file with ``--relay``; a later change can prefix that command to run it elsewhere
(e.g. in a network namespace) without touching the measurement.

With ``--netns`` (root) the same measurement crosses a real kernel network: the harness
runs in namespace ``sb{id}-gen``, both relays in ``sb{id}-relay``, joined by one veth pair
(a private /30); the relay is started with ``ip netns exec`` prefixed to ``relay_command``.
The namespaces are removed at the end, whatever happens.

Run: ``PYTHONPATH=src python bench/forwarding.py [--size 1200] [--duration 3] [--runs 3] [--netns]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from _common import Address, emit, environment, median, pin_to_cpu, process_cpu_seconds
from scaffold.core.controller import Controller
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.topology import DatacenterSpec, HostSpec, Topology
from scaffold.deploy.address import parse_address
from scaffold.deploy.daemons.jsonlog import JsonLog
from scaffold.deploy.daemons.switch_pool import start_pool
from scaffold.ids import ObjectId
from scaffold.runtime.aio import BATCH, SOCKET_BUFFER, AddressBook, ControllerRuntime, EmuLink, NodeRuntime
from scaffold.runtime.aio import run as aio_run
from scaffold.runtime.metrics import node_summary
from scaffold.wire import control
from scaffold.wire.header import HEADER_LEN, Header, Proto, encode

#: the goals (issue #12): one worker ahead of the per-datagram relay; two, 1.7 times it
GOAL = 1.0
GOAL_TWO_WORKERS = 1.7
#: the relays: the per-datagram peer, the peer with GSO/GRO, ours; each also as ``KIND-wN``
KINDS = ("dict", "dict-gro", "flow-switch")
HARNESS_CPU = 0
RELAY_CPU = 1
#: Hosts of the bench topology never heartbeat (they are sockets in the harness), so the
#: controller is told to wait an hour before declaring them dead.
HOST_HEARTBEAT_INTERVAL = 3600.0
#: How long a window of packets may stay unanswered before it is written off as lost.
STALL_TIMEOUT = 0.05
DICT_RELAY_HOST_ID = 1
# Linux constants the socket module does not name (linux/udp.h)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: set by ``--inside-netns``: what prefixes the relay command, and the two ends' addresses
RELAY_PREFIX: list[str] = []
HARNESS_IP = "127.0.0.1"
RELAY_IP = "127.0.0.1"
NETNS: dict[str, Any] = {}


# -- relay processes ---------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the SIGTERM handler to end the dict relay's blocking loop."""


def _udp_socket(bind: Address, *, blocking: bool, reuse_port: bool = False) -> socket.socket:
    """A UDP socket with the buffer sizes ``NodeRuntime`` asks for."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(blocking)
    sock.bind(bind)
    return sock


def _announce(record: dict[str, Any]) -> None:
    """One JSON line on stdout for the harness (ready, then final stats)."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _serve_dict(
    listen: Address, sink: Address, reuse_port: bool = False, sock: socket.socket | None = None
) -> None:
    """The peer: the smallest useful Python relay, one dict lookup per packet."""
    if sock is None:
        sock = _udp_socket(listen, blocking=True, reuse_port=reuse_port)
    table = {DICT_RELAY_HOST_ID: sink}

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    _announce({"address": sock.getsockname()[:2], "dst_dc": 1, "dst_host": DICT_RELAY_HOST_ID})
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    try:
        while True:
            data, _ = recvfrom(65535)
            sendto(data, table[int.from_bytes(data[48:56])])
    except _Stop:
        pass
    sock.close()
    _announce({"driver": "blocking recvfrom/sendto loop"})


def _gro_size(ancillary: list[tuple[int, int, bytes]], n: int) -> int:
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO:
            return int.from_bytes(data[:4], sys.byteorder) or n
    return n


def _serve_dict_gro(
    listen: Address, sink: Address, reuse_port: bool = False, sock: socket.socket | None = None
) -> None:
    """The peer for batching: the dict relay with the kernel's trains. It reads trains (GRO),
    looks every datagram's dst Host ID up like ``dict`` does, and sends a train whose
    datagrams all go to one address on in one ``sendmsg`` (GSO), else datagram by datagram."""
    if sock is None:
        sock = _udp_socket(listen, blocking=True, reuse_port=reuse_port)
    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    table = {DICT_RELAY_HOST_ID: sink}

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    _announce({"address": sock.getsockname()[:2], "dst_dc": 1, "dst_host": DICT_RELAY_HOST_ID})
    buffer = bytearray(65536)
    view = memoryview(buffer)
    buffers = [buffer]
    recvmsg_into, sendmsg, sendto = sock.recvmsg_into, sock.sendmsg, sock.sendto
    cmsg_space = socket.CMSG_SPACE(4)
    segment: dict[int, list[tuple[int, int, bytes]]] = {}
    try:
        while True:
            n, ancillary, _, _ = recvmsg_into(buffers, cmsg_space)
            size = _gro_size(ancillary, n) if ancillary else n
            hop = None
            for offset in range(48, n, size):
                next_hop = table[int.from_bytes(view[offset : offset + 8])]
                if hop is None:
                    hop = next_hop
                elif next_hop != hop:
                    hop = None
                    break
            if hop is None:
                for offset in range(0, n, size):
                    data = view[offset : offset + size]
                    sendto(data, table[int.from_bytes(data[48:56])])
            elif size < n:
                cmsg = segment.get(size)
                if cmsg is None:
                    cmsg = segment[size] = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                sendmsg([view[:n]], cmsg, 0, hop)
            else:
                sendto(view[:n], hop)
    except _Stop:
        pass
    sock.close()
    _announce({"driver": "blocking recvmsg_into (GRO) / sendmsg (GSO) loop, one dict lookup per datagram"})


def bench_topology() -> Topology:
    """One DC, one flow switch; the sink and the generator are its hosts."""
    return Topology(
        datacenters=(
            DatacenterSpec(
                "bench",
                ("bench-fs",),
                "bench-os",
                (HostSpec("sink", "bench-fs"), HostSpec("source", "bench-fs")),
            ),
        )
    )


async def _serve_flow_switch(
    listen: Address, sink: Address, sources: list[Address], workers: int = 1
) -> None:
    """Ours: a FlowSwitch in a NodeRuntime, tables from a real controller over TCP. With
    ``workers`` > 1, what ``scaffold switch --workers N`` runs: this process supervises
    worker processes that share the address, and holds the control connection."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    topology = bench_topology()
    controller = ControllerRuntime(Controller(topology, heartbeat_interval=HOST_HEARTBEAT_INTERVAL))
    await controller.start()
    # The hosts are plain sockets in the harness process: their Hello is handed to the real
    # controller core here, as its TCP server would after reading it.
    for host in ("sink", "source"):
        hello = control.Hello(node=host, role="host", gateway="bench-fs")
        controller.core.receive_message(host, hello, controller.now())
    controller.flush()
    book = AddressBook()
    book.add("sink", sink)
    for i, source in enumerate(sources):
        book.add("source" if i == 0 else f"source-{i}", source)
    # The same egress link stages EmbeddedNetwork derives from a topology.
    links: dict[tuple[str, str], EmuLink] = {}
    for link in topology.node_links():
        links[(link.a, link.b)] = EmuLink(link.delay, link.loss)
        links[(link.b, link.a)] = EmuLink(link.delay, link.loss)
    core = FlowSwitch("bench-fs", "bench")
    node: NodeRuntime[FlowSwitch]
    if workers > 1:
        # The workers learn the sink's and sources' addresses from the controller's peers
        # table, which their Hello records above filled in.
        for name, address in (("sink", sink), ("source", sources[0])):
            hello = control.Hello(node=name, role="host", gateway="bench-fs", address=address)
            controller.core.receive_message(name, hello, controller.now())
        controller.flush()
        options = argparse.Namespace(
            name="bench-fs",
            role="flow",
            dc="bench",
            controller=f"{controller.address[0]}:{controller.address[1]}",
            advertise=None,
            link=[],
            stats_interval=0.5,
            workers=workers,
            no_offload=False,
        )
        node = await start_pool(
            options, core, [controller.address], listen, JsonLog("bench-fs"), asyncio.Event(), None
        )
        await node.start()
    else:
        node = NodeRuntime(core, book, links, controller.address, bind=listen)
        await node.start()
    sink_id = controller.core.hosts["sink"].host_id
    deadline = loop.time() + 30.0
    while not (core.synced and core.tables["host_routes"].get(sink_id) == "sink"):
        if loop.time() > deadline:
            raise TimeoutError("the flow switch never got its TableSync")
        await asyncio.sleep(0.005)
    if workers > 1:
        await asyncio.sleep(1.0)  # every worker synced (they report within 0.5 s)
    _announce({"address": list(node.address), "dst_dc": core.dc_id, "dst_host": sink_id})
    await stopped.wait()
    summary = node_summary(core.role, node.metrics())
    driver = f"NodeRuntime (uvloop, add_reader, batch {BATCH}, GSO/GRO) + ControllerRuntime over TCP"
    if workers > 1:
        driver = f"{workers} worker processes (scaffold switch --workers), each a NodeRuntime; " + driver
    record = {
        "driver": driver,
        "forwarded": summary["forwarded"],
        "drops": summary["drops"],
        "counters": summary["counters"],
        "runtime": summary["runtime"],
        "table_version": summary["version"],
    }
    await node.close()
    await controller.close()
    _announce(record)


def relay_main(
    kind: str, listen: Address, sink: Address, sources: list[Address], cpu: int | None, worker: bool = False
) -> None:
    """Entry point of a relay process (``--relay``). ``KIND-wN`` runs N processes on one
    address (``SO_REUSEPORT``), unpinned: this one and N - 1 more of the peer (``worker``),
    or the flow switch's own worker pool."""
    base, _, count = kind.partition("-w")
    workers = int(count or 1)
    if cpu is not None and workers == 1:
        pin_to_cpu(cpu)
    if base == "flow-switch":
        aio_run(_serve_flow_switch(listen, sink, sources, workers))
        return
    serve = _serve_dict if base == "dict" else _serve_dict_gro
    if workers == 1:
        serve(listen, sink, worker)
        return
    pin_to_cpu(RELAY_CPU)
    sock = _udp_socket(listen, blocking=True, reuse_port=True)  # its port is every worker's
    listen = sock.getsockname()[:2]
    others = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--relay",
                base,
                "--relay-worker",
                "--listen",
                f"{listen[0]}:{listen[1]}",
                "--sink",
                f"{sink[0]}:{sink[1]}",
                "--source",
                f"{sources[0][0]}:{sources[0][1]}",
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers - 1)
    ]
    pin_workers([os.getpid(), *(other.pid for other in others)])
    try:
        serve(listen, sink, True, sock)
    finally:
        for other in others:
            other.terminate()
            other.wait(10)


@dataclass
class Relay:
    """A running relay process and what it announced."""

    kind: str
    process: subprocess.Popen[str]
    address: Address
    dst_dc: int
    dst_host: int
    final: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        lines = [line for line in out.splitlines() if line.strip()]
        self.final = json.loads(lines[-1]) if lines else {}


def relay_command(kind: str, listen_addr: Address, sink_addr: Address, sources: list[Address]) -> list[str]:
    """The command that runs one relay; a wrapper (namespace, taskset) may prefix it."""
    return [
        sys.executable,
        __file__,
        "--relay",
        kind,
        "--listen",
        f"{listen_addr[0]}:{listen_addr[1]}",
        "--sink",
        f"{sink_addr[0]}:{sink_addr[1]}",
        "--source",
        ",".join(f"{ip}:{port}" for ip, port in sources),
        "--cpu",
        str(RELAY_CPU),
    ]


def run_relay(kind: str, listen_addr: Address, sink_addr: Address, sources: list[Address]) -> Relay:
    """Start relay ``kind`` listening on ``listen_addr`` and forwarding to ``sink_addr``.

    Raises:
        RuntimeError: the relay died before announcing its address.
    """
    process = subprocess.Popen(
        [*RELAY_PREFIX, *relay_command(kind, listen_addr, sink_addr, sources)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"relay {kind!r} exited with {process.returncode} before it was ready")
    ready = json.loads(line)
    return Relay(
        kind,
        process,
        (str(ready["address"][0]), int(ready["address"][1])),
        ready["dst_dc"],
        ready["dst_host"],
    )


# -- harness -----------------------------------------------------------------------------


@dataclass
class Measurement:
    pps: float
    sent: int
    received: int
    stalls: int
    written_off: int
    #: CPU seconds the relay used per wall second while driven (1.0 = one core saturated)
    relay_cpu: float = 0.0


def packet(size: int, dst_dc: int, dst_host: int) -> bytes:
    """A fully refined datagram packet of ``size`` bytes, header included."""
    header = Header(
        proto=Proto.DATAGRAM,
        flow=0x0123456789ABCDEF,
        obj=ObjectId.from_name("bench").raw,
        dst_dc=dst_dc,
        dst_host=dst_host,
        dst_socket=1,
        src_dc=dst_dc,
        src_host=dst_host + 1,
        src_socket=1,
    )
    return encode(header, bytes(size - HEADER_LEN))


def drive(
    sources: list[socket.socket],
    sink: socket.socket,
    target: Address,
    data: bytes,
    *,
    window: int,
    warmup: float,
    duration: float,
    train: int,
) -> Measurement:
    """Blast ``data`` at ``target`` with at most ``window`` in flight, round robin over the
    ``sources`` sockets (several underlay flows), ``train`` datagrams per send (GSO) when
    above 1; count arrivals at ``sink`` (which reads trains when it has GRO on)."""
    for source in sources:
        source.connect(target)
    size = len(data)
    burst = [data * train]
    cmsg = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
    sends = [source.sendmsg if train > 1 else source.send for source in sources]
    gro = bool(sink.getsockopt(SOL_UDP, UDP_GRO))
    recv_into = sink.recv_into
    buf = bytearray(65536)
    sent = received = stalls = written_off = 0
    start = time.perf_counter()
    measure_from = start + warmup
    measure_to = measure_from + duration
    mark_t = 0.0
    mark_n = 0
    measuring = False
    last_progress = start
    turn = 0
    flows = len(sends)
    while True:
        credit = window - max(0, sent - received - written_off)
        try:
            while credit >= train:
                if train > 1:
                    sends[turn](burst, cmsg)  # type: ignore[call-arg]
                else:
                    sends[turn](data)  # type: ignore[call-arg]
                turn = (turn + 1) % flows
                sent += train
                credit -= train
        except BlockingIOError:
            pass
        got = reads = 0
        try:
            while reads < BATCH:
                n = recv_into(buf)
                # A train holds datagrams of one size: count them by length.
                got += (n + size - 1) // size if gro else 1
                reads += 1
        except BlockingIOError:
            pass
        received += got
        now = time.perf_counter()
        if got:
            last_progress = now
        elif now - last_progress > STALL_TIMEOUT:
            # Lost somewhere: write the window off so the generator keeps going.
            stalls += 1
            written_off += sent - received - written_off
            last_progress = now
        if not measuring and now >= measure_from:
            measuring = True
            mark_t, mark_n = now, received
        elif measuring and now >= measure_to:
            break
    pps = (received - mark_n) / (now - mark_t)
    # Drain what is still on its way, so the loss figures are complete.
    deadline = time.perf_counter() + 0.2
    while time.perf_counter() < deadline and received + written_off < sent:
        try:
            n = recv_into(buf)
            received += (n + size - 1) // size if gro else 1
        except BlockingIOError:
            time.sleep(0.001)
    return Measurement(pps, sent, received, stalls, written_off)


def drain(sock: socket.socket) -> int:
    """Discard whatever is queued on ``sock``; how many packets that was."""
    n = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(65535)
            n += 1
    return n


def measure_relay(
    kind: str, sources: list[socket.socket], sink: socket.socket, args: argparse.Namespace
) -> tuple[Measurement, dict[str, Any]]:
    """One run of one relay: start it, drive it, stop it."""
    relay = run_relay(kind, (RELAY_IP, 0), sink.getsockname()[:2], [s.getsockname()[:2] for s in sources])
    try:
        drain(sink)
        data = packet(args.size, relay.dst_dc, relay.dst_host)
        cpu_before, wall_before = process_cpu_seconds(relay.process.pid), time.perf_counter()
        result = drive(
            sources,
            sink,
            relay.address,
            data,
            window=args.window,
            warmup=args.warmup,
            duration=args.duration,
            train=args.train,
        )
        result.relay_cpu = (process_cpu_seconds(relay.process.pid) - cpu_before) / (
            time.perf_counter() - wall_before
        )
    finally:
        relay.stop()
    return result, relay.final


def pin_workers(pids: list[int]) -> dict[int, int | None]:
    """Worker ``i`` of a relay on the machine's CPU ``(RELAY_CPU + i) mod n``: the first on the
    relay's CPU, the next on the harness's (whose GSO trains leave it room)."""
    return {pid: pin_to_cpu(RELAY_CPU + i, pid) for i, pid in enumerate(pids)}


def _loss(runs: list[Measurement]) -> dict[str, Any]:
    sent = sum(r.sent for r in runs)
    received = sum(r.received for r in runs)
    return {
        "sent": sent,
        "received": received,
        "lost": sent - received,
        "fraction": round((sent - received) / sent, 6) if sent else 0.0,
        "stalls": sum(r.stalls for r in runs),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    harness_cpu = pin_to_cpu(HARNESS_CPU)
    sources = [_udp_socket((HARNESS_IP, 0), blocking=False) for _ in range(args.flows)]
    sink = _udp_socket((HARNESS_IP, 0), blocking=False)
    if args.train > 1:
        sink.setsockopt(SOL_UDP, UDP_GRO, 1)
    # The harness alone (generator straight to sink): the ceiling of what it can measure.
    ceiling = drive(
        sources,
        sink,
        sink.getsockname()[:2],
        packet(args.size, 1, 1),
        window=args.window,
        warmup=0.2,
        duration=min(args.duration, 1.0),
        train=args.train,
    )
    for source in sources:  # connected to the sink: reopen them
        source.close()
    sources = [_udp_socket((HARNESS_IP, 0), blocking=False) for _ in range(args.flows)]
    drain(sink)
    kinds = [kind if n == 1 else f"{kind}-w{n}" for n in args.workers for kind in KINDS]
    results: dict[str, list[Measurement]] = {k: [] for k in kinds}
    finals: dict[str, dict[str, Any]] = {}
    for run in range(args.runs):
        # Alternate the order too, so no relay always runs on a warmer machine.
        for kind in kinds if run % 2 == 0 else tuple(reversed(kinds)):
            result, final = measure_relay(kind, sources, sink, args)
            results[kind].append(result)
            finals[kind] = final
    for source in sources:
        source.close()
    sink.close()
    pps = {kind: median([r.pps for r in runs]) for kind, runs in results.items()}
    relay_pps = pps["dict"]
    switch_pps = pps["flow-switch"]
    fs_final = finals.get("flow-switch", {})
    ratios = {f"{kind}_vs_dict": round(value / relay_pps, 3) for kind, value in pps.items() if kind != "dict"}
    for n in args.workers:
        if n > 1:
            suffix = f"-w{n}"
            ratios[f"flow-switch{suffix}_vs_dict{suffix}"] = round(
                pps[f"flow-switch{suffix}"] / pps[f"dict{suffix}"], 3
            )
            ratios[f"flow-switch{suffix}_vs_dict-gro{suffix}"] = round(
                pps[f"flow-switch{suffix}"] / pps[f"dict-gro{suffix}"], 3
            )
    ratios["flow-switch_vs_dict-gro"] = round(switch_pps / pps["dict-gro"], 3)
    return {
        "bench": "forwarding",
        "packet_size": args.size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "runs": args.runs,
        "window": args.window,
        "train": args.train,
        "flows": args.flows,
        "relay_pps": relay_pps,
        "flow_switch_pps": switch_pps,
        "ratio": round(switch_pps / relay_pps, 3),
        "goal": GOAL,
        "goal_two_workers": GOAL_TWO_WORKERS,
        "pps": pps,
        "ratios": ratios,
        "harness_ceiling_pps": round(ceiling.pps, 1),
        "relay_vs_ceiling": round(relay_pps / ceiling.pps, 3),
        "samples_pps": {k: [round(r.pps, 1) for r in v] for k, v in results.items()},
        "relay_cpu_utilisation": {k: [round(r.relay_cpu, 2) for r in v] for k, v in results.items()},
        "loss": {k: _loss(v) for k, v in results.items()},
        "flow_switch_last_run": {k: v for k, v in fs_final.items() if k != "driver"},
        "driver": {
            "relay": finals.get("dict", {}).get("driver", ""),
            "flow_switch": fs_final.get("driver", ""),
            "controller": (
                "real Controller on a one-DC Topology; the sink and source hosts' Hello records are "
                f"fed to its core in-process, host heartbeat interval {HOST_HEARTBEAT_INTERVAL:.0f} s"
            ),
        },
        "pinning": {
            "harness": harness_cpu,
            "relay": RELAY_CPU if harness_cpu is not None else None,
            "workers": "worker i of a relay of several processes on CPU (relay + i) mod n",
        },
        "workers": {
            kind: finals.get(kind, {}).get("driver", "")
            for kind in kinds
            if "-w" in kind and kind.startswith("flow-switch")
        },
        "path": NETNS or {"kind": "loopback", "harness": HARNESS_IP, "relay": RELAY_IP},
        **environment(),
    }


def run_in_namespaces(argv: list[str]) -> None:
    """``--netns``: create two namespaces and a veth pair, run this harness inside the first
    (relays go to the second), print its report, remove both namespaces."""
    if os.geteuid() != 0:
        sys.exit("--netns needs root (it creates network namespaces)")
    run_id = os.urandom(3).hex()
    gen, relay = f"sb{run_id}-gen", f"sb{run_id}-relay"
    second = 100 + int(run_id[:2], 16) % 150
    harness_ip, relay_ip = f"10.{second}.250.1", f"10.{second}.250.2"
    commands = [
        f"netns add {gen}",
        f"netns add {relay}",
        f"link add vb{run_id}g netns {gen} type veth peer name vb{run_id}r netns {relay}",
        f"-n {gen} link set lo up",
        f"-n {relay} link set lo up",
        f"-n {gen} addr add {harness_ip}/30 dev vb{run_id}g",
        f"-n {relay} addr add {relay_ip}/30 dev vb{run_id}r",
        f"-n {gen} link set vb{run_id}g up",
        f"-n {relay} link set vb{run_id}r up",
    ]
    try:
        for command in commands:
            subprocess.run(["ip", *command.split()], check=True, timeout=20)
        inner = [a for a in argv if a != "--netns"]
        env = dict(os.environ, SCAFFOLD_BENCH_GEN_NS=gen)
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                gen,
                sys.executable,
                __file__,
                *inner,
                "--inside-netns",
                f"{relay},{harness_ip},{relay_ip}",
            ],
            env=env,
            check=False,
            timeout=3600,
        )
        if done.returncode:
            sys.exit(done.returncode)
    finally:
        for ns in (gen, relay):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=20, capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=1200, help="packet size incl. the 76-byte header")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    parser.add_argument("--runs", type=int, default=3, help="runs per relay (medians are reported)")
    parser.add_argument("--window", type=int, default=256, help="packets in flight at most")
    parser.add_argument(
        "--train", type=int, default=32, help="datagrams per generator send (GSO train); 1: one by one"
    )
    parser.add_argument(
        "--flows", type=int, default=8, help="generator sockets (underlay flows: workers share them by hash)"
    )
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    parser.add_argument("--relay-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="worker counts each relay runs with (default 1,2: one process, and two on one port)",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="", help=argparse.SUPPRESS)
    parser.add_argument("--source", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--netns", action="store_true", help="harness and relay in two namespaces (root)")
    parser.add_argument("--inside-netns", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.netns and not args.relay:
        run_in_namespaces(argv if argv is not None else sys.argv[1:])
        return
    if args.inside_netns:
        global HARNESS_IP, RELAY_IP
        relay_ns, HARNESS_IP, RELAY_IP = args.inside_netns.split(",")
        RELAY_PREFIX[:] = ["ip", "netns", "exec", relay_ns]
        NETNS.update(
            kind="netns",
            harness={"namespace": os.environ.get("SCAFFOLD_BENCH_GEN_NS", ""), "ip": HARNESS_IP},
            relay={"namespace": relay_ns, "ip": RELAY_IP},
            link="veth pair, /30, no qdisc beyond the default",
        )
    if args.relay:
        relay_main(
            args.relay,
            parse_address(args.listen),
            parse_address(args.sink),
            [parse_address(a) for a in args.source.split(",")],
            args.cpu,
            args.relay_worker,
        )
        return
    if args.size < HEADER_LEN or args.size > 65507:
        parser.error(f"--size must be between {HEADER_LEN} and 65507")
    emit(bench(args))


if __name__ == "__main__":
    main()
