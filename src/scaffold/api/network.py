"""``HostNetwork``: what a ``Host`` needs from the network it is a host of, as one protocol.

A ``Host`` is its own ``NodeRuntime`` (the UDP socket and control connection driving its
``HostStack``) plus this: the few questions only the rest of the network can answer. Two
classes answer them (docs/architecture.md §7):

* ``EmbeddedNetwork`` (``runtime/aio/network.py``): the whole network runs in this process,
  so it reads the controller and the switches directly (what ``Testbed`` hosts use);
* ``JoinedNetwork`` (``api/join.py``): the network runs elsewhere, so it asks the
  controller's admin port (what ``join`` gives a host of its own).
"""

from __future__ import annotations

from typing import Protocol

from ..ids import ObjectId

__all__ = ["HostNetwork"]


class HostNetwork(Protocol):
    """The network a ``Host`` belongs to."""

    def dc_of(self, node: str) -> str:
        """The name of the datacenter ``node`` is in.

        Raises:
            ConfigError: the network has no such node.
        """
        ...

    def host_name(self, host_id: int) -> str | None:
        """The name of the host with Host ID ``host_id``; None if it is not known (yet)."""
        ...

    async def wait_for_object(self, obj: ObjectId, host: str | None = None, timeout: float = 5.0) -> None:
        """Return once the controller registered a replica of ``obj`` (on ``host``, if given)
        and every object switch applied the tables that include it: from then on, first
        packets to ``obj`` find the replica.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        ...

    async def leave(self, host: str) -> None:
        """Host ``host`` leaves the network: its socket and control connection close, so the
        controller marks it dead and withdraws its replicas."""
        ...
