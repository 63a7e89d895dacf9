"""Path-MTU discovery for one direction of a stream, in the spirit of DPLPMTUD (RFC 8899;
docs/protocol.md §4.2.6).

:class:`PathMtu` finds the largest segment payload (``mss``) the path carries, between the
**floor** (``StreamOptions.mss``, 1200 bytes: what every path must carry) and the **ceiling**
the host's runtime reports (its interface's MTU towards the gateway: 65,355 on loopback,
1,320 on a 1500-byte Ethernet link). It never relies on ICMP; it sends probes:

* a probe for a candidate ``m`` is a ``PROBE`` segment padded to the size of the largest data
  segment at that ``mss`` (``m`` bytes of payload and four SACK blocks), answered by
  ``PROBE_ACK`` with the candidate echoed; a confirmed candidate becomes the ``mss`` at once;
* the search probes the ceiling first (loopback and jumbo paths are done in one round trip),
  then halves the interval between the largest confirmed and the smallest refused size
  until it is narrower than ``SEARCH_GRANULARITY``;
* a candidate is refused after ``MAX_PROBES`` probes went unanswered *while the path worked*
  (the peer was heard from since the probe went out): a probe lost in an outage proves
  nothing about the MTU and is sent again, with a KEEPALIVE whose answer is that evidence
  when the connection is idle;
* when the search is done, the ceiling is tried again every ``raise_interval`` seconds (the
  path may have grown);
* **black hole** (the path shrank under a stream): the sender reports a retransmission
  timeout while its ``mss`` is above the floor; the ``mss`` drops to the floor at once (the
  lost segments are resent cut to it) and the search starts again from the old ``mss``.

Probes take no sequence space and are not congestion controlled: there is at most one
outstanding per connection, and the connection sends it only while more than one segment of
data is buffered (small requests and responses never pay for one). Sans-IO: the times come
in as arguments.
"""

from __future__ import annotations

__all__ = ["MAX_PROBES", "SACK_ROOM", "SEARCH_GRANULARITY", "PathMtu"]

#: unanswered probes after which a candidate size is taken as too big (RFC 8899 MAX_PROBES)
MAX_PROBES = 3
#: the search stops when the interval between confirmed and refused sizes is this narrow
SEARCH_GRANULARITY = 64
#: the probe's padding also covers the largest SACK option (4 blocks of 8 bytes), so every
#: data segment at a confirmed ``mss`` fits, whatever it acknowledges
SACK_ROOM = 32


class PathMtu:
    """The path-MTU search of one connection's sending direction."""

    __slots__ = (
        "ceiling",
        "deadline",
        "floor",
        "heard",
        "high",
        "low",
        "mss",
        "pending",
        "probe",
        "probes",
        "raise_interval",
    )

    def __init__(self, floor: int, raise_interval: float) -> None:
        self.floor = floor
        self.ceiling = floor
        #: the segment size in use: the largest confirmed
        self.mss = floor
        #: largest size confirmed, smallest size not refused yet (the search interval)
        self.low = floor
        self.high = floor
        #: the candidate of the outstanding (or next) probe; 0: none
        self.probe = 0
        #: probes of ``probe`` that went unanswered while the path carried other segments
        self.probes = 0
        #: a probe should go out with the next segments
        self.pending = False
        #: the probe's loss timer, or (searching done) when to try the ceiling again
        self.deadline: float | None = None
        #: the peer was heard from since the outstanding probe went out
        self.heard = False
        self.raise_interval = raise_interval

    @property
    def searching(self) -> bool:
        return self.probe != 0

    def set_ceiling(self, ceiling: int, now: float) -> int:
        """The runtime reported the largest ``mss`` its interface allows; returns the ``mss``
        to use (lowered at once if it was above the new ceiling). The search starts over."""
        self.ceiling = max(ceiling, self.floor)
        self.mss = min(self.mss, self.ceiling)
        self.low = self.mss
        self.high = self.ceiling
        self._search(now, from_top=True)
        return self.mss

    def _search(self, now: float, *, from_top: bool = False) -> None:
        """Pick the next candidate in (low, high] -- the top first after a (re)start, else the
        middle -- or finish the search."""
        self.probes = 0
        if self.high - self.low < SEARCH_GRANULARITY:
            self.probe = 0
            self.pending = False
            # Done: try the ceiling again later, in case the path grew.
            self.deadline = now + self.raise_interval if self.ceiling > self.mss else None
            return
        self.probe = self.high if from_top else (self.low + self.high + 1) // 2
        self.pending = True
        self.deadline = None

    def next_probe(self, now: float, timeout: float) -> int:
        """The candidate to probe now (0: none); its loss timer starts (``timeout``: an RTO)."""
        if not self.pending:
            return 0
        self.pending = False
        self.heard = False
        self.deadline = now + timeout
        return self.probe

    def on_heard(self) -> None:
        """A segment of the peer arrived: the path works (for segments of other sizes)."""
        self.heard = True

    def on_probe_ack(self, candidate: int, now: float) -> int | None:
        """The peer answered a probe; returns the new ``mss`` if that confirmed a larger one."""
        if candidate != self.probe or candidate <= self.mss:
            return None
        self.mss = self.low = candidate
        self._search(now)
        return self.mss

    def on_timer(self, now: float) -> bool:
        """The deadline passed: a probe's loss timer, or the time to search again. True when
        the probe is resent without evidence that the path works: the connection should ask
        for an answer (KEEPALIVE) with it."""
        if self.deadline is None or now < self.deadline:
            return False
        self.deadline = None
        if not self.probe:
            self.high = self.ceiling  # the raise timer: the path may carry more now
            self._search(now, from_top=True)
            return False
        if not self.heard:
            self.pending = True  # lost in an outage, or nothing else went on: proves nothing
            return True
        self.probes += 1
        if self.probes >= MAX_PROBES:
            self.high = self.probe - 1  # refused while the path carried other segments
            self._search(now)
        else:
            self.pending = True
        return False

    def new_path(self) -> int:
        """The flow continues on another path (RESUME, §4.2.5): back to the floor, and the
        search starts again from the ceiling. Returns the ``mss``."""
        self.mss = self.low = self.floor
        self.high = self.ceiling
        self.probes = 0
        self.deadline = None
        searching = self.high - self.low >= SEARCH_GRANULARITY
        self.probe = self.high if searching else 0
        self.pending = searching
        return self.mss

    def on_black_hole(self, now: float) -> int | None:
        """A retransmission timeout: if the ``mss`` is above the floor, the path may have
        shrunk. Returns the new ``mss`` (the floor), or None if nothing changed."""
        if self.mss <= self.floor:
            return None
        lost = self.mss
        self.mss = self.low = self.floor
        self.high = lost  # the old size is the first candidate: the loss may have been congestion
        self._search(now, from_top=True)
        return self.mss
