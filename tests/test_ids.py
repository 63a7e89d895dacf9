"""Identifiers (scaffold.ids, docs/protocol.md §1)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.errors import UsageError
from scaffold.ids import OBJECT_ID_BYTES, ObjectId, new_flow_id, new_nonce

NAMES = st.text(min_size=1, max_size=40)
Allocator = Callable[[random.Random], int]
RAW_IDS = st.binary(min_size=OBJECT_ID_BYTES, max_size=OBJECT_ID_BYTES).filter(any)


class ZeroRandom(random.Random):
    """A generator whose every draw is zero: the worst case for a non-zero allocator."""

    def getrandbits(self, k: int) -> int:
        return 0


# -- text form -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(NAMES)
def test_from_name_is_sha256_and_str_parse_round_trips(name: str) -> None:
    oid = ObjectId.from_name(name)
    assert oid.raw == hashlib.sha256(name.encode()).digest()
    text = str(oid)
    assert text == "obj:" + oid.raw.hex()
    assert ObjectId.parse(text) == oid
    # the "obj:" prefix is optional when parsing
    assert ObjectId.parse(oid.raw.hex()) == oid
    assert ObjectId.parse(oid.raw.hex().upper()) == oid


@settings(max_examples=200, deadline=None)
@given(RAW_IDS)
def test_any_non_zero_raw_id_round_trips_through_text(raw: bytes) -> None:
    oid = ObjectId(raw)
    assert ObjectId.parse(str(oid)).raw == raw
    assert str(oid).startswith(oid.short())
    assert len(oid.short()) == len("obj:") + 12


def test_from_name_differs_per_name_and_is_stable() -> None:
    assert ObjectId.from_name("web") == ObjectId.from_name("web")
    assert ObjectId.from_name("web") != ObjectId.from_name("web2")
    assert str(ObjectId.from_name("web")) == ("obj:" + hashlib.sha256(b"web").hexdigest())


def test_of_accepts_an_id_its_text_or_a_name() -> None:
    oid = ObjectId.from_name("web")
    assert ObjectId.of(oid) is oid
    assert ObjectId.of(str(oid)) == oid
    assert ObjectId.of("web") == oid
    # a bare 64-hex string without "obj:" is a *name* for of(), hashed like any other
    assert ObjectId.of(oid.raw.hex()) == ObjectId.from_name(oid.raw.hex())
    assert ObjectId.of(oid.raw.hex()) != oid


def test_of_rejects_a_malformed_text_form() -> None:
    with pytest.raises(UsageError):
        ObjectId.of("obj:1234")


# -- self-certifying IDs ---------------------------------------------------------------------


def _owner_prefix(owner_key: bytes, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(owner_key).digest(), "big") >> (256 - bits)


@pytest.mark.parametrize("bits", [1, 8, 64, 100, 255])
def test_from_owner_shares_the_owner_prefix_and_differs_per_name(bits: int) -> None:
    key = b"owner public key"
    a = ObjectId.from_owner(key, "alpha", prefix_bits=bits)
    b = ObjectId.from_owner(key, "beta", prefix_bits=bits)
    assert a.prefix(bits) == b.prefix(bits) == _owner_prefix(key, bits)
    assert a != b
    # the low bits are the name's hash
    low = 256 - bits
    name_hash = int.from_bytes(hashlib.sha256(b"alpha").digest(), "big")
    assert int.from_bytes(a.raw, "big") & ((1 << low) - 1) == name_hash & ((1 << low) - 1)


def test_from_owner_default_prefix_is_64_bits() -> None:
    a = ObjectId.from_owner(b"k1", "x")
    assert a.prefix(64) == _owner_prefix(b"k1", 64)
    assert a == ObjectId.from_owner(b"k1", "x", prefix_bits=64)


def test_from_owner_prefix_differs_per_owner() -> None:
    a = ObjectId.from_owner(b"owner-1", "same")
    b = ObjectId.from_owner(b"owner-2", "same")
    assert a.prefix(64) != b.prefix(64)
    assert a != b


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), NAMES, NAMES, st.integers(1, 255))
def test_from_owner_prefix_property(key: bytes, n1: str, n2: str, bits: int) -> None:
    a = ObjectId.from_owner(key, n1, bits)
    b = ObjectId.from_owner(key, n2, bits)
    assert a.prefix(bits) == b.prefix(bits) == _owner_prefix(key, bits)
    if n1 != n2 and bits <= 192:
        # at least 64 bits of name hash remain: a collision would be astronomically unlikely
        assert a != b


@pytest.mark.parametrize("bits", [0, 256, -1, 300])
def test_from_owner_rejects_bad_prefix_length(bits: int) -> None:
    with pytest.raises(UsageError):
        ObjectId.from_owner(b"k", "x", prefix_bits=bits)


def test_prefix_reads_the_leading_bits() -> None:
    oid = ObjectId(bytes([0xA5]) + bytes(30) + b"\x01")
    assert oid.prefix(4) == 0xA
    assert oid.prefix(8) == 0xA5
    assert oid.prefix(256) == int.from_bytes(oid.raw, "big")


# -- rejection -------------------------------------------------------------------------------


def test_rejects_the_all_zero_id() -> None:
    with pytest.raises(UsageError, match="all-zero"):
        ObjectId(bytes(OBJECT_ID_BYTES))
    with pytest.raises(UsageError):
        ObjectId.parse("obj:" + "00" * OBJECT_ID_BYTES)
    with pytest.raises(UsageError):
        ObjectId.parse("0" * 64)


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_rejects_raw_of_wrong_length(size: int) -> None:
    with pytest.raises(UsageError):
        ObjectId(b"\x01" * size)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "obj:",
        "obj:" + "ab" * 31,  # 62 digits
        "obj:" + "ab" * 31 + "a",  # 63 digits
        "obj:" + "ab" * 32 + "a",  # 65 digits
        "obj:" + "ab" * 33,  # 66 digits
        "obj:" + "zz" * 32,  # right length, not hex
        "obj:" + "ab" * 31 + "g1",
        "ab" * 31 + "  ",  # whitespace that bytes.fromhex would skip
        "obj:obj:" + "ab" * 30,
        "web",
    ],
)
def test_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(UsageError):
        ObjectId.parse(text)


def test_empty_name_is_rejected() -> None:
    with pytest.raises(UsageError):
        ObjectId.from_name("")
    with pytest.raises(UsageError):
        ObjectId.of("")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(alphabet="0123456789abcdefABCDEF :", max_size=80)))
def test_parse_of_arbitrary_text_raises_only_usage_error(text: str) -> None:
    try:
        oid = ObjectId.parse(text)
    except UsageError:
        return
    assert len(oid.raw) == OBJECT_ID_BYTES
    assert str(oid).removeprefix("obj:") == text.removeprefix("obj:").lower()


# -- Flow IDs and nonces ---------------------------------------------------------------------


@pytest.mark.parametrize("allocate", [new_flow_id, new_nonce])
def test_allocators_never_return_zero(allocate: Allocator) -> None:
    assert allocate(ZeroRandom()) != 0
    rng = random.Random(7)
    values = [allocate(rng) for _ in range(2000)]
    assert all(0 < v < 2**64 for v in values)
    assert len(set(values)) == len(values)


@pytest.mark.parametrize("allocate", [new_flow_id, new_nonce])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_allocators_are_deterministic_for_a_seed(allocate: Allocator, seed: int) -> None:
    a = random.Random(seed)
    b = random.Random(seed)
    seq_a = [allocate(a) for _ in range(50)]
    seq_b = [allocate(b) for _ in range(50)]
    assert seq_a == seq_b
    assert seq_a[0] == random.Random(seed).getrandbits(64)
    other = random.Random(seed + 1)
    assert seq_a != [allocate(other) for _ in range(50)]
