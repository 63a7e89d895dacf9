"""Object-switch resolutions per second with a million objects vs a plain dict lookup.

An ``ObjectSwitch`` in DC 1 gets ``--objects`` objects through a real ``TableSync`` in parts
of at most ``RECORD_BUDGET`` bytes (each encoded to MessagePack and decoded again, as the
controller's TCP stream delivers them; the switch applies them when the last one is in). Every object
has a wide-area replica set, one of ``REPLICA_SETS`` sets of three DCs with weights, so the
switch's interning of replica sets works as designed; the objects whose set includes DC 1
also have a ``local`` entry, one of as many sets of three hosts.

The timed loops have the same shape: a for-loop over one pre-built list of (Object ID,
Flow ID) pairs -- random objects, random 64-bit flows -- calling a bound method, either
``switch.resolve(obj, flow)`` or ``table.get(obj)`` on a plain dict with the same keys.
Both tables hold their own key objects (decoded from hex), as the switch does. The first
loop passes no source DC, so it is the ``weighted`` pick (one Maglev index, docs/protocol.md
§3.2); a third loop, ``nearest``, passes a random source DC of the sync's cost table
(``dc_costs``, DCs on a line), the default policy's cascade of §3.5
(``switch.resolve(obj, flow, src)``), and reports its ratio to the same dict loop.

Memory is the growth of traced Python allocations (``tracemalloc``) while building each
table from its wire form, divided by the number of objects; install time is measured on a
separate, untraced build.

Run: ``PYTHONPATH=src python bench/resolve.py [--objects 1000000] [--lookups 1000000]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec

from _common import emit, environment, median
from scaffold.core.object_switch import ObjectSwitch
from scaffold.ids import ObjectId
from scaffold.wire import control
from scaffold.wire.control import MAX_FRAME, RECORD_BUDGET, SwitchTables, TableSync

GOAL = 0.5
OWN_DC = 1
REPLICA_SETS = 8
#: DC IDs 1..DCS take part in wide-area replica sets.
DCS = 6


def replica_sets(rng: random.Random) -> tuple[list[list[tuple[int, int]]], list[list[tuple[int, int]]]]:
    """``REPLICA_SETS`` wide-area sets (three DCs each, weighted) and as many local host sets."""
    wide: list[list[tuple[int, int]]] = []
    for i in range(REPLICA_SETS):
        # Half the sets include this switch's DC, so half the resolutions go local.
        others = rng.sample(range(2, DCS + 1), 2 if i % 2 == 0 else 3)
        dcs = ([OWN_DC] if i % 2 == 0 else []) + others
        wide.append(sorted((dc, rng.randint(1, 4)) for dc in dcs))
    local = [
        sorted((host, rng.randint(1, 4)) for host in rng.sample(range(1, 65), 3)) for _ in range(REPLICA_SETS)
    ]
    return wide, local


def object_ids(count: int) -> list[bytes]:
    """``count`` raw Object IDs, ``ObjectId.from_name(f"obj-{i}")``."""
    return [ObjectId.from_name(f"obj-{i}").raw for i in range(count)]


#: entries per part, so that each stays well under ``RECORD_BUDGET``
PART_ENTRIES = RECORD_BUDGET // 160


def table_sync(objects: list[bytes], rng: random.Random) -> list[TableSync]:
    """The full table an object switch in DC ``OWN_DC`` gets from the controller, in parts."""
    wide_sets, local_sets = replica_sets(rng)
    wide: dict[str, list[tuple[int, int]]] = {}
    local: dict[str, list[tuple[int, int]]] = {}
    for i, raw in enumerate(objects):
        key = raw.hex()
        members = wide_sets[i % REPLICA_SETS]
        wide[key] = tuple(members)
        if any(dc == OWN_DC for dc, _ in members):
            local[key] = tuple(local_sets[i % REPLICA_SETS])
    parts: list[TableSync] = []
    keys = list(wide)
    for start in range(0, len(keys), PART_ENTRIES):
        chunk = keys[start : start + PART_ENTRIES]
        tables = SwitchTables(
            wide={k: wide[k] for k in chunk},
            local={k: local[k] for k in chunk if k in local},
            gateway="bench-fs",
        )
        parts.append(TableSync(version=1, dc_id=OWN_DC, tables=tables, more=True))
    last = parts[-1]
    parts[-1] = TableSync(last.version, last.dc_id, last.tables, more=False)
    # the cost table the nearest policy reads: DCs 1..DCS on a line, 1 ms per hop
    first = parts[0]
    costs = {a: {b: 1000 * abs(a - b) for b in range(1, DCS + 1)} for a in range(1, DCS + 1)}
    tables = msgspec.structs.replace(first.tables, dc_costs=costs)
    parts[0] = TableSync(first.version, first.dc_id, tables, more=first.more)
    return parts


def install(wire: list[bytes]) -> ObjectSwitch:
    """Decode TableSync parts as they come off the control stream and apply them."""
    switch = ObjectSwitch("bench-os", "bench")
    for body in wire:
        switch.receive_control(control.decode(body), 0.0)
    return switch


def plain_dict(wire: list[bytes]) -> dict[bytes, tuple[int, ...]]:
    """The peer: Object ID -> one shared value, keys decoded from the same hex text."""
    value = (OWN_DC, 1)
    table: dict[bytes, tuple[int, ...]] = {}
    for body in wire:
        message = control.decode(body)
        assert isinstance(message, TableSync)
        table.update((bytes.fromhex(key), value) for key in message.tables.wide)
    return table


def traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes of Python allocations still held after ``build()``, and what it built."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, built


def time_loop(call: Callable[..., object], pairs: list[tuple[bytes, int]], *, with_flow: bool) -> float:
    """Calls per second of ``call`` over ``pairs`` (the same loop shape for both sides)."""
    start = time.perf_counter()
    if with_flow:
        for obj, flow in pairs:
            call(obj, flow)
    else:
        for obj, _flow in pairs:
            call(obj)
    return len(pairs) / (time.perf_counter() - start)


def time_nearest(call: Callable[..., object], triples: list[tuple[bytes, int, int]]) -> float:
    """Calls per second of ``call(obj, flow, src)`` over ``triples`` (the loop shape above)."""
    start = time.perf_counter()
    for obj, flow, src in triples:
        call(obj, flow, src)
    return len(triples) / (time.perf_counter() - start)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    started = time.perf_counter()
    objects = object_ids(args.objects)
    sync = table_sync(objects, rng)
    wire = [control.encode(part) for part in sync]
    del sync
    prepare_s = time.perf_counter() - started

    # Install time, untraced: decode + TableSync -> receive_control -> tables_changed.
    gc.collect()
    started = time.perf_counter()
    messages = [control.decode(body) for body in wire]
    decoded = time.perf_counter()
    switch = ObjectSwitch("bench-os", "bench")
    for message in messages:
        switch.receive_control(message, 0.0)
    install_s = time.perf_counter() - decoded
    decode_s = decoded - started
    del messages
    table = plain_dict(wire)

    pairs = [(rng.choice(objects), rng.getrandbits(64)) for _ in range(args.lookups)]
    misses = sum(switch.resolve(obj, flow) is None for obj, flow in pairs[:10_000])
    triples = [(obj, flow, rng.randint(1, DCS)) for obj, flow in pairs]
    resolve_rates: list[float] = []
    get_rates: list[float] = []
    nearest_rates: list[float] = []
    for _ in range(args.repeats):
        resolve_rates.append(time_loop(switch.resolve, pairs, with_flow=True))
        get_rates.append(time_loop(table.get, pairs, with_flow=False))
        nearest_rates.append(time_nearest(switch.resolve, triples))
    resolve_per_s = median(resolve_rates)
    get_per_s = median(get_rates)
    nearest_per_s = median(nearest_rates)
    local_share = sum(1 for obj, flow in pairs[:10_000] if (r := switch.resolve(obj, flow)) and r[1]) / min(
        10_000, len(pairs)
    )
    sizes = switch.table_sizes()
    stats = {
        "wide_entries": sizes["wide"],
        "local_entries": sizes["local"],
        "interned_replica_sets": len(switch._sets),
        "interned_entries": len(switch._entries),
        "drops": dict(switch.drops),
    }
    del switch, table
    gc.collect()

    switch_bytes, _ = traced_bytes(lambda: install(wire))
    dict_bytes, _ = traced_bytes(lambda: plain_dict(wire))

    return {
        "bench": "resolve",
        "objects": args.objects,
        "lookups": args.lookups,
        "repeats": args.repeats,
        "resolve_per_s": resolve_per_s,
        "dict_get_per_s": get_per_s,
        "ratio": round(resolve_per_s / get_per_s, 3),
        "goal": GOAL,
        "nearest_per_s": nearest_per_s,
        "nearest_ratio": round(nearest_per_s / get_per_s, 3),
        "bytes_per_object": round(switch_bytes / args.objects, 1),
        "dict_bytes_per_object": round(dict_bytes / args.objects, 1),
        "memory_ratio": round(switch_bytes / dict_bytes, 2),
        "install_s": round(install_s, 2),
        "decode_s": round(decode_s, 2),
        "prepare_s": round(prepare_s, 2),
        "tablesync_bytes": sum(len(body) for body in wire),
        "tablesync_parts": len(wire),
        "largest_part_bytes": max(len(body) for body in wire),
        "parts_fit_max_frame": max(len(body) for body in wire) <= MAX_FRAME,
        "resolved_locally": round(local_share, 3),
        "unresolved": misses,
        "samples_per_s": {
            "resolve": [round(r) for r in resolve_rates],
            "dict_get": [round(r) for r in get_rates],
            "nearest": [round(r) for r in nearest_rates],
        },
        "switch": stats,
        **environment(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=1_000_000, help="objects installed in the switch")
    parser.add_argument("--lookups", type=int, default=1_000_000, help="(object, flow) pairs per timed loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per side (medians are reported)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.objects < 1 or args.lookups < 1 or args.repeats < 1:
        parser.error("--objects, --lookups and --repeats must be positive")
    emit(bench(args))


if __name__ == "__main__":
    main()
