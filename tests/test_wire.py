"""Wire formats: header, datagram, signal and control (docs/protocol.md §2, §4, §6)."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.errors import MalformedPacket
from scaffold.ids import ObjectId
from scaffold.wire import control, datagram, header, liveness, signal
from scaffold.wire import stream as wire_stream
from scaffold.wire.control import (
    Bind,
    FrameDecoder,
    Heartbeat,
    Hello,
    SwitchTables,
    SyncRequest,
    TableDelta,
    TableKeys,
    TableSync,
    Unbind,
    Welcome,
)
from scaffold.wire.datagram import DatagramSegment, DatagramType
from scaffold.wire.header import HEADER_LEN, Flags, Header, Proto
from scaffold.wire.liveness import MAX_ENTRIES, Bundle, BundleType
from scaffold.wire.signal import Signal, SignalType

U8 = st.integers(0, 2**8 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
OBJECTS = st.binary(min_size=32, max_size=32).filter(any)
FLAGS = st.sampled_from([Flags(v) for v in range(4)])
RANDOM_BYTES = st.binary(max_size=300)

HEADERS = st.builds(
    Header,
    proto=st.sampled_from(Proto),
    flow=U64,
    obj=OBJECTS,
    dst_dc=U32,
    dst_host=U64,
    dst_socket=U32,
    src_dc=U32,
    src_host=U64,
    src_socket=U32,
    flags=FLAGS,
    ttl=U8,
)
DATAGRAMS = st.builds(
    DatagramSegment,
    type=st.sampled_from(DatagramType),
    nonce=U64,
    payload=st.binary(max_size=200),
)
SIGNALS = st.builds(Signal, type=st.sampled_from(SignalType), a=U64, b=U64)

SAMPLE_HEADER = Header(
    proto=Proto.DATAGRAM,
    flow=0x0102030405060708,
    obj=ObjectId.from_name("web").raw,
    dst_dc=7,
    dst_host=0x1122334455667788,
    dst_socket=9,
    src_dc=3,
    src_host=0x99AABBCCDDEEFF00,
    src_socket=4,
    flags=Flags.TRACE,
    ttl=17,
)


def assert_only_malformed(parser: Callable[[bytes], Any], data: bytes) -> None:
    """Call ``parser``; if it raises, the exception must be MalformedPacket."""
    try:
        parser(data)
    except MalformedPacket as exc:
        assert isinstance(exc.reason, str) and exc.reason
    except Exception as exc:
        pytest.fail(f"{parser.__module__}.{parser.__name__} raised {exc!r} on {data!r}")


def reason_of(parser: Callable[[bytes], Any], data: bytes) -> str:
    with pytest.raises(MalformedPacket) as info:
        parser(data)
    return info.value.reason


# -- header ----------------------------------------------------------------------------------


def test_header_is_76_bytes_with_fields_at_documented_offsets() -> None:
    data = header.encode(SAMPLE_HEADER)
    assert HEADER_LEN == 76
    assert len(data) == 76
    assert data[0] == header.VERSION
    assert data[1] == Proto.DATAGRAM
    assert data[2] == Flags.TRACE
    assert data[3] == 17
    assert data[4:12] == (0x0102030405060708).to_bytes(8, "big")
    assert data[12:44] == SAMPLE_HEADER.obj
    assert header.DST_ROUTE.unpack_from(data, header.DST_OFFSET) == (
        7,
        0x1122334455667788,
    )
    assert header.DST_LOCATOR.unpack_from(data, 44) == (7, 0x1122334455667788, 9)
    assert struct.unpack_from("!IQI", data, 60) == (3, 0x99AABBCCDDEEFF00, 4)


@settings(max_examples=200, deadline=None)
@given(HEADERS)
def test_in_place_views_read_the_fields_parse_reads(h: Header) -> None:
    """What switches and hosts read or rewrite in place agrees with the full parser."""
    data = header.encode(h)
    assert header.ROUTING.unpack_from(data) == (header.VERSION, h.proto, h.flags, h.ttl, h.dst_dc, h.dst_host)
    assert header.HOP.unpack_from(data) == (h.ttl, h.flow, h.obj, h.dst_dc, h.dst_host, h.dst_socket)
    buf = bytearray(data)
    buf[header.TTL_OFFSET] = 5
    buf[header.FLAGS_OFFSET] |= Flags.REDIRECTED
    header.DST_LOCATOR.pack_into(buf, header.DST_OFFSET, 1, 2, 3)
    rewritten = header.parse(bytes(buf))
    assert (rewritten.ttl, rewritten.flags & Flags.REDIRECTED) == (5, Flags.REDIRECTED)
    assert (rewritten.dst_dc, rewritten.dst_host, rewritten.dst_socket) == (1, 2, 3)
    assert rewritten.src_host == h.src_host and rewritten.obj == h.obj


def test_segment_nonces_are_read_in_place_where_the_parsers_find_them() -> None:
    segment = datagram.encode(DatagramSegment(DatagramType.DATA, 0xABCDEF, b"payload"))
    assert datagram.NONCE.unpack_from(segment) == (0xABCDEF,)
    syn = wire_stream.encode(wire_stream.StreamSegment(wire_stream.StreamType.SYN, 0x1234, window=5))
    assert wire_stream.NONCE.unpack_from(syn) == (0x1234,)
    assert syn[wire_stream.TYPE_OFFSET] == wire_stream.StreamType.SYN


@settings(max_examples=200, deadline=None)
@given(HEADERS, st.binary(max_size=100))
def test_header_round_trip(h: Header, payload: bytes) -> None:
    data = header.encode(h, payload)
    assert len(data) == HEADER_LEN + len(payload)
    parsed = header.parse(data)
    assert parsed == h
    assert isinstance(parsed.proto, Proto)
    assert isinstance(parsed.flags, Flags)
    assert data[HEADER_LEN:] == payload


@settings(max_examples=50, deadline=None)
@given(HEADERS)
def test_header_every_truncation_is_malformed(h: Header) -> None:
    data = header.encode(h)
    for n in range(HEADER_LEN):
        assert reason_of(header.parse, data[:n]) == "truncated"


def test_header_with_dst_replaces_only_the_locator() -> None:
    moved = SAMPLE_HEADER.with_dst(1, 2, 3)
    assert (moved.dst_dc, moved.dst_host, moved.dst_socket) == (1, 2, 3)
    assert moved.src_host == SAMPLE_HEADER.src_host
    assert moved.flow == SAMPLE_HEADER.flow
    assert SAMPLE_HEADER.dst_dc == 7  # the original is unchanged


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize("version", [0, 2, 255])
def test_header_wrong_version(version: int) -> None:
    data = _patched(header.encode(SAMPLE_HEADER), 0, bytes([version]))
    assert reason_of(header.parse, data) == "bad-version"


@pytest.mark.parametrize("proto", [0, 6, 17, 255])
def test_header_bad_proto(proto: int) -> None:
    data = _patched(header.encode(SAMPLE_HEADER), 1, bytes([proto]))
    assert reason_of(header.parse, data) == "bad-proto"


@pytest.mark.parametrize("flags", [0x08, 0x80, 0x09, 0xFF])
def test_header_unknown_flags(flags: int) -> None:
    data = _patched(header.encode(SAMPLE_HEADER), 2, bytes([flags]))
    assert reason_of(header.parse, data) == "bad-flags"


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_header_known_flags_accepted(flags: int) -> None:
    data = _patched(header.encode(SAMPLE_HEADER), 2, bytes([flags]))
    assert header.parse(data).flags == Flags(flags)


def test_header_zero_object() -> None:
    data = _patched(header.encode(SAMPLE_HEADER), 12, bytes(32))
    assert reason_of(header.parse, data) == "zero-object"


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_header_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(header.parse, data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0, 1, 2, 3, 4]), st.binary(min_size=75, max_size=120))
def test_header_plausible_bytes_raise_only_malformed(proto: int, rest: bytes) -> None:
    # version 1 up front so the parser gets past its first check and reaches the others
    data = bytes([header.VERSION, proto]) + rest[1:]
    assert_only_malformed(header.parse, data)


# -- datagram --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(DATAGRAMS)
def test_datagram_round_trip(segment: DatagramSegment) -> None:
    data = datagram.encode(segment)
    assert len(data) == 12 + len(segment.payload)
    parsed = datagram.parse(data)
    assert parsed == segment
    assert isinstance(parsed.type, DatagramType)


@settings(max_examples=50, deadline=None)
@given(DATAGRAMS)
def test_datagram_every_truncation_is_malformed(segment: DatagramSegment) -> None:
    data = datagram.encode(segment)
    for n in range(12):
        assert reason_of(datagram.parse, data[:n]) == "truncated"


def test_datagram_header_only_is_an_empty_payload() -> None:
    data = datagram.encode(DatagramSegment(DatagramType.CLOSE, 5))
    assert data == bytes([2, 0, 0, 0]) + (5).to_bytes(8, "big")
    assert datagram.parse(data) == DatagramSegment(DatagramType.CLOSE, 5, b"")


@pytest.mark.parametrize("kind", [0, 4, 255])
def test_datagram_bad_type(kind: int) -> None:
    data = bytes([kind, 0, 0, 0]) + (1).to_bytes(8, "big") + b"payload"
    assert reason_of(datagram.parse, data) == "bad-datagram-type"


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_datagram_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(datagram.parse, data)


# -- signal ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(SIGNALS)
def test_signal_round_trip(sig: Signal) -> None:
    data = signal.encode(sig)
    assert len(data) == 20
    parsed = signal.parse(data)
    assert parsed == sig
    assert isinstance(parsed.type, SignalType)


@settings(max_examples=50, deadline=None)
@given(SIGNALS, st.binary(min_size=1, max_size=40))
def test_signal_any_length_but_20_is_malformed(sig: Signal, extra: bytes) -> None:
    data = signal.encode(sig)
    for n in range(20):
        assert reason_of(signal.parse, data[:n]) == "truncated"
    assert reason_of(signal.parse, data + extra) == "bad-length"


@pytest.mark.parametrize("kind", [0, 4, 255])
def test_signal_bad_type(kind: int) -> None:
    data = bytes([kind, 0, 0, 0]) + bytes(16)
    assert reason_of(signal.parse, data) == "bad-signal-type"


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_signal_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(signal.parse, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_signal_random_20_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(signal.parse, data)


# -- liveness bundles ------------------------------------------------------------------------

BUNDLES = st.builds(
    Bundle,
    st.sampled_from(BundleType),
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), U64), min_size=1, max_size=MAX_ENTRIES),
)


@settings(max_examples=200, deadline=None)
@given(BUNDLES)
def test_liveness_round_trip_and_truncation(bundle: Bundle) -> None:
    data = liveness.encode(bundle)
    assert len(data) == 8 + 12 * len(bundle.entries) <= 1200 - HEADER_LEN
    assert liveness.parse(data) == bundle
    for n in (0, 7):
        assert reason_of(liveness.parse, data[:n]) == "truncated"
    assert reason_of(liveness.parse, data[:-1]) == "bad-length"
    assert reason_of(liveness.parse, data + b"x") == "bad-length"


def test_liveness_an_answer_may_be_empty_a_probe_may_not() -> None:
    empty = liveness.encode(Bundle(BundleType.ANSWER, 7, []))
    assert liveness.parse(empty) == Bundle(BundleType.ANSWER, 7, [])
    probe = bytes([1, 0, 0, 0]) + (7).to_bytes(4, "big")
    assert reason_of(liveness.parse, probe) == "bad-length"
    too_many = bytes([2, 0]) + (MAX_ENTRIES + 1).to_bytes(2, "big") + bytes(4 + 12 * (MAX_ENTRIES + 1))
    assert reason_of(liveness.parse, too_many) == "bad-length"
    assert reason_of(liveness.parse, bytes([3]) + bytes(19)) == "bad-bundle-type"


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_liveness_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(liveness.parse, data)


# -- control ---------------------------------------------------------------------------------

NAMES = st.text(max_size=20)
ADDRESSES = st.tuples(st.text(max_size=15), st.integers(1, 65535))  # a port is 1..65535 (§6.6)
REPLICAS = st.lists(st.tuples(U64, U64), max_size=4).map(tuple)
HEX_IDS = OBJECTS.map(bytes.hex)

TABLES = st.builds(
    SwitchTables,
    dc_routes=st.dictionaries(U32, NAMES, max_size=3),
    host_routes=st.dictionaries(U64, NAMES, max_size=3),
    moved_hosts=st.dictionaries(U64, U32, max_size=3),
    object_switch=NAMES,
    gateway=NAMES,
    wide=st.dictionaries(HEX_IDS, REPLICAS, max_size=3),
    local=st.dictionaries(HEX_IDS, REPLICAS, max_size=3),
    prefixes=st.dictionaries(NAMES, REPLICAS, max_size=3),
    peers=st.dictionaries(NAMES, ADDRESSES, max_size=3),
)
KEYS = st.builds(
    TableKeys,
    dc_routes=st.lists(U32, max_size=3),
    host_routes=st.lists(U64, max_size=3),
    moved_hosts=st.lists(U64, max_size=3),
    wide=st.lists(HEX_IDS, max_size=3),
    local=st.lists(HEX_IDS, max_size=3),
    prefixes=st.lists(NAMES, max_size=3),
    peers=st.lists(NAMES, max_size=3),
)
MESSAGES = st.one_of(
    st.builds(
        Hello,
        node=NAMES,
        role=st.sampled_from(["host", "flow-switch", "object-switch"]),
        dc=NAMES,
        gateway=NAMES,
        address=st.none() | ADDRESSES,
    ),
    st.builds(
        Welcome,
        node=NAMES,
        dc_id=U32,
        host_id=U64,
        gateway_address=st.none() | ADDRESSES,
        heartbeat_interval=st.floats(allow_nan=False),
    ),
    st.builds(Heartbeat, node=NAMES, seq=U64),
    st.builds(Bind, obj=HEX_IDS, weight=st.integers(1, 1000), name=NAMES),
    st.builds(Unbind, obj=HEX_IDS),
    st.builds(TableSync, version=U64, dc_id=U32, tables=TABLES),
    st.builds(TableDelta, version=U64, upsert=TABLES, remove=KEYS),
    st.builds(SyncRequest, node=NAMES, have_version=U64),
)

SAMPLE_MESSAGES: list[control.ControlMessage] = [
    Hello("east-h1", "host", gateway="east-fs1", address=("127.0.0.1", 4000)),
    Welcome("east-h1", dc_id=1, host_id=42, gateway_address=("127.0.0.1", 5000)),
    Heartbeat("east-h1", 3),
    Bind(ObjectId.from_name("web").raw.hex(), 2, "web"),
    TableDelta(
        version=5,
        upsert=SwitchTables(dc_routes={2: "west-fs1"}, wide={"ab" * 32: ((1, 1), (2, 3))}),
        remove=TableKeys(host_routes=[7]),
    ),
]


@settings(max_examples=200, deadline=None)
@given(MESSAGES)
def test_control_round_trip(message: control.ControlMessage) -> None:
    assert control.decode(control.encode(message)) == message
    framed = control.frame(message)
    (length,) = control.FRAME.unpack_from(framed)
    assert length == len(framed) - 4
    assert FrameDecoder().feed(framed) == [message]


def test_control_frame_fed_byte_by_byte() -> None:
    stream = b"".join(control.frame(m) for m in SAMPLE_MESSAGES)
    decoder = FrameDecoder()
    out: list[control.ControlMessage] = []
    for i in range(len(stream)):
        got = decoder.feed(stream[i : i + 1])
        # a record comes out exactly when its last byte arrives, never earlier
        out.extend(got)
    assert out == SAMPLE_MESSAGES
    assert decoder.feed(b"") == []


@settings(max_examples=100, deadline=None)
@given(st.lists(MESSAGES, min_size=1, max_size=5), st.data())
def test_control_frames_in_random_chunkings(
    messages: list[control.ControlMessage], data: st.DataObject
) -> None:
    stream = b"".join(control.frame(m) for m in messages)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    decoder = FrameDecoder()
    out: list[control.ControlMessage] = []
    for start, end in itertools.pairwise(bounds):
        out.extend(decoder.feed(stream[start:end]))
    assert out == messages


def test_control_partial_frame_yields_nothing_until_complete() -> None:
    framed = control.frame(Heartbeat("n", 1))
    decoder = FrameDecoder()
    assert decoder.feed(framed[:-1]) == []
    assert decoder.feed(framed[-1:]) == [Heartbeat("n", 1)]


def test_control_rejects_an_oversized_length_prefix() -> None:
    decoder = FrameDecoder()
    # the length alone must be enough: nobody should buffer 64 MiB before refusing
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(control.FRAME.pack(control.MAX_FRAME + 1))
    assert info.value.reason == "bad-length"
    with pytest.raises(MalformedPacket):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_control_accepts_a_frame_of_exactly_max_frame_length_prefix() -> None:
    # a length of MAX_FRAME is allowed; it just waits for the body
    assert FrameDecoder().feed(control.FRAME.pack(control.MAX_FRAME)) == []


@pytest.mark.parametrize(
    "body",
    [
        # (an empty frame is the keepalive, no record: tests/test_control_keepalive.py)
        b"\xc1",  # a byte MessagePack never uses
        b"\x01",  # an integer, not a record
        b"\x80",  # an empty map: no type tag
        b"\x81\xa4type\xa4nope",  # an unknown tag
        b"\x82\xa4type\xa9heartbeat\xa4node\xa1n",  # heartbeat without seq
        b"\x83\xa4type\xa9heartbeat\xa4node\xa1n\xa3seq\xa1x",  # seq of the wrong type
    ],
)
def test_control_garbage_bodies_are_malformed(body: bytes) -> None:
    assert reason_of(control.decode, body) == "bad-control"
    framed = control.FRAME.pack(len(body)) + body
    with pytest.raises(MalformedPacket) as info:
        FrameDecoder().feed(framed)
    assert info.value.reason == "bad-control"


def test_control_garbage_after_good_frame_is_malformed() -> None:
    good = control.frame(Heartbeat("a", 1))
    with pytest.raises(MalformedPacket):
        FrameDecoder().feed(good + control.FRAME.pack(1) + b"\xc1")


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_control_decode_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(control.decode, data)


@settings(max_examples=200, deadline=None)
@given(RANDOM_BYTES)
def test_control_frame_decoder_random_bytes_raise_only_malformed(data: bytes) -> None:
    assert_only_malformed(FrameDecoder().feed, data)


@settings(max_examples=200, deadline=None)
@given(MESSAGES, st.data())
def test_control_decode_of_mutated_records_raises_only_malformed(
    message: control.ControlMessage, data: st.DataObject
) -> None:
    body = bytearray(control.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(U8)
    cut = data.draw(st.integers(0, len(body)))
    mutated = bytes(body[:cut])
    try:
        control.decode(mutated)
    except MalformedPacket:
        pass
    except Exception as exc:
        pytest.fail(f"control.decode raised {exc!r} on {mutated!r}")


#: a heartbeat whose ``node`` string is not valid UTF-8 (0x80 cannot start a character)
BAD_UTF8_BODY = b"\x82\xa4type\xa9heartbeat\xa4node\xa1\x80"


def test_control_decode_invalid_utf8_is_malformed() -> None:
    assert reason_of(control.decode, BAD_UTF8_BODY) == "bad-control"


def test_control_frame_decoder_invalid_utf8_is_malformed() -> None:
    framed = control.FRAME.pack(len(BAD_UTF8_BODY)) + BAD_UTF8_BODY
    with pytest.raises(MalformedPacket):
        FrameDecoder().feed(framed)
