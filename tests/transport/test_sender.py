"""The sending half (scaffold.transport.sender): cutting segments within min(cwnd, peer
window), the FIN, the persist timer, and what an ACK does."""

from __future__ import annotations

from scaffold.transport.events import EventQueue, SendSpaceAvailable
from scaffold.transport.options import StreamOptions
from scaffold.transport.sender import Sender
from scaffold.wire.stream import StreamType

MSS = 1000
OPTIONS = StreamOptions(mss=MSS, initial_window=4)


class Recorder:
    """A ``build`` that records (kind, seq, payload length) instead of encoding."""

    def __init__(self) -> None:
        self.segments: list[tuple[StreamType, int, int]] = []

    def __call__(self, kind: StreamType, seq: int, flags: int, now: float, payload: bytes) -> bytes:
        self.segments.append((kind, seq, len(payload)))
        return payload


def sender(options: StreamOptions = OPTIONS) -> tuple[Sender, EventQueue]:
    events = EventQueue()
    return Sender(options, events), events


def test_cuts_mss_segments_within_cwnd() -> None:
    send, _ = sender()
    send.peer_right_edge = 1_000_000
    send.stream.write(bytes(10_000), limit=1 << 20, force=False)
    build = Recorder()
    send.write(0.0, [], build)
    assert build.segments == [(StreamType.DATA, i * MSS, MSS) for i in range(4)]  # cwnd 4 MSS
    assert send.recovery.in_flight == 4 * MSS and send.rto_deadline == 1.0


def test_peer_window_limits_and_avoids_small_segments() -> None:
    send, _ = sender(StreamOptions(mss=MSS, initial_window=100))
    send.peer_right_edge = 2500
    send.stream.write(bytes(10_000), limit=1 << 20, force=False)
    build = Recorder()
    send.write(0.0, [], build)
    # two full segments; the 500 bytes left in the window wait for ACKs to open more
    assert [size for _, _, size in build.segments] == [MSS, MSS]


def test_fin_rides_on_the_last_data() -> None:
    send, _ = sender()
    send.peer_right_edge = 1_000_000
    send.stream.write(bytes(1500), limit=1 << 20, force=False)
    send.stream.shutdown = True
    build = Recorder()
    send.write(0.0, [], build)
    assert build.segments == [(StreamType.DATA, 0, 1000), (StreamType.FIN, 1000, 500)]
    assert send.stream.fin_sent and send.stream.nxt == 1501


def test_zero_window_arms_the_persist_timer() -> None:
    send, _ = sender()
    send.stream.write(b"x" * 10, limit=1 << 20, force=False)
    build = Recorder()
    send.write(0.0, [], build)
    assert build.segments == [] and send.persist_deadline == 1.0  # RTO before any sample
    assert send.on_persist_timeout(max_retries=1)
    assert not send.on_persist_timeout(max_retries=1)


def test_ack_frees_space_and_tells_a_blocked_writer() -> None:
    send, events = sender(StreamOptions(mss=MSS, initial_window=4, send_buffer=4000))
    send.peer_right_edge = 1_000_000
    assert send.stream.write(bytes(5000), limit=4000, force=False) == 4000
    send.write(0.0, [], Recorder())
    assert send.on_ack(1000, 65_536, (), 0.05, 0.05)
    assert events.pop() is None  # 3000 of 4000 still held: less than half free
    assert send.on_ack(2000, 65_536, (), 0.05, 0.06)
    assert events.pop() == SendSpaceAvailable(2000)
    assert send.rtt.srtt == 0.05 and send.peer_right_edge == 1_000_000
    assert not send.on_ack(2000, 65_536, (), None, 0.07)  # a duplicate: no progress


def test_retransmits_lost_segments_first() -> None:
    send, _ = sender()
    send.peer_right_edge = 1_000_000
    send.stream.write(bytes(8000), limit=1 << 20, force=False)
    send.write(0.0, [], Recorder())
    assert send.on_retransmission_timeout(max_retries=3, now=1.0)  # everything lost, cwnd 1 MSS
    build = Recorder()
    send.write(1.0, [], build)
    assert build.segments == [(StreamType.DATA, 0, MSS)]
    assert send.stream.bytes_retransmitted == MSS
