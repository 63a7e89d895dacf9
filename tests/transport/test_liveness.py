"""Liveness (scaffold.transport.liveness): idle timeout, keepalive and the stall probe."""

from __future__ import annotations

from scaffold.transport.liveness import MAX_STALL_DOUBLINGS, Liveness
from scaffold.transport.options import StreamOptions


def test_keepalive_after_silence_and_idle_timeout() -> None:
    live = Liveness(StreamOptions(keepalive=15.0, idle_timeout=60.0), now=100.0)
    assert live.idle_deadline() == 160.0
    assert live.keepalive_deadline(peer_fin_known=False) == 115.0
    live.on_keepalive(115.0, peer_fin_known=False)
    assert live.keepalive_deadline(peer_fin_known=False) == 130.0
    assert Liveness(StreamOptions(keepalive=None), now=0.0).keepalive_deadline(False) is None


def test_stall_probe_doubles_while_the_sender_is_silent() -> None:
    live = Liveness(StreamOptions(keepalive=15.0, stall_probe=0.25), now=0.0)
    live.on_payload()
    deadlines = []
    for _ in range(8):
        at = live.keepalive_deadline(peer_fin_known=False)
        assert at is not None
        deadlines.append(at)
        live.on_keepalive(at, peer_fin_known=False)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *deadlines], deadlines, strict=False)]
    assert gaps == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]  # up to keepalive
    assert live.stall_probes <= MAX_STALL_DOUBLINGS
    live.on_payload()  # data again: start over
    assert live.keepalive_deadline(peer_fin_known=False) == deadlines[-1] + 0.25
    assert live.keepalive_deadline(peer_fin_known=True) == deadlines[-1] + 15.0  # the peer is done


def test_an_answered_stall_probe_does_not_stop_the_probing() -> None:
    # The peer may die while its application is still quiet (serving a request): the next
    # probe, not a keepalive 15 s later, is what reaches a survivor (§5.1).
    live = Liveness(StreamOptions(keepalive=15.0, stall_probe=0.25), now=0.0)
    live.on_payload()
    assert live.keepalive_deadline(peer_fin_known=False) == 0.25
    live.on_keepalive(0.25, peer_fin_known=False)
    live.last_rx = 0.26  # its answer: the peer was alive then
    assert live.keepalive_deadline(peer_fin_known=False) == 0.26 + 0.5
