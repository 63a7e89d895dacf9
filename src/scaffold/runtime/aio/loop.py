"""The event loop: uvloop when installed, calling into a loop from another thread, and waiting
for a condition with a deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ...errors import UsageError

__all__ = ["call_from_thread", "new_event_loop", "run", "wait_until"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def call_from_thread(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None
) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and wait for its result.

    Raises:
        UsageError: called from ``loop``'s own thread (it would deadlock) or ``loop`` is closed.
        TimeoutError: no result within ``timeout`` seconds (the coroutine is cancelled).
    """
    if loop.is_closed():
        coro.close()
        raise UsageError("the network's event loop is closed")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise UsageError("blocking calls cannot run on the network's own event loop; use the async API")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"timed out after {timeout} s") from None


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str, *, interval: float = 0.005
) -> None:
    """Poll ``condition`` (a function, or a coroutine function) every ``interval`` seconds
    until it is true.

    This is how code here waits for state another node or process changes: there is no
    event to wait on when the state lives in a controller or a process elsewhere.

    Raises:
        TimeoutError: still false after ``timeout`` seconds; the message names ``what``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(interval)
