"""The control plane at scale: the sans-IO controller and switches grown to ``--dcs``
datacenters, ``--hosts`` hosts and ``--objects`` objects (docs/protocol.md §6).

Figures, each with how it is measured:

* ``bind_cost_ms_10dcs_100hosts``: the issue's own measurement -- 10 DCs, 100 hosts, every
  switch connected: the median cost of one more ``Bind`` (with its flush) at 1k/2k/4k objects.
* ``registrations_per_s``: ``Bind`` records fed to the sans-IO ``Controller`` (one replica
  on a random host, three DCs' worth of hosts taking turns), its tables flushed after every
  batch of ``--batch``, its events taken (the daemon hands them on, and the core keeps only
  the latest) and its state changes committed to a ``SqliteStore`` (the embedded default) as
  the controller daemon commits them: from a thread of its own, the batches
  flushed while a commit runs going into the next one together (``GroupCommitter``) -- the
  rate over the last ``--window`` registrations before each checkpoint (10k, 100k, 1M; the
  last one ends once every commit has returned). Flat rates mean a registration costs the
  same at any size. ``commit_lag_s_max``: the longest a batch waited, from its flush to its
  commit returning (what a node waits for its answer beyond the core's work).
  ``registrations_per_cpu_s``: the same windows per CPU-second of this process (what other
  work on the machine does not change); ``registrations_per_s_mean``: the wall-clock rate
  over each whole span between checkpoints, the store's folds included (``SqliteStore``);
  ``registrations_per_s_min``: the slowest of the ``--window`` windows over the whole run
  (``wall``; ``cpu`` per CPU-second of the process, ``core_cpu`` of the core's own thread),
  how many fell below 10,000/s, and the three slowest with what ran in each (``Window``:
  collections by generation, the freezes, a fold of the store, the longest flush, the share
  of a CPU the process got).
  The survivors are frozen every second, as the controller daemon's ``calm_collector`` does
  (without it, full collections walking every object took a third of the run).
* ``controller_bytes_per_object`` / ``_per_host``: growth of the process's resident memory
  while the objects / hosts were added, divided by their number.
* ``object_switch_bytes_per_object``: one object switch's full sync (in parts, encoded and
  decoded as on the wire) applied to a fresh ``ObjectSwitch``: memory growth per object.
* ``bind_to_every_object_switch_s``: in the ``sim`` runtime on a ``--sim-dcs`` topology with
  random backbone delays, the virtual time from a host's ``Bind`` to every object switch
  resolving the object, next to the controller's coalescing window and the control delay.
* ``host_death_delta``: the deltas one host's death causes: records, switches, bytes.
* ``restore``: at 100k and 1M objects (one replica each, on a random host of the same
  topology), how long a controller takes to start from them: ``sqlite_s``, a restart
  (``SqliteStore.load`` and the ``Controller`` built from it, as ``scaffold controller
  --store`` does), and ``promote_s``, a standby taking the lead (its mirror's snapshot and the
  ``Controller`` built from it, as ``ControllerReplica`` does) -- each in wall-clock and CPU
  seconds, and per object. ``--only restore`` measures only these.
* ``new_leader_after_kill_s``: with ``--etcd``, three ``scaffold controller --etcd`` processes
  on a real three-member cluster: the seconds from a SIGKILL of the leader to a survivor
  answering ``status`` as the leader, ``--failovers`` times (``--only failover``: just these).
* ``etcd_registrations_per_s``: with ``--etcd``, a real three-member etcd cluster on loopback
  (Debian's etcd 3.4), the leader's ``EtcdStore`` committing the state changes of
  ``--etcd-objects`` registrations in group commits of ``--batch``.

Run: ``PYTHONPATH=src python bench/control_plane.py [--quick] [--etcd]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, environment
from scaffold.core.controller import Controller, ControllerState, StateChange, StateRows
from scaffold.core.controller.state import HostState
from scaffold.core.controller.tables import COALESCE
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import DatacenterSpec, HostSpec, LinkSpec, Topology, make_topology
from scaffold.ids import ObjectId
from scaffold.runtime.aio import paused_collector
from scaffold.runtime.aio.collector import FREEZE_INTERVAL, freeze_survivors
from scaffold.runtime.sqlite_store import SqliteStore
from scaffold.wire import control


def rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def topology(dcs: int, hosts: int, rng: random.Random) -> Topology:
    """``dcs`` datacenters on a ring plus random chords, ``hosts`` spread over them."""
    per = max(1, hosts // dcs)
    datacenters = []
    for k in range(1, dcs + 1):
        fs = (f"dc{k}-fs1",)
        datacenters.append(
            DatacenterSpec(
                f"dc{k}", fs, f"dc{k}-os", tuple(HostSpec(f"dc{k}-h{j}", fs[0]) for j in range(per))
            )
        )
    links = {(f"dc{k}", f"dc{k % dcs + 1}") for k in range(1, dcs + 1)} if dcs > 1 else set()
    for _ in range(dcs):
        a, b = rng.sample(range(1, dcs + 1), 2) if dcs > 2 else (1, 1)
        if a != b and (f"dc{b}", f"dc{a}") not in links:
            links.add((f"dc{a}", f"dc{b}"))
    backbone = tuple(LinkSpec(a, b, rng.uniform(0.001, 0.03)) for a, b in sorted(links))
    return Topology(tuple(datacenters), backbone)


def connect_switches(ctl: Controller) -> list[str]:
    switches = list(ctl.switches)
    for name in switches:
        state = ctl.switches[name]
        ctl.receive_message(name, control.Hello(node=name, role=state.role, dc=state.dc), 0.0)
    ctl.flush_tables()
    ctl.messages_to_send()
    return switches


class GroupCommitter:
    """Commits as the controller daemon does (``runtime/aio/controller.py``): from one thread
    of its own, the batches queued while a commit runs going into the next commit together,
    while the core goes on. ``finish`` waits for the last and returns the longest a batch
    waited, from being queued to its commit returning (seconds)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[tuple[list[StateChange], float] | None] = queue.SimpleQueue()
        self._lag = 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-commits", daemon=True)
        self._thread.start()

    def queue(self, changes: list[StateChange]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((changes, time.perf_counter()))

    def finish(self) -> float:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._lag

    def _run(self) -> None:
        stop = False
        while not stop:
            batches = [self._queue.get()]
            while not self._queue.empty():
                batches.append(self._queue.get())
            waiting = [b for b in batches if b is not None]
            stop = len(waiting) < len(batches)
            if not waiting:
                continue
            try:
                self.store.commit([c for changes, _ in waiting for c in changes])
            except BaseException as exc:
                self._error = exc
                return
            self._lag = max(self._lag, time.perf_counter() - waiting[0][1])


class Window:
    """One ``--window`` of registrations: its rates and what ran in it -- the collector (time
    per generation), the bench's freezes, a fold of the store, the longest flush -- so that
    the slowest window says what made it slow."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._open(0)

    def _open(self, n: int) -> None:
        self.n, self.wall, self.cpu = n, time.perf_counter(), time.process_time()
        self.core_cpu = time.thread_time()  # the core's own thread (the store's run beside it)
        self.gc_s = [0.0, 0.0, 0.0]
        self._gc_started = 0.0
        self.freeze_s = self.flush_s_max = 0.0
        self.folding = self.store.folding
        self.folds = self.store.folds

    def collected(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks``: time each collection, by generation."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_s[info["generation"]] += time.perf_counter() - self._gc_started

    def close(self, n: int) -> dict[str, Any]:
        """This window's figures (registrations up to ``n``); the next one starts."""
        count = n - self.n
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        out = {
            "at": n,
            "per_s": round(count / wall),
            "per_cpu_s": round(count / cpu),
            "per_core_cpu_s": round(count / max(time.thread_time() - self.core_cpu, 1e-9)),
            "cpu_share": round(cpu / wall, 2),
            "gc_s": [round(s, 3) for s in self.gc_s],
            "freeze_s": round(self.freeze_s, 3),
            "flush_s_max": round(self.flush_s_max, 3),
            "folding": self.folding or self.store.folds > self.folds,
            "load": round(os.getloadavg()[0], 1),
        }
        self._open(n)
        return out


def registrations(args: argparse.Namespace, rng: random.Random, store_dir: Path) -> dict[str, Any]:
    gc.collect()
    base = rss()
    topo = topology(args.dcs, args.hosts, rng)
    ctl = Controller(topo, open_binding=True)
    connect_switches(ctl)
    hosts = [h.name for h in topo.hosts()]
    for name in hosts:
        gateway = f"{topo.dc_of(name)}-fs1"
        ctl.receive_message(name, control.Hello(node=name, role="host", gateway=gateway), 0.0)
        ctl.receive_message(name, control.Heartbeat(node=name, seq=1), 0.0)  # bindings complete
    ctl.flush_tables()
    ctl.messages_to_send()
    store = SqliteStore(store_dir / "bench.sqlite3")
    store.commit(ctl.state_changes())
    gc.collect()
    host_bytes = rss() - base
    checkpoints = [c for c in (10_000, 100_000, 1_000_000) if c <= args.objects]
    rates: dict[str, float] = {}
    cpu_rates: dict[str, float] = {}
    mean_rates: dict[str, float] = {}
    after_hosts = rss()
    # The daemon's calm_collector freezes its start-up at once and then every second what
    # survived (the hosts as they registered): here, the hosts registered above.
    freeze_survivors()
    committer = GroupCommitter(store)
    n = 0
    window_start = span_start = time.perf_counter()
    window_cpu = time.process_time()
    window_n = span_n = 0
    delta_bytes = 0
    frozen_at = time.perf_counter()
    #: every --window registrations of the run: its rates and what ran in it (``Window``)
    every: list[dict[str, Any]] = []
    window = Window(store)
    gc.callbacks.append(window.collected)
    while n < args.objects:
        if time.perf_counter() - frozen_at >= FREEZE_INTERVAL:
            started = time.perf_counter()
            freeze_survivors()  # as the controller daemon's calm_collector does
            frozen_at = time.perf_counter()
            window.freeze_s += frozen_at - started
        for _ in range(args.batch):
            key = ObjectId.from_name(f"bench-{n}").raw.hex()
            ctl.receive_message(rng.choice(hosts), control.Bind(obj=key, weight=1), 0.0)
            n += 1
        started = time.perf_counter()
        ctl.flush_tables()
        while ctl.next_event() is not None:  # handed on as the daemon's flush does (log kept bounded)
            pass
        delta_bytes += sum(len(control.encode(m)) for _, m in ctl.messages_to_send())
        window.flush_s_max = max(window.flush_s_max, time.perf_counter() - started)
        committer.queue(ctl.state_changes())  # committed meanwhile, as the daemon does
        window.folding |= store.folding
        if n - window.n >= args.window:
            every.append(window.close(n))
        if n in checkpoints or any(c - args.window == n for c in checkpoints):
            if any(c - args.window == n for c in checkpoints):
                window_start, window_cpu, window_n = time.perf_counter(), time.process_time(), n
            else:
                if n == checkpoints[-1]:
                    committer.finish()  # the last span ends with all of it durable
                now = time.perf_counter()
                rates[str(n)] = round((n - window_n) / (now - window_start))
                cpu_rates[str(n)] = round((n - window_n) / (time.process_time() - window_cpu))
                mean_rates[f"{span_n}-{n}"] = round((n - span_n) / (now - span_start))
                span_start, span_n = now, n
    gc.callbacks.remove(window.collected)
    commit_lag = committer.finish()
    gc.unfreeze()  # the figures below as without the freezes (their cyclic garbage collected)
    gc.collect()
    object_bytes = rss() - after_hosts
    # One object switch's full sync, through the wire, into a fresh switch.
    os_name = topo.datacenters[0].object_switch
    ctl.tables.sync(os_name)
    ctl.flush_tables()
    parts = [control.encode(m) for node, m in ctl.messages_to_send() if node == os_name]
    gc.collect()
    before = rss()
    switch = ObjectSwitch(os_name, topo.datacenters[0].name)
    for part in parts:
        switch.receive_control(control.decode(part), 0.0)
    gc.collect()
    switch_bytes = rss() - before
    # One host dies: what goes out.
    victim = max(hosts, key=lambda h: len(ctl.registry.host_objects.get(h, ())))
    ctl.node_disconnected(victim, 1.0)
    out = ctl.messages_to_send()
    sizes = [len(control.encode(m)) for _, m in out]
    return {
        "datacenters": args.dcs,
        "hosts": len(hosts),
        "objects": args.objects,
        "registrations_per_s": rates,
        "registrations_per_cpu_s": cpu_rates,
        "registrations_per_s_mean": mean_rates,
        "registrations_per_s_min": {
            "wall": min(w["per_s"] for w in every),
            "cpu": min(w["per_cpu_s"] for w in every),
            "core_cpu": min(w["per_core_cpu_s"] for w in every),
            "windows": len(every),
            "windows_below_10k": sum(w["per_s"] < 10_000 for w in every),
            #: the slowest windows (wall), with what ran in each
            "slowest": sorted(every, key=lambda w: w["per_s"])[:3],
        },
        "commit_lag_s_max": round(commit_lag, 3),
        "controller_bytes_per_object": round(object_bytes / args.objects),
        "controller_bytes_per_host": round(host_bytes / len(hosts)),
        "object_switch_bytes_per_object": round(switch_bytes / args.objects, 1),
        "object_switch_sync": {
            "parts": len(parts),
            "bytes": sum(map(len, parts)),
            "largest_part": max(map(len, parts)),
        },
        "delta_bytes_per_registration": round(delta_bytes / args.objects, 1),
        "host_death_delta": {
            "host_objects": len(ctl.registry.host_objects.get(victim, ())),
            "records": len(out),
            "switches": len({node for node, _ in out}),
            "bytes_total": sum(sizes),
            "bytes_largest": max(sizes) if sizes else 0,
        },
    }


def restore(args: argparse.Namespace, store_dir: Path) -> dict[str, Any]:
    """How long a controller takes to start from 100k and 1M saved objects: restarted from
    SQLite, and promoted from a standby's mirror of the rows (etcd)."""
    rng = random.Random(args.seed)
    topo = topology(args.dcs, args.hosts, rng)
    hosts = topo.hosts()
    host_rows = [HostState(h.name, k + 1, topo.dc_of(h.gateway), h.gateway) for k, h in enumerate(hosts)]
    out: dict[str, Any] = {}
    for count in (c for c in (100_000, 1_000_000) if c <= args.objects):
        objects = {
            ObjectId.from_name(f"bench-{n}").raw.hex(): {rng.choice(hosts).name: 1} for n in range(count)
        }
        state = ControllerState(len(hosts) + 1, host_rows, objects, {}, {})
        path = store_dir / f"restore-{count}.sqlite3"
        store = SqliteStore(path)
        store.commit([StateChange(r.kind, r.key, r) for r in state.records()])
        store.close()
        mirror = StateRows(state)
        del state, objects
        sqlite = _start_timed(topo, SqliteStore(path).load, count)
        promote = _start_timed(topo, mirror.snapshot, count)
        del mirror
        out[str(count)] = {f"sqlite_{k}": v for k, v in sqlite.items()} | {
            f"promote_{k}": v for k, v in promote.items()
        }
    return {"restore": out}


def _start_timed(topo: Topology, load: Callable[[], ControllerState | None], count: int) -> dict[str, float]:
    """Wall-clock and CPU seconds of ``load()`` and a ``Controller`` built from it, under the
    collector pause the controller's runtimes start a core under."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    with paused_collector():
        ctl = Controller(topo, saved=load())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(ctl.objects) == count
    del ctl
    gc.unfreeze()  # what the pause froze is garbage now
    return {"s": round(wall, 2), "cpu_s": round(cpu, 2), "us_per_object": round(wall / count * 1e6, 1)}


def bind_cost() -> dict[str, Any]:
    """The issue's first measurement: 10 DCs, 100 hosts, every switch connected -- the cost of
    one more ``Bind`` (and its flush) with 1,000, 2,000 and 4,000 objects registered."""
    topo = make_topology(datacenters=10, hosts_per_datacenter=10)
    ctl = Controller(topo, open_binding=True)
    connect_switches(ctl)
    hosts = [h for h in topo.hosts()]
    for h in hosts:
        ctl.receive_message(h.name, control.Hello(node=h.name, role="host", gateway=h.gateway), 0.0)
        ctl.receive_message(h.name, control.Heartbeat(node=h.name, seq=1), 0.0)
    out: dict[str, float] = {}
    n = 0
    for target in (1000, 2000, 4000):
        while n < target:
            ctl.receive_message(
                hosts[n % len(hosts)].name, control.Bind(obj=ObjectId.from_name(f"c{n}").raw.hex()), 0.0
            )
            n += 1
        ctl.flush_tables()
        ctl.messages_to_send()
        ctl.state_changes()
        samples = []
        for k in range(20):
            key = ObjectId.from_name(f"extra-{target}-{k}").raw.hex()
            started = time.perf_counter()
            ctl.receive_message(hosts[k].name, control.Bind(obj=key), 0.0)
            ctl.flush_tables()
            ctl.messages_to_send()
            ctl.state_changes()
            samples.append(time.perf_counter() - started)
        out[str(target)] = round(sorted(samples)[len(samples) // 2] * 1e3, 3)
    return {"bind_cost_ms_10dcs_100hosts": out}


def propagation(args: argparse.Namespace) -> dict[str, Any]:
    """Virtual time from one Bind to every object switch resolving it (sim)."""
    from scaffold.runtime.sim import SimNetwork

    rng = random.Random(args.seed)
    topo = make_topology(datacenters=args.sim_dcs, hosts_per_datacenter=1)
    topo = Topology(
        topo.datacenters, tuple(LinkSpec(l.a, l.b, rng.uniform(0.001, 0.03)) for l in topo.backbone)
    )
    net = SimNetwork(topo, seed=args.seed)
    net.start()
    net.settle(timeout=5.0)
    obj = ObjectId.from_name("propagated")
    switches = [net.switch(dc.object_switch) for dc in topo.datacenters]
    started = net.now
    net.act(topo.hosts()[0].name, lambda host, now: host.bind(obj, 1, "propagated"))
    held = net.run_while(
        lambda: not all(isinstance(s, ObjectSwitch) and s.resolve(obj.raw, 1) for s in switches), timeout=2.0
    )
    return {
        "sim_datacenters": args.sim_dcs,
        "bind_to_every_object_switch_s": round(net.now - started, 4) if held else None,
        "coalescing_window_s": COALESCE,
        "control_delay_s": net.control_delay,
        "goal_s": "0.1 + propagation",
    }


async def etcd_rate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Registrations per second with the leader's EtcdStore on a real three-member cluster."""
    import socket

    from scaffold.core.controller import StateRows
    from scaffold.deploy import etcd as etcd_members
    from scaffold.runtime.etcd import Etcd, EtcdStore, Keys

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    members = etcd_members.plan_cluster(
        ["127.0.0.1"] * 3, [(free(), free()) for _ in range(3)], work, "bench"
    )
    procs = [
        subprocess.Popen(
            etcd_members.member_command(m, members, "bench"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for m in members
    ]
    try:
        cluster = Etcd([("127.0.0.1", m.client_port) for m in members])
        keys = Keys("bench")
        for _ in range(100):
            try:
                await cluster.call(lambda c: c.put(keys.leader, b"bench"))
                break
            except Exception:
                await asyncio.sleep(0.1)
        store = EtcdStore(cluster, keys, "bench", asyncio.get_running_loop(), StateRows())
        topo = make_topology(datacenters=3, hosts_per_datacenter=10)
        ctl = Controller(topo, open_binding=True)
        connect_switches(ctl)
        hosts = [h.name for h in topo.hosts()]
        for h in topo.hosts():
            ctl.receive_message(h.name, control.Hello(node=h.name, role="host", gateway=h.gateway), 0.0)
        await store.commit_async(ctl.state_changes())
        rng = random.Random(args.seed)
        started = time.perf_counter()
        for n in range(0, args.etcd_objects, args.batch):
            for i in range(n, min(n + args.batch, args.etcd_objects)):
                ctl.receive_message(
                    rng.choice(hosts), control.Bind(obj=ObjectId.from_name(f"e{i}").raw.hex()), 0.0
                )
            ctl.flush_tables()
            ctl.messages_to_send()
            await store.commit_async(ctl.state_changes())
        rate = args.etcd_objects / (time.perf_counter() - started)
        await cluster.close()
        return {"etcd_members": 3, "etcd_objects": args.etcd_objects, "etcd_registrations_per_s": round(rate)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def failover(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seconds from a SIGKILL of the leading controller replica (a process of its own, on a
    real three-member etcd cluster) to a survivor answering ``status`` as the leader,
    ``--failovers`` times (the killed replica is started again each time)."""
    import socket

    from scaffold.core.controller.commands import Status
    from scaffold.deploy import etcd as etcd_members
    from scaffold.runtime import admin
    from scaffold.runtime.aio import wait_until
    from scaffold.runtime.tls import CredentialStore

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    topo_file = work / "failover.toml"
    topo_file.write_text(
        'name = "failover"\n[[datacenter]]\nname = "dc1"\nhosts = ["dc1-h1"]\n'
        '[[datacenter]]\nname = "dc2"\nhosts = ["dc2-h1"]\n[[link]]\na = "dc1"\nb = "dc2"\n'
    )
    members = etcd_members.plan_cluster(
        ["127.0.0.1"] * 3, [(free(), free()) for _ in range(3)], work / "failover", "failover"
    )
    endpoints = ",".join(m.endpoint for m in members)
    credentials = CredentialStore(work / "credentials")
    operator = credentials.operator()
    addresses = {f"ctl{k}": ("127.0.0.1", free()) for k in (1, 2, 3)}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, argv: list[str]) -> None:
        procs[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_replica(name: str) -> None:
        host, port = addresses[name]
        start(name, [
            sys.executable, "-m", "scaffold", "controller", "--name", name, "--topology", str(topo_file),
            "--listen", f"{host}:{port}", "--etcd", endpoints,
            "--credentials", str(credentials.node(name, "controller").directory),
        ])  # fmt: skip

    async def leader(among: list[str], replicas: int) -> str | None:
        """The leader a replica of ``among`` names, once ``replicas`` are registered."""
        try:
            status = await admin.call(
                [addresses[n] for n in among], Status(), timeout=2.0, credentials=operator
            )
        except Exception:
            return None
        if len(status.get("controllers", ())) < replicas:
            return None
        return next((r["name"] for r in status["controllers"] if r["leader"]), None)

    async def await_leader(among: list[str], other_than: str | None, replicas: int) -> str:
        found: list[str] = []

        async def led() -> bool:
            name = await leader(among, replicas)
            if name is not None and name != other_than:
                found.append(name)
            return bool(found)

        await wait_until(led, 60, "a leader", interval=0.02)
        return found[0]

    async def run_all() -> list[float]:
        took: list[float] = []
        for _ in range(args.failovers):
            first = await await_leader(list(addresses), None, len(addresses))  # every one up
            procs[first].kill()
            started = time.perf_counter()
            procs[first].wait()
            await await_leader([n for n in addresses if n != first], first, 0)
            took.append(round(time.perf_counter() - started, 2))
            start_replica(first)  # back, as a standby
        return took

    try:
        for m in members:
            start(m.name, etcd_members.member_command(m, members, "failover"))
        for name in addresses:
            start_replica(name)
        took = asyncio.run(run_all())
    finally:
        for proc in procs.values():
            proc.kill()
        for proc in procs.values():
            proc.wait(timeout=10)
    return {
        "new_leader_after_kill_s": took,
        "new_leader_after_kill_median_s": sorted(took)[len(took) // 2],
        "failover_load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dcs", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="registrations per flush and commit")
    parser.add_argument("--window", type=int, default=5000, help="registrations timed before each checkpoint")
    parser.add_argument("--sim-dcs", type=int, default=50)
    parser.add_argument("--etcd", action="store_true", help="also measure against a real 3-member etcd")
    parser.add_argument("--etcd-objects", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="100 DCs, 10,000 hosts, 100,000 objects")
    parser.add_argument("--failovers", type=int, default=5, help="leader kills timed with --etcd")
    parser.add_argument(
        "--only",
        choices=("registrations", "restore", "failover"),
        help="only the registration figures, the restore figures, or the leader kills (etcd)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.dcs, args.hosts, args.objects = 100, 10_000, 100_000
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="scaffold-bench-"))
    try:
        report: dict[str, Any] = {"bench": "control_plane"}
        started = time.perf_counter()
        if args.only == "failover":
            report.update(failover(args, work))
        elif args.only == "registrations":
            report.update(registrations(args, rng, work))
        else:
            if args.only is None:
                report.update(bind_cost())
                report.update(registrations(args, rng, work))
                report.update(propagation(args))
            report.update(restore(args, work))
            if args.etcd:
                report.update(asyncio.run(etcd_rate(args, work)))
                report.update(failover(args, work))
        report["seconds"] = round(time.perf_counter() - started, 1)
        report["load_average"] = os.getloadavg()
        report.update(environment())
        emit(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
