"""A content service: serves the verifiable pattern stream, resumable from any offset.

It is what the demo's replicas and ``scaffold host --serve`` run: every replica serves the
same bytes, so a flow taken over or migrated to another replica continues where it was
(docs/protocol.md §5.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..api.streams import StreamReader, StreamWriter
from .pattern import pattern

__all__ = ["CHUNK", "content_service"]

#: bytes per write
CHUNK = 4096


def content_service(size: int, pace: float) -> Callable[[StreamReader, StreamWriter], Any]:
    """A handler serving ``size`` bytes of the pattern, ``CHUNK`` bytes every ``pace`` s.

    It starts where the stream is: at 0 for a new flow, at the resume offset for a flow it
    took over or that migrated here -- which is what makes it resumable.
    """

    async def serve(reader: StreamReader, writer: StreamWriter) -> None:
        resume = writer.get_extra_info("resume")
        offset = resume[0] if resume else 0
        while offset < size:
            n = min(CHUNK, size - offset)
            writer.write(pattern(offset, n))
            offset += n
            await writer.drain()
            await asyncio.sleep(pace)
        writer.write_eof()
        await reader.read(-1)  # until the client closes

    return serve
