"""RTT estimation and the retransmission timeout (RFC 6298; docs/protocol.md §4.2.4).

SRTT, RTTVAR and RTO from RTT samples (the connection takes them from timestamp echoes, so
retransmitted segments give unambiguous samples and Karn's rule is not needed):

* the first sample R sets SRTT = R, RTTVAR = R / 2 (RFC 6298 §2.2);
* later ones RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, then SRTT = 7/8 SRTT + 1/8 R (§2.3);
* RTO = SRTT + max(G, 4 RTTVAR), G = 1 ms, clamped to [min_rto, max_rto] (§2.4, §2.5);
  before any sample it is ``initial_rto``;
* each expiry doubles the timer (``backoff``, §5.5) up to ``max_rto``; any progress resets it.
"""

from __future__ import annotations

import msgspec

__all__ = ["GRANULARITY", "RttEstimator", "RttState"]

#: clock granularity G of RFC 6298 §2.
GRANULARITY = 0.001
#: backoff exponents beyond this change nothing (the cap is reached long before).
_MAX_BACKOFF_SHIFT = 30


class RttState(msgspec.Struct, frozen=True, kw_only=True):
    """The estimator in a connection snapshot (the backoff restarts on the new host)."""

    srtt: float | None
    rttvar: float | None
    min_rtt: float | None
    rto: float

    def __post_init__(self) -> None:
        if (self.srtt is None) != (self.rttvar is None) or not self.rto > 0:
            raise ValueError("inconsistent RTT state")


class RttEstimator:
    """SRTT / RTTVAR / RTO of one connection, and the timer's exponential backoff."""

    __slots__ = ("backoff", "max_rto", "min_rto", "min_rtt", "rto", "rttvar", "srtt")

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.min_rtt: float | None = None
        #: the RTO before backoff.
        self.rto = initial_rto
        #: consecutive expiries of the timer without progress (the retry count, too).
        self.backoff = 0

    def on_sample(self, rtt: float) -> None:
        """Fold in one RTT sample (seconds)."""
        srtt = self.srtt
        rttvar = self.rttvar
        # Comparisons, not abs/max/min: this runs for every acknowledgment with a sample.
        if srtt is None or rttvar is None:
            srtt = rtt
            rttvar = rtt / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * (srtt - rtt if srtt > rtt else rtt - srtt)
            srtt = 0.875 * srtt + 0.125 * rtt
        self.srtt = srtt
        self.rttvar = rttvar
        min_rtt = self.min_rtt
        if min_rtt is None or rtt < min_rtt:
            self.min_rtt = rtt
        spread = 4 * rttvar
        rto = srtt + (spread if spread > GRANULARITY else GRANULARITY)
        self.rto = self.min_rto if rto < self.min_rto else self.max_rto if rto > self.max_rto else rto

    def interval(self) -> float:
        """The timer to arm now: RTO doubled per backoff step, at most ``max_rto``."""
        return min(self.rto * (1 << min(self.backoff, _MAX_BACKOFF_SHIFT)), self.max_rto)

    def export_state(self) -> RttState:
        return RttState(srtt=self.srtt, rttvar=self.rttvar, min_rtt=self.min_rtt, rto=self.rto)

    def restore(self, state: RttState) -> None:
        self.srtt = state.srtt
        self.rttvar = state.rttvar
        self.min_rtt = state.min_rtt
        self.rto = state.rto
