"""The ACK policy (scaffold.transport.acks): delayed ACKs, window updates, echoes."""

from __future__ import annotations

from scaffold.transport.acks import AckPolicy


def test_every_second_in_order_segment_or_after_the_delay() -> None:
    acks = AckPolicy(ack_every=2, ack_delay=0.01)
    acks.on_in_order(now=1.0)
    assert (acks.immediate, acks.deadline) == (False, 1.01)
    acks.on_in_order(now=1.005)
    assert (acks.immediate, acks.deadline) == (True, 1.01)  # the first one's delay still runs
    acks.on_sent(edge=5000)
    assert (acks.pending, acks.immediate, acks.deadline, acks.advertised_edge) == (0, False, None, 5000)


def test_window_update_only_when_it_grew_usefully() -> None:
    acks = AckPolicy(ack_every=2, ack_delay=0.01)
    acks.on_sent(edge=1000 + 40_000)  # rcv_nxt 1000, a 40000-byte window advertised
    acks.on_read(edge=1000 + 64_000, rcv_nxt=1000, buffer=64_000, mss=1200)
    assert not acks.immediate  # the advertised window is not small (>= half the buffer)
    acks.on_sent(edge=60_000)  # rcv_nxt 59000: 1000 bytes advertised, small
    acks.on_read(edge=60_500, rcv_nxt=59_000, buffer=64_000, mss=1200)
    assert not acks.immediate  # it grew by less than 2 MSS: silly window
    acks.on_read(edge=62_400, rcv_nxt=59_000, buffer=64_000, mss=1200)
    assert acks.immediate


def test_echo_the_oldest_unacknowledged_timestamp() -> None:
    acks = AckPolicy(ack_every=2, ack_delay=0.01)
    acks.on_timestamp(100)
    acks.on_in_order(now=0.0)
    acks.on_timestamp(200)  # an ACK is pending: keep echoing the older one
    assert acks.ts_recent == 100
    acks.on_sent(edge=0)
    acks.on_timestamp(300)
    assert acks.ts_recent == 300
