"""``gateway.pump.Deadline``: one timer bounding each of a task's waits (the HTTP ingress's
head, idle and response timeouts), moved by recording a time.

What a cheaper timer could get wrong: a wait past its due must end with the caller's error
and leave the task uncancelled; a due moved later must not fire at the old time, nor one
moved earlier at the new; a timer that fires between waits must cancel nothing; and a
cancellation from elsewhere (the ingress closing) must not be taken for an expiry.
"""

from __future__ import annotations

import asyncio

import pytest

from scaffold.gateway.pump import Deadline
from scaffold.runtime.aio import run


async def guarded(deadline: Deadline, due: float | None, wait: float) -> str:
    """Sleep ``wait`` seconds under ``due``: "done", or "expired" if the deadline ended it."""
    deadline.arm(due)
    try:
        await asyncio.sleep(wait)
    except asyncio.CancelledError:
        if deadline.expired():
            return "expired"
        raise
    finally:
        deadline.disarm()
    return "done"


def test_a_wait_past_its_due_expires_and_leaves_the_task_uncancelled() -> None:
    async def main() -> tuple[str, float, int, str]:
        loop = asyncio.get_running_loop()
        deadline = Deadline()
        start = loop.time()
        first = await guarded(deadline, start + 0.05, 5.0)
        took = loop.time() - start
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        # The deadline goes on serving the task's next waits.
        second = await guarded(deadline, loop.time() + 1.0, 0.01)
        deadline.cancel()
        return first, took, cancelling, second

    first, took, cancelling, second = run(main())
    assert first == "expired" and 0.04 <= took < 1.0
    assert cancelling == 0 and second == "done"


def test_a_due_moved_later_or_earlier_fires_at_the_new_time_only() -> None:
    async def main() -> tuple[str, str, float]:
        loop = asyncio.get_running_loop()
        deadline = Deadline()
        # The timer is set for +0.05; the next wait's due is later: the timer fires at
        # +0.05, finds the due moved, and re-arms -- the wait is not cut.
        assert await guarded(deadline, loop.time() + 0.05, 0.0) == "done"
        later = await guarded(deadline, loop.time() + 0.4, 0.2)
        deadline.cancel()
        # A new timer set far out, then a due sooner than it: the timer moves.
        deadline = Deadline()
        assert await guarded(deadline, loop.time() + 30.0, 0.0) == "done"
        start = loop.time()
        earlier = await guarded(deadline, start + 0.05, 5.0)
        deadline.cancel()
        return later, earlier, loop.time() - start

    later, earlier, took = run(main())
    assert later == "done"
    assert earlier == "expired" and took < 1.0


def test_a_timer_firing_between_waits_cancels_nothing() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        deadline = Deadline()
        assert await guarded(deadline, loop.time() + 0.02, 0.0) == "done"
        await asyncio.sleep(0.1)  # unguarded: the timer fires with nothing armed
        result = await guarded(deadline, None, 0.05)  # no bound at all
        deadline.cancel()
        return result

    assert run(main()) == "done"


def test_a_cancellation_from_elsewhere_is_not_an_expiry() -> None:
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        async def waiter(due: float) -> str:
            deadline = Deadline()
            started.set()
            try:
                return await guarded(deadline, due, 5.0)
            finally:
                deadline.cancel()

        # Cancelled from outside while the due is far: CancelledError, not "expired".
        task = loop.create_task(waiter(loop.time() + 30.0))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        outside = task.cancelled()
        # Both at once: the deadline expires and the task is cancelled from outside in the
        # same turn -- the outside cancellation wins.
        started.clear()
        due = loop.time() + 0.05
        task = loop.create_task(waiter(due))
        await started.wait()
        loop.call_at(due, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        return outside, task.cancelled()

    assert run(main()) == (True, True)


def test_a_cancelled_deadline_never_fires() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        deadline = Deadline()
        deadline.arm(loop.time() + 0.02)
        deadline.cancel()
        await asyncio.sleep(0.1)  # would have been cut at +0.02
        return "done"

    assert run(main()) == "done"
