"""``StreamOptions``: the tunables of one stream connection, validated once (docs/protocol.md §4.2).

One frozen record is shared by every connection a host creates (``HostStack(stream_options=...)``)
and travels inside a connection's snapshot. Its defaults are the only place the protocol's
default timers and sizes are written down (§4.2.3, §4.2.4).
"""

from __future__ import annotations

import math

import msgspec

from ..errors import UsageError
from ..wire.stream import MAX_PAYLOAD
from .congestion import algorithms

__all__ = ["StreamOptions"]

#: the receive window field is 32 bits wide (§4.2)
_MAX_RECV_BUFFER = 0xFFFFFFFF


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of one connection. Invalid values raise :class:`UsageError` on construction.

    Change one with ``msgspec.structs.replace(options, mss=1400)`` (validated again).
    """

    #: largest payload per segment to start with, and the floor of path-MTU discovery: every
    #: path carries it (docs/protocol.md §4.2.6); probing may raise the ``mss`` above it.
    mss: int = 1200
    recv_buffer: int = 256 * 1024
    send_buffer: int = 256 * 1024
    #: send a KEEPALIVE after this many seconds without receiving anything; None: never.
    keepalive: float | None = 15.0
    #: a receiver whose peer was sending data and went silent probes after this long,
    #: doubling up to ``keepalive``: if the peer's host died, the probe is what reaches a
    #: surviving replica and starts the takeover (docs/protocol.md §5.1). None: never.
    stall_probe: float | None = 0.25
    #: terminate after this many seconds without receiving anything.
    idle_timeout: float = 60.0
    #: RTO before the first RTT sample (SYN, SYN-ACK, RESUME).
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 4.0
    #: consecutive unanswered timeouts tolerated; the next one terminates the connection.
    max_retries: int = 10
    #: delayed-ACK timer and segment count.
    ack_delay: float = 0.01
    ack_every: int = 2
    #: initial congestion window, in segments (RFC 6928).
    initial_window: int = 10
    #: TIME_WAIT linger.
    time_wait: float = 1.0
    #: cap of the persist (zero-window probe) interval.
    max_probe_interval: float = 1.0
    #: congestion control algorithm, a name registered in ``transport.congestion``.
    congestion: str = "newreno"
    #: after a path-MTU search ended below the ceiling, try the ceiling again this often
    #: (docs/protocol.md §4.2.6).
    pmtu_raise_interval: float = 60.0

    def __post_init__(self) -> None:
        _integer("mss", self.mss, 1, MAX_PAYLOAD)
        _integer("recv_buffer", self.recv_buffer, 1, _MAX_RECV_BUFFER)
        _integer("send_buffer", self.send_buffer, 1)
        _integer("max_retries", self.max_retries, 0)
        _integer("ack_every", self.ack_every, 1)
        _integer("initial_window", self.initial_window, 1)
        for name in (
            "idle_timeout",
            "initial_rto",
            "min_rto",
            "max_rto",
            "max_probe_interval",
            "pmtu_raise_interval",
        ):
            _seconds(name, getattr(self, name), positive=True)
        for name in ("ack_delay", "time_wait"):
            _seconds(name, getattr(self, name), positive=False)
        for name in ("keepalive", "stall_probe"):
            if getattr(self, name) is not None:
                _seconds(name, getattr(self, name), positive=True)
        if self.min_rto > self.max_rto:
            raise UsageError(f"stream option min_rto {self.min_rto} is above max_rto {self.max_rto}")
        if self.congestion not in algorithms():
            raise UsageError(
                f"stream option congestion {self.congestion!r} is not one of {sorted(algorithms())}"
            )


def _integer(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"stream option {name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise UsageError(f"stream option {name} {value} is out of range ({bounds})")


def _seconds(name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"stream option {name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        needed = "positive" if positive else "zero or positive"
        raise UsageError(f"stream option {name} must be a finite, {needed} number of seconds, not {value}")
