"""NewReno congestion control (RFC 5681, RFC 6582 as restated by RFC 9002 §7; docs/protocol.md §4.2.4).

Slow start grows the window by the bytes acknowledged; congestion avoidance by one MSS per
window of acknowledged bytes (about one MSS per RTT); a loss halves the window once per
recovery episode (ssthresh = max(cwnd / 2, 2 MSS)); a retransmission timeout sets
ssthresh = max(FlightSize / 2, 2 MSS) and cwnd = 1 MSS (RFC 5681 §3.1).
"""

from __future__ import annotations

from .base import CongestionControl, CongestionState

__all__ = ["NewReno", "NewRenoState"]


class NewRenoState(CongestionState, frozen=True, kw_only=True, tag="newreno"):
    #: congestion avoidance: bytes acknowledged towards the next MSS of growth.
    ca_acked: int = 0


class NewReno(CongestionControl):
    __slots__ = ("ca_acked",)

    name = "newreno"
    state_type = NewRenoState

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        self.ca_acked = 0

    def on_ack(self, acked: int, in_flight_before: int) -> None:
        cwnd = self.cwnd
        # Only a window the sender filled may grow (within 2 MSS, RFC 7661's spirit).
        if not acked or in_flight_before + 2 * self.mss < cwnd:
            return
        ssthresh = self.ssthresh
        if ssthresh is None or cwnd < ssthresh:
            self.cwnd = cwnd + acked  # slow start
            return
        ca_acked = self.ca_acked + acked  # congestion avoidance: one MSS per window acknowledged
        while ca_acked >= cwnd:
            ca_acked -= cwnd
            cwnd += self.mss
        self.ca_acked = ca_acked
        self.cwnd = cwnd

    def on_congestion_event(self) -> None:
        self.ssthresh = self.cwnd = max(self.cwnd // 2, 2 * self.mss)
        self.ca_acked = 0

    def on_timeout(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.ca_acked = 0

    def reset(self, next_pn: int) -> None:
        super().reset(next_pn)
        self.ca_acked = 0

    def export_state(self) -> NewRenoState:
        return NewRenoState(
            cwnd=self.cwnd, ssthresh=self.ssthresh, recovery_start=self.recovery_start, ca_acked=self.ca_acked
        )

    def restore(self, state: CongestionState) -> None:
        super().restore(state)
        assert isinstance(state, NewRenoState)
        self.ca_acked = state.ca_acked
