"""Addresses as people write them, ``HOST:PORT``, on command lines and in config files."""

from __future__ import annotations

from ..errors import ConfigError
from ..runtime.aio import Address

__all__ = ["parse_address", "parse_addresses"]


def parse_address(text: str) -> Address:
    """``"HOST:PORT"`` as ``(host, port)``. An empty host (``":8080"``) means 127.0.0.1; an
    IPv6 host is written in brackets (``"[::1]:8080"``).

    Raises:
        ConfigError: not an address.
    """
    host, sep, port = str(text).rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number <= 65535:
        raise ConfigError(f"not an address (want HOST:PORT): {text!r}")
    return host.strip("[]") or "127.0.0.1", number


def parse_addresses(text: str) -> list[Address]:
    """``"HOST:PORT,HOST:PORT"`` (every controller replica) as addresses, in order.

    Raises:
        ConfigError: an item is not an address, or there is none.
    """
    items = [item for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError(f"no address in {text!r}")
    return [parse_address(item.strip()) for item in items]
