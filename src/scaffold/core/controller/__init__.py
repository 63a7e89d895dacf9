"""The controller, sans-IO (docs/protocol.md §6): the ``Controller`` facade over its parts --
``registry`` (hosts, objects, liveness), ``tables`` (desired tables and deltas), ``churn``
(drain, weights, migrations, links), ``commands`` (the operator commands) and ``state`` (its
records, and the durable state it emits and restarts from)."""

from .commands import COMMANDS, Command
from .controller import Controller
from .state import ControllerEvent, ControllerState, HostRecord, HostState, StateChange, StateRows

__all__ = [
    "COMMANDS",
    "Command",
    "Controller",
    "ControllerEvent",
    "ControllerState",
    "HostRecord",
    "HostState",
    "StateChange",
    "StateRows",
]
