"""RTT estimation and the RTO (scaffold.transport.rtt) against RFC 6298's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.transport.rtt import GRANULARITY, RttEstimator, RttState


def estimator(initial: float = 1.0, low: float = 0.2, high: float = 4.0) -> RttEstimator:
    return RttEstimator(initial_rto=initial, min_rto=low, max_rto=high)


def test_before_any_sample_the_initial_rto() -> None:
    rtt = estimator(initial=1.0)
    assert (rtt.srtt, rtt.rttvar, rtt.min_rtt) == (None, None, None)
    assert rtt.rto == rtt.interval() == 1.0


def test_first_sample_sets_srtt_and_half_of_it_as_rttvar() -> None:
    rtt = estimator()
    rtt.on_sample(0.1)
    assert rtt.srtt == 0.1
    assert rtt.rttvar == 0.05
    assert rtt.rto == pytest.approx(0.1 + 4 * 0.05)  # RFC 6298 §2.2
    assert rtt.min_rtt == 0.1


def test_later_samples_use_alpha_one_eighth_and_beta_one_quarter() -> None:
    rtt = estimator()
    rtt.on_sample(0.1)
    rtt.on_sample(0.3)
    # §2.3: RTTVAR first, from the old SRTT; then SRTT.
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)
    srtt = 0.875 * 0.1 + 0.125 * 0.3
    assert rtt.rttvar == pytest.approx(rttvar)
    assert rtt.srtt == pytest.approx(srtt)
    assert rtt.rto == pytest.approx(srtt + 4 * rttvar)
    assert rtt.min_rtt == 0.1


def test_rto_is_clamped_to_min_and_max() -> None:
    fast = estimator(low=0.2)
    fast.on_sample(0.001)
    assert fast.rto == 0.2
    slow = estimator(high=4.0)
    slow.on_sample(3.0)
    assert slow.rto == 4.0


def test_granularity_floors_the_variance_term() -> None:
    rtt = estimator(low=1e-6)
    for _ in range(200):  # RTTVAR decays towards 0 on a constant RTT
        rtt.on_sample(0.01)
    assert rtt.srtt is not None and rtt.rttvar is not None
    assert 4 * rtt.rttvar < GRANULARITY
    assert rtt.rto == pytest.approx(rtt.srtt + GRANULARITY)


def test_backoff_doubles_up_to_max_rto() -> None:
    rtt = estimator(initial=1.0, high=4.0)
    intervals = []
    for _ in range(6):
        intervals.append(rtt.interval())
        rtt.backoff += 1
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    rtt.backoff = 10_000  # far beyond any shift: still capped, no overflow
    assert rtt.interval() == 4.0
    rtt.backoff = 0
    assert rtt.interval() == 1.0


def test_state_round_trip_leaves_the_backoff_behind() -> None:
    rtt = estimator()
    rtt.on_sample(0.05)
    rtt.on_sample(0.07)
    rtt.backoff = 3
    state = rtt.export_state()
    restored = estimator()
    restored.restore(state)
    assert restored.export_state() == state
    assert (restored.srtt, restored.rttvar, restored.min_rtt, restored.rto) == (
        rtt.srtt,
        rtt.rttvar,
        rtt.min_rtt,
        rtt.rto,
    )
    assert restored.backoff == 0


def test_state_record_rejects_half_an_estimate() -> None:
    with pytest.raises(ValueError):
        RttState(srtt=0.1, rttvar=None, min_rtt=0.1, rto=1.0)


@settings(deadline=None)
@given(st.lists(st.floats(1e-5, 10.0), min_size=1, max_size=50))
def test_matches_rfc6298_reference(samples: list[float]) -> None:
    rtt = estimator(low=0.2, high=4.0)
    srtt = rttvar = 0.0
    for index, sample in enumerate(samples):
        rtt.on_sample(sample)
        if index == 0:
            srtt, rttvar = sample, sample / 2
        else:
            rttvar = (1 - 1 / 4) * rttvar + 1 / 4 * abs(srtt - sample)
            srtt = (1 - 1 / 8) * srtt + 1 / 8 * sample
        expected = min(max(srtt + max(GRANULARITY, 4 * rttvar), 0.2), 4.0)
        assert rtt.srtt == pytest.approx(srtt)
        assert rtt.rto == pytest.approx(expected)
        assert 0.2 <= rtt.rto <= 4.0
    assert rtt.min_rtt == min(samples)
