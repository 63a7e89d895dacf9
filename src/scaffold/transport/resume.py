"""RESUME: re-synchronizing a flow with a host that lost it (docs/protocol.md §4.2.5).

When the network re-delivers an established flow to a host that has no state for it
(failover to another replica, §5.1), that host's stack creates
``StreamConnection.resume(nonce, now)``, which sends RESUME (its window; retransmitted on
the RTO like a SYN, ``handshake-timeout`` after ``max_retries``). The peer that still has
the flow answers RESUME-ACK with ``seq`` = its ``snd_una`` (the first byte the new host
should expect: everything the old host had not acknowledged is resent) and ``ack`` = its
``rcv_nxt`` (the first byte the new host should send), plus FIN_RECEIVED / FIN_ACKED when
a direction had already ended. The answering side rewinds its sender to ``snd_una``, drops
out-of-order data and the scoreboard and restarts congestion control (:func:`rewind`); the
new host adopts the offsets (:func:`adopt`). Both emit ``Resumed``; a stateless or content
service continues from ``send_offset``, anything else aborts and the peer gets a clean
``Reset`` -- never silently corrupted data.
"""

from __future__ import annotations

from ..wire.stream import StreamFlags, StreamSegment
from .events import Resumed
from .receiver import Receiver
from .sender import Sender

__all__ = ["adopt", "answer_flags", "rewind"]


def rewind(sender: Sender, receiver: Receiver, segment: StreamSegment) -> Resumed:
    """We still have the flow and its peer's new host sent RESUME: resend from ``snd_una``
    on a new path, drop what the old host sent beyond ``rcv_nxt`` (the new host resends it)."""
    sender.rewind(segment.window)
    receiver.stream.rewind()
    receiver.acks.ts_recent = segment.ts_value
    return _resumed(sender, receiver)


def answer_flags(sender: Sender, receiver: Receiver) -> int:
    """The flags of our RESUME-ACK: which directions had already ended."""
    flags = StreamFlags.ACK
    if receiver.stream.fin_consumed:
        flags |= StreamFlags.FIN_RECEIVED
    if sender.stream.fin_acked:
        flags |= StreamFlags.FIN_ACKED
    return flags


def adopt(sender: Sender, receiver: Receiver, segment: StreamSegment) -> tuple[Resumed, bool]:
    """We are the new host and RESUME-ACK told the offsets. Returns the event, and whether
    the peer's stream had ended (its FIN at ``seq - 1`` acknowledged by the old host)."""
    sender.resume_at(segment.ack, segment.window, bool(segment.flags & StreamFlags.FIN_RECEIVED))
    peer_ended = bool(segment.flags & StreamFlags.FIN_ACKED)
    receiver.stream.resume_at(segment.seq, peer_ended)
    return _resumed(sender, receiver), peer_ended


def _resumed(sender: Sender, receiver: Receiver) -> Resumed:
    stream = sender.stream
    return Resumed(min(stream.una, stream.data_end), receiver.stream.stream_rcv_nxt)
