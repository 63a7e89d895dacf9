"""NewReno (scaffold.transport.congestion.newreno) against RFC 5681 / RFC 6582 rules."""

from __future__ import annotations

import msgspec
import pytest

from scaffold.errors import MalformedPacket, UsageError
from scaffold.transport import StreamOptions
from scaffold.transport.congestion import CongestionState, NewReno, NewRenoState, algorithms, create

MSS = 1200


def cc(initial_window: int = 10) -> NewReno:
    return NewReno(MSS, initial_window)


def test_initial_window_is_ten_segments_in_slow_start() -> None:
    reno = cc()
    assert reno.cwnd == 10 * MSS
    assert reno.ssthresh is None
    assert isinstance(create("newreno", MSS, 10), NewReno)
    assert "newreno" in algorithms()


def test_slow_start_grows_by_the_bytes_acknowledged() -> None:
    reno = cc()
    reno.on_ack(3 * MSS, in_flight_before=reno.cwnd)
    assert reno.cwnd == 13 * MSS
    # a full window acknowledged doubles it: one RTT of slow start
    reno.on_ack(reno.cwnd, in_flight_before=reno.cwnd)
    assert reno.cwnd == 26 * MSS


def test_a_window_not_used_does_not_grow() -> None:
    reno = cc()
    reno.on_ack(MSS, in_flight_before=reno.cwnd - 3 * MSS)  # application-limited
    assert reno.cwnd == 10 * MSS
    reno.on_ack(MSS, in_flight_before=reno.cwnd - 2 * MSS)  # within 2 MSS counts as full
    assert reno.cwnd == 11 * MSS


def enter_avoidance(reno: NewReno) -> None:
    reno.cwnd = 40 * MSS
    assert reno.on_loss(largest_lost=0, next_pn=1)
    assert reno.ssthresh == reno.cwnd == 20 * MSS


def test_congestion_avoidance_adds_about_one_mss_per_rtt() -> None:
    reno = cc()
    enter_avoidance(reno)
    for _rtt in range(5):
        window = reno.cwnd
        for _ in range(window // MSS):  # one window's worth of ACKs, one segment each
            reno.on_ack(MSS, in_flight_before=window)
        assert reno.cwnd == window + MSS
    assert reno.cwnd == 25 * MSS


def test_one_reduction_per_recovery_episode() -> None:
    reno = cc()
    reno.cwnd = 40 * MSS
    assert reno.on_loss(largest_lost=5, next_pn=20)
    assert (reno.cwnd, reno.ssthresh, reno.recovery_start) == (20 * MSS, 20 * MSS, 20)
    # more losses of segments sent before the episode began: the same congestion event
    assert not reno.on_loss(largest_lost=19, next_pn=30)
    assert reno.cwnd == 20 * MSS
    # a loss of a segment sent after it: a new episode, a new reduction
    assert reno.on_loss(largest_lost=20, next_pn=40)
    assert reno.cwnd == 10 * MSS and reno.recovery_start == 40


def test_loss_never_cuts_below_two_segments() -> None:
    reno = cc(initial_window=1)
    assert reno.on_loss(largest_lost=0, next_pn=1)
    assert reno.cwnd == reno.ssthresh == 2 * MSS


def test_retransmission_timeout_sets_one_mss_and_half_the_flight() -> None:
    reno = cc()
    reno.cwnd = 30 * MSS
    reno.on_retransmission_timeout(flight=24 * MSS, next_pn=50)
    assert reno.cwnd == MSS  # RFC 5681 §3.1: LW = 1 SMSS
    assert reno.ssthresh == 12 * MSS  # max(FlightSize / 2, 2 SMSS)
    assert reno.recovery_start == 50
    reno.on_retransmission_timeout(flight=MSS, next_pn=51)
    assert reno.ssthresh == 2 * MSS
    # slow start again up to ssthresh, then avoidance
    reno.on_ack(MSS, in_flight_before=reno.cwnd)
    assert reno.cwnd == 2 * MSS
    reno.on_ack(MSS, in_flight_before=reno.cwnd)
    assert reno.cwnd == 2 * MSS  # ca_acked accumulates towards the next MSS


def test_reset_restarts_slow_start_from_the_initial_window() -> None:
    reno = cc()
    enter_avoidance(reno)
    reno.reset(next_pn=77)
    assert (reno.cwnd, reno.ssthresh, reno.recovery_start, reno.ca_acked) == (10 * MSS, None, 77, 0)


def test_mss_is_read_at_run_time() -> None:
    reno = cc()
    enter_avoidance(reno)
    reno.mss = 600  # a smaller path MTU
    window = reno.cwnd
    reno.on_ack(window, in_flight_before=window)
    assert reno.cwnd == window + 600
    reno.on_retransmission_timeout(flight=0, next_pn=9)
    assert reno.cwnd == 600 and reno.ssthresh == 1200


def test_state_round_trip() -> None:
    reno = cc()
    enter_avoidance(reno)
    reno.on_ack(5 * MSS, in_flight_before=reno.cwnd)
    state = reno.export_state()
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=NewRenoState)
    assert decoded == state
    restored = cc()
    restored.restore(decoded)
    assert restored.export_state() == state


class _OtherState(CongestionState, frozen=True, kw_only=True, tag="other"):
    pass


def test_restore_refuses_another_algorithms_state() -> None:
    with pytest.raises(MalformedPacket) as info:
        cc().restore(_OtherState(cwnd=MSS, ssthresh=None, recovery_start=0))
    assert info.value.reason == "bad-flow-state"


def test_unknown_algorithm_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="congestion"):
        StreamOptions(congestion="cubic")
