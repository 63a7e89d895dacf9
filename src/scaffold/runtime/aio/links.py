"""Egress link emulation and the name <-> address book shared by the nodes of one process.

The kernels we run on have no ``netem``: delay, loss, cuts and a smaller MTU are an egress
stage of the runtime (docs/architecture.md §3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "AddressBook", "EmuLink"]

Address = tuple[str, int]


@dataclass(slots=True)
class EmuLink:
    """Egress emulation of one direction of a link."""

    delay: float = 0.0
    loss: float = 0.0
    up: bool = True
    #: the link's MTU (IP bytes); a larger datagram is dropped (``link-too-big``); 0: none
    mtu: int = 0


class AddressBook:
    """Node name <-> UDP address, shared by the nodes of one process."""

    def __init__(self) -> None:
        self.address: dict[str, Address] = {}
        self.name: dict[Address, str] = {}

    def add(self, name: str, address: Address) -> None:
        old = self.address.get(name)
        if old is not None:
            self.name.pop(old, None)
        self.address[name] = address
        self.name[address] = name
