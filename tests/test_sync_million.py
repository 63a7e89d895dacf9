"""A full sync of 1,000,000 objects through the sim (docs/protocol.md §6.2, §6.6): the
controller cuts it into parts that each fit a control frame, the object switch applies them
only when the last one is in, and while a sync is under way it answers from its old tables.

The controller's tables are filled by a compact generator -- a million entries straight into
its canonical wide-area table, as registrations would leave them -- since registering a
million objects one by one is the bench's job (``bench/control_plane.py``), not a test's."""

from __future__ import annotations

import hashlib
import itertools

from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import make_topology
from scaffold.runtime.sim import SimNetwork

OBJECTS = 1_000_000


def test_a_million_object_sync_is_sent_in_frames_and_applied_atomically() -> None:
    topo = make_topology(datacenters=2, hosts_per_datacenter=1)
    net = SimNetwork(topo, seed=11)
    server = net.controller.hosts[topo.hosts()[0].name]
    entry = ((net.controller.dc_ids[server.dc], 1),)
    keys = [hashlib.sha256(i.to_bytes(4, "big")).hexdigest() for i in range(OBJECTS)]
    net.controller.tables.wide.exact.update(dict.fromkeys(keys, entry))
    net.start()
    net.settle(timeout=5)
    os_name = topo.datacenters[1].object_switch  # the other DC: it sends first packets there
    switch = net.switch(os_name)
    assert isinstance(switch, ObjectSwitch)
    # Every part fitted a frame (the sim refuses larger ones, as a stream's receiver does).
    assert net.stats[os_name]["control-frame-too-large"] == 0
    assert switch.table_sizes()["wide"] == OBJECTS
    dc_id = entry[0][0]
    assert all(switch.resolve(bytes.fromhex(k), flow) == (dc_id, 0) for flow, k in enumerate(keys[::9973]))

    # The switch reconnects (say its control connection broke): a new full sync, in parts,
    # with one more object. Part-way through, it still answers from its old tables.
    newcomer = hashlib.sha256(b"newcomer").hexdigest()
    net.controller.tables.wide.exact[newcomer] = entry
    version = switch.version
    net.act(os_name, lambda core, now: core.hello())
    events = itertools.count()
    net.run_while(lambda: not switch._staged or next(events) < 10, timeout=1.0)
    assert switch._staged and switch._staged[-1].more  # some parts in, not the last
    assert switch.version == version
    assert switch.resolve(bytes.fromhex(keys[-1]), 5) == (dc_id, 0)
    assert switch.resolve(bytes.fromhex(newcomer), 5) is None
    net.run(0.1)
    assert switch.version > version and not switch._staged
    assert switch.resolve(bytes.fromhex(newcomer), 5) == (dc_id, 0)
    assert switch.table_sizes()["wide"] == OBJECTS + 1
    assert net.stats[os_name]["control-frame-too-large"] == 0
