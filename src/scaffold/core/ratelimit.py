"""``TokenBucket``: at most ``rate`` a second and ``burst`` at once, of answers a node sends
to a source it cannot verify (an object switch's ``OBJECT_NOT_FOUND``, docs/protocol.md
§3.2; a host's ``NOT_HERE``, §4.2.9). Sans-IO: the caller says what time it is."""

from __future__ import annotations

from ..errors import UsageError

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; ``take(now)`` spends one."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        """Raises:
        UsageError: ``rate`` is negative (or not a number) or ``burst`` below 1.
        """
        if not rate >= 0 or burst < 1:
            raise UsageError(f"a rate limit needs rate >= 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Spend a token if one is there (refilled for the time since the last call; a
        clock that went back refills nothing)."""
        at = self._at
        if at is None:
            self._at = now
        elif now > at:
            self._tokens = min(float(self.burst), self._tokens + (now - at) * self.rate)
            self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
