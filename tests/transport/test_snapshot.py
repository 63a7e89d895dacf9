"""The connection snapshot (scaffold.transport.snapshot): typed records, versioned bytes,
and untrusted input that must fail as ``MalformedPacket("bad-flow-state")``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.core.topology import default_topology
from scaffold.errors import MalformedPacket
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import SNAPSHOT_VERSION, StreamConnection, StreamOptions, StreamSnapshot
from scaffold.transport import snapshot as snapshots
from scaffold.wire import flow_state

NONCE = 0xC0FFEE


def busy_pair() -> tuple[StreamConnection, StreamConnection]:
    """A client mid-transfer: data in flight, a SACK hole on the server, bytes to read."""
    client = StreamConnection("client", NONCE, 0.0, StreamOptions(recv_buffer=50_000))
    server = StreamConnection("server", NONCE, 0.0, StreamOptions(recv_buffer=50_000))
    client.connect(0.0)
    now = 0.0
    for _ in range(3):
        now += 0.01
        for segment in client.segments_to_send(now):
            server.receive_segment(segment, now)
        for segment in server.segments_to_send(now):
            client.receive_segment(segment, now)
    client.send(random.Random(1).randbytes(40_000))
    server.send(b"reply" * 1000)
    now += 0.01
    for index, segment in enumerate(client.segments_to_send(now)):
        if index != 2:  # one segment lost: the server holds data above a gap
            server.receive_segment(segment, now)
    for segment in server.segments_to_send(now):
        client.receive_segment(segment, now)
    for conn in (client, server):
        while conn.next_event() is not None:
            pass
    return client, server


def test_round_trip_through_bytes_keeps_every_record() -> None:
    for conn in busy_pair():
        record = conn.snapshot()
        assert isinstance(record, StreamSnapshot) and record.version == SNAPSHOT_VERSION
        blob = conn.export_state()
        restored = StreamConnection.from_state(blob, 5.0)
        assert restored.snapshot() == record
        assert StreamConnection.from_state(record, 5.0).snapshot() == record
        assert restored.stats == conn.stats


def test_each_component_brings_its_own_record() -> None:
    _, server = busy_pair()
    record = server.snapshot()
    assert record.receiver.stream.out_of_order  # the hole's data above it
    assert record.sender.recovery.segments  # the reply in flight
    assert record.sender.congestion.cwnd == server.stats.cwnd
    assert record.sender.rtt.srtt == server.stats.srtt


def as_map(conn: StreamConnection) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.msgpack.decode(conn.export_state())
    return decoded


def corrupt(change: Callable[[dict[str, Any]], None]) -> bytes:
    mapping = as_map(busy_pair()[1])
    change(mapping)
    return msgspec.msgpack.encode(mapping)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(mapping: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            mapping = mapping[key]
        mapping[leaf] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda mapping: mapping.pop(key)


CORRUPTIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "old version": _set("version", 1),
    "state of the wrong type": _set("state", 5),
    "unknown state": _set("state", "dancing"),
    "unknown role": _set("role", "peer"),
    "negative nonce": _set("nonce", -1),
    "nonce as text": _set("nonce", "0xc0ffee"),
    "missing sender": _drop("sender"),
    "invalid options": _set("options.mss", 0),
    "options of the wrong type": _set("options.keepalive", "soon"),
    "unknown congestion algorithm": _set("sender.congestion.algorithm", "cubic"),
    "send offsets out of order": _set("sender.stream.una", 10**9),
    "send data as text": _set("sender.stream.data", "abc"),
    "held data below rcv_nxt": _set("receiver.stream.out_of_order", [[0, b"x"]]),
    "sent segment out of range": _set("sender.recovery.segments", [[0, 10**9, False, 0, False]]),
    "rto not positive": _set("sender.rtt.rto", 0.0),
    "drops of the wrong type": _set("drops", ["bad-nonce"]),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_inconsistent_snapshot_is_malformed(name: str) -> None:
    blob = corrupt(CORRUPTIONS[name])
    with pytest.raises(MalformedPacket) as info:
        StreamConnection.from_state(blob, 0.0)
    assert info.value.reason == "bad-flow-state"


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01\x02garbage", b"\xc1", b"\x93\x01\x02\x03", msgspec.msgpack.encode({"version": 2})],
    ids=["empty", "garbage", "never-used byte", "an array", "a bare version"],
)
def test_garbage_is_malformed(blob: bytes) -> None:
    with pytest.raises(MalformedPacket):
        snapshots.decode(blob)


def test_invalid_utf8_is_malformed() -> None:
    _, server = busy_pair()
    blob = server.export_state()
    text = b"\xabestablished"  # msgpack fixstr of 11 bytes: the state
    assert blob.count(text) == 1
    bad = blob.replace(text, b"\xab" + b"\xff" * 11)
    with pytest.raises(MalformedPacket):
        StreamConnection.from_state(bad, 0.0)


def test_truncated_snapshots_are_malformed() -> None:
    blob = busy_pair()[0].export_state()
    for size in range(0, len(blob), max(1, len(blob) // 97)):
        with pytest.raises(MalformedPacket):
            StreamConnection.from_state(blob[:size], 0.0)


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_mutated_snapshots_never_raise_anything_else(data: st.DataObject) -> None:
    blob = bytearray(CLIENT_BLOB)
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        conn = StreamConnection.from_state(bytes(blob), 1.0)
    except MalformedPacket as exc:
        assert exc.reason == "bad-flow-state"
        return
    # what decodes is a working connection
    conn.get_timer()
    conn.segments_to_send(1.0)
    conn.handle_timer(100.0)
    conn.segments_to_send(100.0)


CLIENT_BLOB = busy_pair()[0].export_state()


def test_host_stack_import_of_a_corrupt_transport_is_malformed() -> None:
    net = SimNetwork(default_topology(), seed=3)
    net.start()
    net.settle()
    host = net.host("east-h3")
    before = dict(host.flows)
    state = flow_state.FlowState(
        socket_id=77,
        flow=1,
        nonce=NONCE,
        obj=ObjectId.from_name("web").raw,
        proto=2,
        role="client",
        peer_dc=1,
        peer_host=1,
        peer_socket=1,
        transport=b"\x81\xa7version\x02",  # a map with only the version: not a snapshot
    )
    with pytest.raises(MalformedPacket) as info:
        host.import_flow(flow_state.encode(state), net.now)
    assert info.value.reason == "bad-flow-state"
    assert host.flows == before
