"""The send stream (scaffold.transport.send): buffer limits, acknowledgment, FIN, rewind."""

from __future__ import annotations

import pytest

from scaffold.transport.send import SendState, SendStream


def test_write_takes_what_fits_and_marks_blocked() -> None:
    stream = SendStream()
    assert stream.data is None  # no buffer until the first write
    assert stream.write(b"x" * 600, limit=1000, force=False) == 600
    assert not stream.blocked
    assert stream.write(b"y" * 600, limit=1000, force=False) == 400
    assert (stream.blocked, stream.buffered) == (True, 1000)
    assert stream.write(b"z", limit=1000, force=False) == 0


def test_forced_write_takes_everything() -> None:
    stream = SendStream()
    assert stream.write(b"a" * 3000, limit=1000, force=True) == 3000
    assert stream.blocked and stream.buffered == 3000


def test_payload_and_acknowledge_release_the_buffer() -> None:
    stream = SendStream()
    stream.write(b"0123456789", limit=100, force=False)
    assert stream.payload(2, 5) == b"234"
    stream.nxt = 10
    stream.acknowledge(4)
    assert stream.una == 4 and stream.buffered == 6 and stream.bytes_acked == 4
    assert stream.payload(4, 6) == b"45"
    stream.acknowledge(10)
    assert stream.data is None and stream.buffered == 0  # drained: released


def test_fin_takes_a_sequence_number() -> None:
    stream = SendStream()
    stream.write(b"abc", limit=100, force=False)
    stream.shutdown = stream.fin_sent = True
    stream.nxt = 4  # three bytes and the FIN
    assert stream.data_end == 3
    stream.acknowledge(3)
    assert not stream.fin_acked
    stream.acknowledge(4)
    assert (stream.fin_acked, stream.data_end, stream.una) == (True, 3, 4)


def test_rewind_resends_from_una() -> None:
    stream = SendStream()
    stream.write(b"abcdef", limit=100, force=False)
    stream.shutdown = stream.fin_sent = True
    stream.nxt = 7
    stream.acknowledge(2)
    stream.rewind()
    assert stream.nxt == 2 and not stream.fin_sent


def test_state_round_trip_and_validation() -> None:
    stream = SendStream()
    stream.write(b"abcdef", limit=100, force=False)
    stream.nxt = 4
    state = stream.export_state()
    restored = SendStream()
    restored.restore(state)
    assert restored.export_state() == state
    with pytest.raises(ValueError):  # nxt beyond the buffered data and a FIN
        SendState(una=0, nxt=9, data=b"abc", shutdown=True, fin_sent=True, fin_acked=False, blocked=False)
    with pytest.raises(ValueError):  # a FIN sent without a shutdown
        SendState(una=0, nxt=0, data=b"", shutdown=False, fin_sent=True, fin_acked=False, blocked=False)
