"""The stream segment wire format (scaffold.wire.stream, docs/protocol.md §4.2)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.errors import MalformedPacket, UsageError
from scaffold.wire import stream
from scaffold.wire.stream import StreamFlags, StreamSegment, StreamType

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


@st.composite
def segments(draw: st.DrawFn) -> StreamSegment:
    kind = draw(st.sampled_from(StreamType))
    ack = draw(U64)
    blocks = []
    for _ in range(draw(st.integers(0, stream.MAX_SACK_BLOCKS))):
        start = draw(st.integers(1, 2**32 - 2))
        end = draw(st.integers(start + 1, 2**32 - 1))
        blocks.append((ack + start, ack + end))
    payload = b""
    if kind in (StreamType.SYN, StreamType.SYN_ACK, StreamType.DATA, StreamType.FIN):
        payload = draw(st.binary(max_size=1500))
    return StreamSegment(
        type=kind,
        nonce=draw(U64),
        seq=draw(U64),
        ack=ack,
        window=draw(U32),
        flags=draw(st.integers(0, 255)),
        ts_value=draw(U32),
        ts_echo=draw(U32),
        sack=tuple(blocks),
        payload=payload,
    )


SAMPLE = StreamSegment(
    type=StreamType.DATA,
    nonce=0x0123456789ABCDEF,
    seq=1000,
    ack=5000,
    window=65536,
    flags=StreamFlags.ACK,
    ts_value=7,
    ts_echo=3,
    sack=((6000, 7200), (8400, 9600)),
    payload=b"hello, scaffold",
)


def test_layout_is_pinned() -> None:
    data = stream.encode(SAMPLE)
    assert stream.FIXED_LEN == 44
    assert len(data) == 44 + 2 * 8 + len(SAMPLE.payload)
    assert data[0] == StreamType.DATA
    assert data[1] == StreamFlags.ACK
    assert struct.unpack_from("!H", data, 2)[0] == len(SAMPLE.payload)
    assert struct.unpack_from("!I", data, 4)[0] == 65536
    assert struct.unpack_from("!QQQ", data, 8) == (0x0123456789ABCDEF, 1000, 5000)
    assert struct.unpack_from("!IIB", data, 32) == (7, 3, 2)
    # SACK blocks are offsets above the ack.
    assert struct.unpack_from("!IIII", data, 44) == (1000, 2200, 3400, 4600)
    assert data[60:] == SAMPLE.payload


@settings(max_examples=300)
@given(segments())
def test_round_trip(segment: StreamSegment) -> None:
    data = stream.encode(segment)
    assert stream.parse(data) == segment


def test_every_truncation_is_malformed() -> None:
    data = stream.encode(SAMPLE)
    for cut in range(len(data)):
        with pytest.raises(MalformedPacket) as info:
            stream.parse(data[:cut])
        assert info.value.reason == "truncated"


def test_trailing_bytes_are_bad_length() -> None:
    with pytest.raises(MalformedPacket) as info:
        stream.parse(stream.encode(SAMPLE) + b"x")
    assert info.value.reason == "bad-length"


def test_payload_on_control_type_is_bad_length() -> None:
    data = bytearray(stream.encode(SAMPLE))
    for kind in (StreamType.RST, StreamType.KEEPALIVE, StreamType.PROBE_ACK, StreamType.NOT_HERE):
        data[0] = kind
        with pytest.raises(MalformedPacket) as info:
            stream.parse(bytes(data))
        assert info.value.reason == "bad-length"


def test_a_syn_ack_may_carry_the_first_bytes_of_the_answer() -> None:
    """§4.2.7: the server's first segment of data rides in its SYN-ACK."""
    data = bytearray(stream.encode(SAMPLE))
    data[0] = StreamType.SYN_ACK
    parsed = stream.parse(bytes(data))
    assert parsed.type is StreamType.SYN_ACK and parsed.payload == SAMPLE.payload


def test_not_here_round_trips_as_a_bare_segment_and_refuses_payload() -> None:
    """NOT_HERE (docs/protocol.md §4.2.9): the SYN's nonce and nothing else, exactly as
    large as the smallest SYN; every type is also in the round-trip and hostile-bytes
    properties above and below (``segments`` draws from all of ``StreamType``)."""
    segment = StreamSegment(StreamType.NOT_HERE, nonce=0x0123456789ABCDEF)
    data = stream.encode(segment)
    assert data[0] == StreamType.NOT_HERE.value == 12 and len(data) == stream.FIXED_LEN
    assert len(data) == len(stream.encode(StreamSegment(StreamType.SYN, nonce=1)))
    assert stream.parse(data) == segment
    raw = bytearray(data)
    struct.pack_into("!H", raw, 2, 1)
    with pytest.raises(MalformedPacket) as info:
        stream.parse(bytes(raw) + b"x")
    assert info.value.reason == "bad-length"


@pytest.mark.parametrize("kind", [0, 13, 255])
def test_unknown_type(kind: int) -> None:
    data = bytearray(stream.encode(SAMPLE))
    data[0] = kind
    with pytest.raises(MalformedPacket) as info:
        stream.parse(bytes(data))
    assert info.value.reason == "bad-stream-type"


def test_bad_sack_blocks() -> None:
    data = bytearray(stream.encode(SAMPLE))
    data[40] = stream.MAX_SACK_BLOCKS + 1
    with pytest.raises(MalformedPacket) as info:
        stream.parse(bytes(data))
    assert info.value.reason == "bad-sack"
    data = bytearray(stream.encode(SAMPLE))
    struct.pack_into("!II", data, 44, 500, 500)  # empty block
    with pytest.raises(MalformedPacket) as info:
        stream.parse(bytes(data))
    assert info.value.reason == "bad-sack"
    struct.pack_into("!II", data, 44, 0, 500)  # starts at the ack: not above it
    with pytest.raises(MalformedPacket) as info:
        stream.parse(bytes(data))
    assert info.value.reason == "bad-sack"


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        stream.parse(data)


@settings(max_examples=300)
@given(segments(), st.data())
def test_mutated_segments_only_raise_malformed(segment: StreamSegment, data: st.DataObject) -> None:
    raw = bytearray(stream.encode(segment))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MalformedPacket):
        stream.parse(bytes(raw))


def test_encode_rejects_unrepresentable_fields() -> None:
    with pytest.raises(UsageError):
        stream.encode(StreamSegment(StreamType.DATA, nonce=2**64))
    with pytest.raises(UsageError):
        stream.encode(StreamSegment(StreamType.DATA, nonce=1, ack=10, sack=((10, 20),)))
    with pytest.raises(UsageError):
        stream.encode(StreamSegment(StreamType.DATA, nonce=1, sack=((1, 2),) * 5))
    with pytest.raises(UsageError):
        stream.encode(StreamSegment(StreamType.DATA, nonce=1, payload=b"x" * 70000))
