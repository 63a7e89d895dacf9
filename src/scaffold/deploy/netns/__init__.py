"""The namespace testbed: one network namespace and one process per node (docs/deployment.md)."""

from __future__ import annotations

from .build import leftovers, teardown
from .kernel import KernelError, available, entered
from .network import NetnsNetwork

__all__ = ["KernelError", "NetnsNetwork", "available", "entered", "leftovers", "teardown"]
