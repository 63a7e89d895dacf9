"""The namespace testbed: one network namespace and one process per node (docs/deployment.md)."""

from __future__ import annotations

from .kernel import KernelError, available
from .network import NetnsNetwork, entered, leftovers, teardown

__all__ = ["KernelError", "NetnsNetwork", "available", "entered", "leftovers", "teardown"]
