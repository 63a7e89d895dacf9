"""Structured logs of a daemon: one JSON object per line on stderr.

``{"t": 1732770000.123, "node": "east-fs1", "level": "info", "msg": "connected", ...}`` --
``t`` is Unix time, extra keyword fields are added as they are (made JSON-safe).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

__all__ = ["JsonLog"]


class JsonLog:
    """Writes log records of one node."""

    def __init__(self, node: str, stream: IO[str] | None = None, *, debug: bool = False) -> None:
        self.node = node
        self.stream = stream if stream is not None else sys.stderr
        self.debug_enabled = debug

    def log(self, level: str, msg: str, **fields: Any) -> None:
        record = {"t": round(time.time(), 6), "node": self.node, "level": level, "msg": msg, **fields}
        try:
            self.stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the daemon down

    def debug(self, msg: str, **fields: Any) -> None:
        if self.debug_enabled:
            self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)
