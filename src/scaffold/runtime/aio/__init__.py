"""The asyncio runtime: real UDP sockets, real TCP control connections (docs/architecture.md §3.2).

Each node owns one non-blocking UDP socket (``node.py``); the controller is a TCP server
speaking framed control records (``controller.py``); link emulation (delay, loss, cuts) is an
egress stage of our own, because the kernels we run on have no ``netem`` (``links.py``).
``EmbeddedNetwork`` (``network.py``) runs a whole topology in one process over loopback.
"""

from .collector import calm_collector, paused_collector
from .controller import ConnectionLimits, ControllerRuntime
from .links import Address, AddressBook, EmuLink
from .loop import call_from_thread, new_event_loop, run, wait_until
from .network import EmbeddedNetwork
from .node import BATCH, SOCKET_BUFFER, EventHandler, NodeRuntime

__all__ = [
    "BATCH",
    "SOCKET_BUFFER",
    "Address",
    "AddressBook",
    "ConnectionLimits",
    "ControllerRuntime",
    "EmbeddedNetwork",
    "EmuLink",
    "EventHandler",
    "NodeRuntime",
    "calm_collector",
    "call_from_thread",
    "new_event_loop",
    "paused_collector",
    "run",
    "wait_until",
]
