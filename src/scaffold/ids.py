"""Identifiers: flat Object IDs and the DC, Host, Socket and Flow IDs of refinement.

See docs/protocol.md §1. Every ID is an unsigned integer of fixed width except the Object
ID, which is 256 bits kept as 32 raw bytes (the form used on the wire and as the key of
object-switch tables). Zero in any field means "not refined yet", so no allocator ever
hands out zero.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from .errors import UsageError

__all__ = [
    "DC_ID_BITS",
    "FLOW_ID_BITS",
    "HOST_ID_BITS",
    "OBJECT_ID_BYTES",
    "SOCKET_ID_BITS",
    "NODE_NAME",
    "OWNER_KEY_BYTES",
    "UNREFINED",
    "ObjectId",
    "check_node_name",
    "new_flow_id",
    "new_nonce",
]

OBJECT_ID_BYTES = 32
DC_ID_BITS = 32
HOST_ID_BITS = 64
SOCKET_ID_BITS = 32
FLOW_ID_BITS = 64
UNREFINED = 0

_TEXT_PREFIX = "obj:"
_OWNER_PREFIX = "owner:"
#: an owner's public key: Ed25519, 32 raw bytes (docs/protocol.md §1)
OWNER_KEY_BYTES = 32
#: the one character set of node names (hosts, switches, the controller, operators): a letter
#: or digit, then letters, digits, ``.``, ``_`` or ``-``; at most 63 characters. So a name is
#: never markup, never a path (no ``/``, never ``..``) and fits a certificate's CN.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_node_name(name: object) -> str:
    """``name`` if it is a valid node name (``NODE_NAME``).

    Raises:
        UsageError: it is not.
    """
    if not isinstance(name, str) or NODE_NAME.fullmatch(name) is None:
        raise UsageError(
            f"not a node name (want a letter or digit, then up to 62 letters, digits, '.', '_' or '-'): "
            f"{name!r:.80}"
        )
    return name


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """A flat 256-bit object name.

    ``ObjectId.from_name("web")`` hashes a human name (SHA-256 of its UTF-8 bytes).
    ``ObjectId.from_owner(owner_key, name)`` builds the self-certifying form: the first
    ``prefix_bits`` bits are the hash of the owner's public key, so one prefix rule in an
    object switch covers every object of that owner. The text form is ``obj:`` followed by
    64 hex digits; ``str()`` gives it and ``ObjectId.parse()`` reads it back.
    """

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != OBJECT_ID_BYTES:
            raise UsageError(f"an Object ID is {OBJECT_ID_BYTES} bytes, got {len(self.raw)}")
        if self.raw == bytes(OBJECT_ID_BYTES):
            raise UsageError("the all-zero Object ID is reserved")

    @classmethod
    def from_name(cls, name: str) -> ObjectId:
        """The Object ID of a human-readable name (SHA-256 of its UTF-8 encoding)."""
        if not name:
            raise UsageError("an object name must not be empty")
        return cls(hashlib.sha256(name.encode()).digest())

    @classmethod
    def from_owner(cls, owner_key: bytes, name: str, prefix_bits: int = 64) -> ObjectId:
        """A self-certifying Object ID: owner-key hash as prefix, then the name's hash."""
        if not 0 < prefix_bits < OBJECT_ID_BYTES * 8:
            raise UsageError("prefix_bits must be between 1 and 255")
        owner = int.from_bytes(hashlib.sha256(owner_key).digest(), "big")
        local = int.from_bytes(hashlib.sha256(name.encode()).digest(), "big")
        low_bits = OBJECT_ID_BYTES * 8 - prefix_bits
        value = (owner >> low_bits << low_bits) | (local & ((1 << low_bits) - 1))
        return cls(value.to_bytes(OBJECT_ID_BYTES, "big"))

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        """Read the text form (``obj:`` + 64 hex digits; the prefix is optional)."""
        body = text[len(_TEXT_PREFIX) :] if text.startswith(_TEXT_PREFIX) else text
        if len(body) != OBJECT_ID_BYTES * 2:
            raise UsageError(f"not an Object ID (want 64 hex digits): {text!r}")
        try:
            return cls(bytes.fromhex(body))
        except ValueError as exc:
            raise UsageError(f"not an Object ID (bad hex): {text!r}") from exc

    @classmethod
    def of(cls, name_or_id: str | ObjectId) -> ObjectId:
        """Accept an ObjectId, its text form, the owner/name form of an owned object
        (``owner:`` + the owner key's 64 hex digits + ``/`` + the name), or a human name
        (hashed).

        Raises:
            UsageError: an ``obj:`` or ``owner:`` text that is malformed, or an empty name.
        """
        if isinstance(name_or_id, ObjectId):
            return name_or_id
        if name_or_id.startswith(_TEXT_PREFIX):
            return cls.parse(name_or_id)
        if name_or_id.startswith(_OWNER_PREFIX):
            key_hex, sep, name = name_or_id[len(_OWNER_PREFIX) :].partition("/")
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                key = b""
            if not sep or not name or len(key) != OWNER_KEY_BYTES:
                raise UsageError(
                    f"not an owned object name (want owner:<64 hex digits>/NAME): {name_or_id!r}"
                )
            return cls.from_owner(key, name)
        return cls.from_name(name_or_id)

    def prefix(self, bits: int) -> int:
        """The first ``bits`` bits as an integer (the key of a prefix rule)."""
        return int.from_bytes(self.raw, "big") >> (OBJECT_ID_BYTES * 8 - bits)

    def __str__(self) -> str:
        return _TEXT_PREFIX + self.raw.hex()

    def short(self) -> str:
        """An abbreviated text form for tables and logs."""
        return _TEXT_PREFIX + self.raw.hex()[:12]


def new_flow_id(rng: random.Random) -> int:
    """A fresh, non-zero 64-bit Flow ID from the given generator."""
    return rng.getrandbits(FLOW_ID_BITS) or 1


def new_nonce(rng: random.Random) -> int:
    """A fresh, non-zero 64-bit flow nonce (the secret that guards a flow's moves)."""
    return rng.getrandbits(64) or 1
