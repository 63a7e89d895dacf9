"""Where the controller keeps the state it must not forget (docs/protocol.md §6.4).

A restarted controller that had forgotten its hosts would push empty tables and cut every
flow; one that had forgotten Host IDs would hand out new ones under live flows. So the
registrations -- Host IDs, replicas and weights, backbone link states -- go through one
store interface: ``MemoryStore`` (the embedded default: state lives as long as the process)
and ``FileStore`` (a JSON file replaced atomically on every change, for a controller daemon
that may be killed and restarted). Liveness is not stored: a restarted controller assumes
the hosts it knew are alive and lets missed heartbeats say otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import msgspec

from ..errors import ConfigError

__all__ = ["ControllerState", "FileStore", "HostState", "MemoryStore", "Store"]


class HostState(msgspec.Struct, frozen=True):
    name: str
    host_id: int
    dc: str
    gateway: str
    address: tuple[str, int] | None = None
    previous_dcs: list[str] = []


class ControllerState(msgspec.Struct, frozen=True):
    next_host_id: int
    hosts: list[HostState]
    #: Object ID hex -> {host name: weight}
    objects: dict[str, dict[str, int]]
    object_names: dict[str, str]
    #: "a|b" (DC names, sorted) -> up
    links: dict[str, bool]
    #: hosts draining: name -> objects (hex) they drain
    draining: dict[str, list[str]] = {}


class Store(Protocol):
    def load(self) -> ControllerState | None: ...
    def save(self, state: ControllerState) -> None: ...


class MemoryStore:
    """Keeps the last saved state in memory."""

    def __init__(self) -> None:
        self.state: ControllerState | None = None
        self.saves = 0

    def load(self) -> ControllerState | None:
        return self.state

    def save(self, state: ControllerState) -> None:
        self.state = state
        self.saves += 1


class FileStore:
    """Keeps the state in a JSON file, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> ControllerState | None:
        """The saved state, or None if there is none yet.

        Raises:
            ConfigError: the file exists but is not a controller state.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return msgspec.json.decode(data, type=ControllerState)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{self.path}: not a controller state file: {exc}") from None

    def save(self, state: ControllerState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(msgspec.json.encode(state))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
