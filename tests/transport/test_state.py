"""The state tables (scaffold.transport.state, docs/protocol.md §4.2.3)."""

from __future__ import annotations

import itertools

from scaffold.transport.state import (
    HANDSHAKE,
    HANDSHAKE_SEGMENT,
    HANDSHAKING,
    SENDING,
    SYNCHRONIZED,
    Happening,
    StreamState,
    after_close_step,
)
from scaffold.wire.stream import StreamType

S = StreamState


def test_close_steps_cover_every_combination() -> None:
    expected = {
        (False, False): S.ESTABLISHED,
        (False, True): S.CLOSE_WAIT,
        (True, False): S.FIN_WAIT,
    }
    for shutdown, peer_done, fin_acked in itertools.product((False, True), repeat=3):
        state = after_close_step(shutdown, peer_done, fin_acked)
        if shutdown and peer_done:
            assert state is (S.TIME_WAIT if fin_acked else S.CLOSING)
        else:
            assert state is expected[shutdown, peer_done]
        assert state in SYNCHRONIZED


def test_handshake_moves() -> None:
    assert HANDSHAKE[S.IDLE, Happening.CONNECT] is S.SYN_SENT
    assert HANDSHAKE[S.IDLE, Happening.SYN] is S.SYN_RECEIVED
    assert HANDSHAKE[S.IDLE, Happening.RESUME] is S.RESUMING
    assert {HANDSHAKE[s, h] for s, h in HANDSHAKE if s is not S.IDLE} == {S.ESTABLISHED}
    # every handshaking state has exactly one way out, and a segment to resend meanwhile
    assert {s for s, _ in HANDSHAKE if s is not S.IDLE} == HANDSHAKING == set(HANDSHAKE_SEGMENT)
    assert HANDSHAKE_SEGMENT == {
        S.SYN_SENT: StreamType.SYN,
        S.SYN_RECEIVED: StreamType.SYN_ACK,
        S.RESUMING: StreamType.RESUME,
    }


def test_state_sets() -> None:
    assert SYNCHRONIZED - {S.TIME_WAIT} == SENDING
    assert not SYNCHRONIZED & HANDSHAKING
    assert S.IDLE not in SYNCHRONIZED | HANDSHAKING and S.CLOSED not in SYNCHRONIZED | HANDSHAKING
