"""The exception hierarchy: one root, split by whose fault it is.

``ScaffoldError`` is the root. Below it:

* ``UsageError`` -- our API was misused (local fault; a bug in the caller).
* ``ProtocolError`` -- a peer or a packet broke the protocol (remote fault).
  ``MalformedPacket`` is the one error a wire parser raises for untrusted bytes.
* ``PathError`` -- the path or the service failed (nobody's bug; failover code catches
  only this kind). ``ObjectNotFound`` and ``BrokenPathError`` are the common cases.

Path errors are also in the ``OSError`` family that networking code already catches, so a
library's retries and messages work on SCAFFOLD streams as on TCP: ``PathError`` is a
``ConnectionError``, ``ObjectNotFound`` a ``ConnectionRefusedError`` (``errno`` ECONNREFUSED:
nobody serves the name, as nobody listens on a port) and ``BrokenPathError`` a
``ConnectionResetError`` (``errno`` ECONNRESET). Their message stays the plain text given.
"""

from __future__ import annotations

import errno

__all__ = [
    "BrokenPathError",
    "ConfigError",
    "MalformedPacket",
    "ObjectNotFound",
    "PathError",
    "ProtocolError",
    "ScaffoldError",
    "UsageError",
]


class ScaffoldError(Exception):
    """Root of every error scaffold raises on purpose."""


class UsageError(ScaffoldError):
    """The caller misused the API (wrong argument, wrong state)."""


class ConfigError(UsageError):
    """A topology, configuration file or command-line argument is invalid."""


class ProtocolError(ScaffoldError):
    """A peer violated the protocol."""


class MalformedPacket(ProtocolError):
    """Bytes from the network could not be parsed.

    ``reason`` is a short stable token (``"truncated"``, ``"bad-version"``, ...) used as
    the key of the drop counters; the message says more for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PathError(ScaffoldError, ConnectionError):
    """The path to the service, or the service itself, failed."""


class ObjectNotFound(PathError, ConnectionRefusedError):
    """No replica of the object is registered; an object switch said so explicitly."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        if self.errno is None:
            self.errno = errno.ECONNREFUSED


class BrokenPathError(PathError, ConnectionResetError):
    """An established flow cannot continue: its peer died or its path broke."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        if self.errno is None:
            self.errno = errno.ECONNRESET
