"""The receive stream (scaffold.transport.receive): reassembly, SACK blocks, FIN, reads."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.transport.receive import DUPLICATE, GAP_FILLED, IN_ORDER, OUT_OF_ORDER, ReceiveStream

EDGE = 1 << 30  # a window that never limits


def test_in_order_duplicate_and_gap_fill() -> None:
    stream = ReceiveStream()
    assert stream.on_data(0, b"abc", EDGE) == IN_ORDER
    assert stream.on_data(0, b"abc", EDGE) == DUPLICATE
    assert stream.on_data(6, b"ghi", EDGE) == OUT_OF_ORDER
    assert stream.rcv_nxt == 3 and stream.readable == 3
    assert stream.on_data(2, b"cdef", EDGE) == GAP_FILLED  # overlaps both sides
    assert stream.rcv_nxt == 9
    assert stream.read(-1) == b"abcdefghi"
    assert stream.bytes_received == 9
    # drained: nothing held, no buffers
    assert stream.data is None and stream.out_of_order is None and stream.pieces is None


def test_overlapping_out_of_order_pieces_stay_disjoint() -> None:
    stream = ReceiveStream()
    stream.on_data(10, b"KLMNO", EDGE)
    stream.on_data(8, b"IJKLMNOPQ", EDGE)
    stream.on_data(20, b"U", EDGE)
    pieces = stream.pieces
    assert pieces is not None and sorted(pieces) == [8, 10, 15, 20]
    assert b"".join(pieces[k] for k in (8, 10, 15)) == b"IJKLMNOPQ"
    stream.on_data(0, b"ABCDEFGH", EDGE)
    assert stream.read(-1) == b"ABCDEFGHIJKLMNOPQ"
    assert stream.out_of_order is not None and list(stream.out_of_order) == [(20, 21)]


def test_data_beyond_the_right_edge_is_cut() -> None:
    stream = ReceiveStream()
    assert stream.on_data(0, b"0123456789", right_edge=4) == IN_ORDER
    assert stream.read(-1) == b"0123"
    assert stream.window(buffer=8) == 8


def test_sack_blocks_latest_first_then_highest() -> None:
    stream = ReceiveStream()
    for start in (10, 30, 50, 70, 90):
        stream.on_data(start, b"x" * 5, EDGE)
    stream.on_data(30, b"x" * 8, EDGE)  # the latest arrival extends [30, 35)
    assert stream.sack_blocks() == ((30, 38), (90, 95), (70, 75), (50, 55))  # at most 4


def test_fin_is_checked_and_consumed_once() -> None:
    stream = ReceiveStream()
    assert stream.check_fin(5, fin=True)
    assert stream.peer_fin == 5
    assert not stream.check_fin(6, fin=True)  # a FIN that moves
    assert not stream.check_fin(7, fin=False)  # data past the FIN
    assert stream.check_fin(5, fin=False)
    assert not stream.consume_fin()
    stream.on_data(0, b"hello", EDGE)
    assert stream.consume_fin() and not stream.consume_fin()
    assert stream.fin_consumed and stream.rcv_nxt == 6 and stream.stream_rcv_nxt == 5


def test_partial_reads_and_discard() -> None:
    stream = ReceiveStream()
    stream.on_data(0, b"0123456789", EDGE)
    assert stream.read(4) == b"0123" and stream.read_offset == 4
    assert stream.window(buffer=16) == 10
    stream.on_data(20, b"held", EDGE)
    stream.discard_input()
    assert stream.readable == 0 and stream.read_offset == stream.rcv_nxt == 10
    assert stream.out_of_order is None
    stream.on_data(10, b"more", EDGE)  # acknowledged, not kept
    assert stream.rcv_nxt == stream.read_offset == 14 and stream.data is None


def test_rewind_and_resume_at() -> None:
    stream = ReceiveStream()
    stream.on_data(0, b"abc", EDGE)
    stream.on_data(10, b"zzz", EDGE)
    stream.check_fin(13, fin=True)
    stream.rewind()  # RESUME: the peer's new host resends from rcv_nxt, FIN included
    assert stream.out_of_order is None and stream.peer_fin is None and stream.rcv_nxt == 3
    other = ReceiveStream()
    other.resume_at(100, peer_ended=True)
    assert (other.rcv_nxt, other.read_offset, other.peer_fin) == (100, 99, 99)
    assert other.fin_consumed


def test_state_round_trip() -> None:
    stream = ReceiveStream()
    stream.on_data(0, b"abc", EDGE)
    stream.on_data(10, b"klm", EDGE)
    stream.on_data(20, b"uv", EDGE)
    state = stream.export_state()
    restored = ReceiveStream()
    restored.restore(state)
    assert restored.export_state() == state
    assert restored.sack_blocks() == stream.sack_blocks()


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 2**32), st.floats(0.0, 0.5))
def test_any_segmentation_order_and_duplication_reassembles(data: bytes, seed: int, dup: float) -> None:
    rng = random.Random(seed)
    cuts = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(rng.randint(0, 20)))})
    segments = [(a, data[a:b]) for a, b in itertools.pairwise(cuts) if b > a]
    segments += [s for s in segments if rng.random() < dup]
    rng.shuffle(segments)
    stream = ReceiveStream()
    received = bytearray()
    for start, chunk in segments:
        stream.on_data(start, chunk, EDGE)
        received += stream.read(rng.choice((-1, 7)))
    received += stream.read(-1)
    assert bytes(received) == data
    assert stream.out_of_order is None and stream.bytes_received == len(data)
