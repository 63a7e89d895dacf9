"""Owned objects: owner keys, grants to serve them, and their check (docs/protocol.md §6.7).

An owner holds an Ed25519 key; ``ObjectId.from_owner(public_key, name)`` puts the hash of its
public key in the first 64 bits of every object it names, so the ID itself says who owns it
(self-certifying). The owner lets a host -- or every host of a datacenter -- serve its
objects until an expiry by signing a ``Grant``; the host presents it in ``Bind`` and the
controller checks the signature, that the object's prefix is the grant's key's, the host or
DC, and the expiry, and withdraws the replica when the grant expires.

Wire form of a signed grant (MessagePack)::

    SignedGrant = [grant: bytes, signature: bytes(64)]
    grant       = Grant as MessagePack: owner_key (32 bytes), host, dc, expires (Unix s), prefix_bits
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from msgspec import Meta

from ..errors import MalformedPacket
from ..ids import OBJECT_ID_BYTES, OWNER_KEY_BYTES, ObjectId

__all__ = ["Grant", "GrantRefused", "decode_grant", "owner_public_key", "sign_grant", "verify_grant"]

OWNER_PREFIX_BITS = 64


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """The owner of key ``owner_key`` lets host ``host`` (or every host of DC ``dc``)
    serve its objects until ``expires`` (Unix time, seconds)."""

    owner_key: Annotated[bytes, Meta(min_length=OWNER_KEY_BYTES, max_length=OWNER_KEY_BYTES)]
    host: Annotated[str, Meta(max_length=64)] = ""
    dc: Annotated[str, Meta(max_length=64)] = ""
    expires: float
    prefix_bits: Annotated[int, Meta(ge=1, le=OBJECT_ID_BYTES * 8 - 1)] = OWNER_PREFIX_BITS

    def covers(self, obj: ObjectId) -> bool:
        """Is ``obj`` one of this owner's objects (its prefix is the key's)?"""
        return obj.prefix(self.prefix_bits) == ObjectId.from_owner(
            self.owner_key, "-", self.prefix_bits
        ).prefix(self.prefix_bits)


class _Signed(msgspec.Struct, array_like=True, frozen=True):
    grant: Annotated[bytes, Meta(max_length=512)]
    signature: Annotated[bytes, Meta(min_length=64, max_length=64)]


class GrantRefused(MalformedPacket):
    """A grant does not let this host serve this object; ``reason`` says why
    (``grant-malformed``, ``grant-bad-signature``, ``grant-wrong-owner``,
    ``grant-wrong-host``, ``grant-expired``)."""


_grant_decoder = msgspec.msgpack.Decoder(Grant)
_signed_decoder = msgspec.msgpack.Decoder(_Signed)


def owner_public_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of an owner's public key (what ``ObjectId.from_owner`` hashes)."""
    return key.public_key().public_bytes_raw()


def sign_grant(key: ed25519.Ed25519PrivateKey, *, expires: float, host: str = "", dc: str = "") -> bytes:
    """A grant, signed with owner key ``key``, for host ``host`` or datacenter ``dc`` until
    ``expires`` (Unix time).

    Raises:
        ValueError: neither or both of ``host`` and ``dc`` given.
    """
    if bool(host) == bool(dc):
        raise ValueError("a grant names a host or a datacenter")
    grant = msgspec.msgpack.encode(Grant(owner_key=owner_public_key(key), host=host, dc=dc, expires=expires))
    return msgspec.msgpack.encode(_Signed(grant, key.sign(grant)))


def decode_grant(data: bytes) -> Grant:
    """The grant in signed grant ``data``, its signature checked.

    Raises:
        GrantRefused: ``grant-malformed`` or ``grant-bad-signature``.
    """
    try:
        signed = _signed_decoder.decode(data)
        grant = _grant_decoder.decode(signed.grant)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise GrantRefused("grant-malformed", str(exc)[:200]) from None
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(grant.owner_key).verify(signed.signature, signed.grant)
    except (InvalidSignature, ValueError):
        raise GrantRefused("grant-bad-signature") from None
    return grant


def verify_grant(data: bytes, obj: ObjectId, host: str, dc: str, wall_now: float) -> Grant:
    """Check that signed grant ``data`` lets ``host`` (in datacenter ``dc``) serve ``obj``
    at Unix time ``wall_now``; the grant.

    Raises:
        GrantRefused: why not.
    """
    grant = decode_grant(data)
    if not grant.covers(obj):
        raise GrantRefused("grant-wrong-owner", f"{obj.short()} is not an object of this owner")
    if not ((grant.host and grant.host == host) or (grant.dc and grant.dc == dc)):
        raise GrantRefused(
            "grant-wrong-host", f"the grant names {grant.host or 'DC ' + grant.dc}, not {host}"
        )
    if not wall_now < grant.expires:
        raise GrantRefused("grant-expired")
    return grant
