"""The scoreboard (scaffold.transport.recovery): SACK, packet-threshold loss, RTO."""

from __future__ import annotations

import pytest

from scaffold.transport.congestion import NewReno
from scaffold.transport.recovery import PACKET_THRESHOLD, Recovery, RecoveryState, SentRecord

MSS = 1000


def scoreboard(segments: int = 10) -> Recovery:
    """``segments`` segments of MSS bytes sent: [0, 1000) as pn 0, [1000, 2000) as pn 1, ..."""
    recovery = Recovery(NewReno(MSS, 10))
    for index in range(segments):
        recovery.on_sent(index * MSS, (index + 1) * MSS, False)
    return recovery


def pns(recovery: Recovery) -> list[int]:
    return [segment.pn for segment in recovery.segments or ()]


def lost(recovery: Recovery) -> list[int]:
    return [segment.pn for segment in recovery.segments or () if segment.lost]


def sack(recovery: Recovery, *pn: int, ack: int = 0) -> bool:
    """Acknowledge the segments with transmission numbers ``pn`` by SACK blocks."""
    blocks = tuple((p * MSS, (p + 1) * MSS) for p in pn)
    return recovery.on_ack(ack, 0, 10 * MSS, blocks)


def test_sent_segments_get_increasing_transmission_numbers() -> None:
    recovery = scoreboard(4)
    assert pns(recovery) == [0, 1, 2, 3]
    assert recovery.in_flight == 4 * MSS and recovery.next_pn == 4


def test_cumulative_ack_removes_and_trims() -> None:
    recovery = scoreboard(4)
    assert recovery.on_ack(1500, 0, 4 * MSS, ())
    assert pns(recovery) == [1, 2, 3]
    segments = recovery.segments  # a local: mypy would keep the attribute narrowed after on_ack
    assert segments is not None and segments[0].start == 1500
    assert recovery.in_flight == 2500
    assert recovery.on_ack(4 * MSS, 1500, 4 * MSS, ())
    assert recovery.segments is None and recovery.in_flight == 0  # the list is released
    assert not recovery.on_ack(4 * MSS, 4 * MSS, 4 * MSS, ())  # a duplicate: no progress


def test_sack_removes_only_fully_covered_segments() -> None:
    recovery = scoreboard(4)
    assert recovery.on_ack(0, 0, 4 * MSS, ((1000, 2500),))
    assert pns(recovery) == [0, 2, 3]  # [2000, 3000) is only half covered
    assert recovery.in_flight == 3 * MSS
    # blocks below una or beyond what was sent are ignored
    assert not recovery.on_ack(0, 0, 4 * MSS, ((5000, 6000),))


def test_loss_when_one_sent_packet_threshold_later_is_acknowledged() -> None:
    assert PACKET_THRESHOLD == 3
    recovery = scoreboard(10)
    sack(recovery, 1, 2)
    assert lost(recovery) == []
    cwnd = recovery.cc.cwnd
    sack(recovery, 3)  # pn 3 acknowledged: pn 0 is 3 transmissions older
    assert lost(recovery) == [0]
    assert recovery.lost_count == 1
    assert recovery.in_flight == 6 * MSS  # pn 4..9 in flight; pn 0 lost, 1..3 acknowledged
    assert recovery.loss_episodes == 1 and recovery.cc.cwnd == cwnd // 2
    sack(recovery, 5)  # threshold pn 2: nothing unacknowledged that old but pn 0
    assert lost(recovery) == [0]
    sack(recovery, 8)  # threshold pn 5: pn 4 is lost now, in the same episode
    assert lost(recovery) == [0, 4]
    assert recovery.loss_episodes == 1 and recovery.cc.cwnd == cwnd // 2


def test_retransmission_gets_a_new_number_and_can_be_lost_again() -> None:
    recovery = scoreboard(10)
    sack(recovery, 3)
    segment = next(s for s in recovery.segments or () if s.lost)
    recovery.on_retransmitted(segment)
    assert not segment.lost and segment.pn == 10 and recovery.next_pn == 11
    assert recovery.lost_count == 0 and recovery.in_flight == 9 * MSS
    sack(recovery, 4, 5, 6, 7, 8, 9)  # all of them older than the retransmission
    assert lost(recovery) == [1, 2]  # never acknowledged: lost too
    assert not segment.lost
    # a later transmission 3 numbers after the retransmission is acknowledged
    for start in (20_000, 21_000, 22_000):
        recovery.on_sent(start, start + MSS, False)
    assert recovery.next_pn == 14
    assert recovery.on_ack(0, 0, 23_000, ((22_000, 23_000),))
    assert segment.lost  # pn 10 <= 13 - 3


def test_acknowledged_bytes_sent_before_the_episode_do_not_grow_the_window() -> None:
    recovery = scoreboard(10)
    sack(recovery, 3)
    cwnd = recovery.cc.cwnd
    assert recovery.cc.recovery_start == 10
    sack(recovery, 4, 5, 6, 7, 8, 9)  # sent before the episode began
    assert recovery.cc.cwnd == cwnd


def test_retransmission_timeout_deems_everything_lost() -> None:
    recovery = scoreboard(5)
    recovery.on_timeout()
    assert lost(recovery) == [0, 1, 2, 3, 4]
    assert recovery.in_flight == 0 and recovery.lost_count == 5
    assert recovery.retransmit_timeouts == 1
    assert recovery.cc.cwnd == MSS and recovery.cc.ssthresh == 2500  # half the 5000 in flight
    empty = Recovery(NewReno(MSS, 10))
    empty.on_timeout()  # nothing outstanding: nothing happens
    assert empty.retransmit_timeouts == 0


def test_reset_forgets_the_scoreboard_and_restarts_congestion_control() -> None:
    recovery = scoreboard(5)
    recovery.on_timeout()
    recovery.reset()
    assert recovery.segments is None and recovery.in_flight == recovery.lost_count == 0
    assert recovery.largest_acked == recovery.next_pn - 1 == 4
    assert recovery.cc.cwnd == 10 * MSS and recovery.cc.ssthresh is None


def test_state_round_trip() -> None:
    recovery = scoreboard(6)
    sack(recovery, 3, 4)
    state = recovery.export_state()
    restored = Recovery(NewReno(MSS, 10))
    restored.restore(state)
    assert restored.export_state() == state
    assert (restored.in_flight, restored.lost_count) == (recovery.in_flight, recovery.lost_count)


@pytest.mark.parametrize(
    "segments",
    [
        [SentRecord(0, 10, False, 0, False), SentRecord(5, 20, False, 1, False)],  # overlap
        [SentRecord(10, 10, False, 0, False)],  # empty
        [SentRecord(0, 10, False, 7, False)],  # pn not sent yet
    ],
)
def test_state_record_rejects_inconsistent_scoreboards(segments: list[SentRecord]) -> None:
    with pytest.raises(ValueError):
        RecoveryState(segments=segments, next_pn=5, largest_acked=-1)
