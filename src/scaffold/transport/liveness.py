"""Liveness: the idle timeout, keepalives and the stall probe (docs/protocol.md §4.2.4, §4.4, §5.1).

A synchronized connection with nothing outstanding and no persist timer sends a KEEPALIVE
``keepalive`` seconds after it last received (or probed). A client in an exchange -- it sent
data (a request awaiting its answer) or its peer was sending data, and no FIN came yet --
uses ``stall_probe`` instead: shortly after the last segment, doubling after each probe up
to ``keepalive``, answered or not (a peer alive at one probe may be dead at the next), reset
when data goes either way.
That probe is what reaches a surviving replica after the peer's host died and starts the
takeover (§5.1) -- or draws its reset, on which a proxy retries: without it, a client whose
request was acknowledged just before its server's host died would wait a whole
``keepalive`` for the answer. Nothing received for ``idle_timeout`` ends the connection.

Under a host the schedule past the first stall probe is not the connection's (``handover``):
past it, a probe's job is to notice the peer *host* dying, and one probe shows that for all
the streams a client holds with it -- the host's watch of the peer host (§4.4) probes on the
newest stream's doubling schedule, so each stream is probed at least as often as here, and a
sign that the host is gone sends every one of them to probe alone. The stream's own next
probe is then its keepalive: 1 entry per held stream instead of ~5 in its first 15 s, which
was the work that grew with the streams a busy client holds. Run alone, a connection keeps
the whole doubling schedule.
"""

from __future__ import annotations

import math
from enum import IntEnum

from .options import StreamOptions

__all__ = ["Due", "Liveness"]


class Due(IntEnum):
    """What a liveness timer asks the caller to send (false when nothing)."""

    NONE = 0
    #: a keepalive, or a stall probe of the connection's own schedule
    KEEPALIVE = 1
    #: the first stall probe of a silence, whose later ones the host's watch of the peer
    #: host takes over (``handover``): the caller sends it and joins the watch
    HANDED_OVER = 2


#: the stall probe's interval doubles at most this many times (then ``keepalive`` caps it).
MAX_STALL_DOUBLINGS = 16


class Liveness:
    """When one connection last heard from its peer, and when it should probe."""

    __slots__ = (
        "_keepalive",
        "_stall_probe",
        "idle_timeout",
        "last_keepalive",
        "last_rx",
        "stall_probes",
        "stall_probing",
    )

    def __init__(self, options: StreamOptions, now: float) -> None:
        self._keepalive = options.keepalive
        self._stall_probe = options.stall_probe
        self.idle_timeout = options.idle_timeout
        self.last_rx = now
        self.last_keepalive = -math.inf
        #: in an exchange (data sent or received, no FIN yet): a silence is suspicious.
        self.stall_probing = False
        self.stall_probes = 0

    def on_payload(self) -> None:
        """Data arrived, or a client's request went out: an answer is due, and a silence
        from now on is suspicious."""
        self.stall_probing = True
        self.stall_probes = 0

    def idle_deadline(self) -> float:
        return self.last_rx + self.idle_timeout

    def keepalive_deadline(self, peer_fin_known: bool) -> float | None:
        """When to probe an otherwise idle connection, or None (keepalives are off)."""
        interval = self._keepalive
        if interval is None:
            return None
        stall_probe = self._stall_probe
        # An answered stall probe only shows the peer alive then: it may die while its
        # application is still quiet (a request being served), so probing goes on, doubling,
        # until data arrives -- what lets the client reach a survivor in time (§5.1).
        if self.stall_probing and stall_probe is not None and not peer_fin_known:
            interval = min(interval, stall_probe * 2**self.stall_probes)
        return max(self.last_rx, self.last_keepalive) + interval

    def on_keepalive(self, now: float, peer_fin_known: bool, handover: bool = False) -> Due:
        """A probe is going out. With ``handover`` (a host that watches peer hosts) the first
        stall probe of a silence is also this connection's last: the next one of its own is
        the keepalive, and ``Due.HANDED_OVER`` tells the caller to watch the peer host."""
        self.last_keepalive = now
        if not self.stall_probing:
            return Due.KEEPALIVE
        if handover and self.stall_probes == 0 and self._stall_probe is not None and not peer_fin_known:
            self.stall_probes = MAX_STALL_DOUBLINGS  # the interval is ``keepalive`` from here
            return Due.HANDED_OVER
        self.stall_probes = min(self.stall_probes + 1, MAX_STALL_DOUBLINGS)
        return Due.KEEPALIVE
