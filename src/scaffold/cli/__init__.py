"""The ``scaffold`` command line: one module per group of commands."""

from .main import main

__all__ = ["main"]
