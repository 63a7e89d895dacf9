"""Connection states and the handshake / close state machine, as tables (docs/protocol.md §4.2.3).

The connection looks its next state up here; it never spells a transition out itself:

* :data:`HANDSHAKE` -- (state, what happened) -> next state, for opening and RESUME;
* :data:`HANDSHAKE_SEGMENT` -- the segment a handshaking state (re)sends on its RTO;
* :func:`after_close_step` -- the state of a synchronized connection from its three
  close facts (we shut down, the peer's FIN arrived, our FIN was acknowledged).
"""

from __future__ import annotations

import enum

from ..wire.stream import StreamType

__all__ = [
    "HANDSHAKE",
    "HANDSHAKE_SEGMENT",
    "HANDSHAKING",
    "PATH_FAILURES",
    "SENDING",
    "SYNCHRONIZED",
    "Happening",
    "StreamState",
    "TerminationReason",
    "after_close_step",
]


class StreamState(enum.Enum):
    """Connection states (docs/protocol.md §4.2.3)."""

    # Members are singletons compared by identity: hash them by identity too. (Enum hashes
    # by name, a Python call on every ``state in SENDING`` of the per-packet path.)
    __hash__ = object.__hash__

    #: created, nothing sent or received yet (client before ``connect``, server before SYN).
    IDLE = "idle"
    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    #: a new host sent RESUME and waits for the peer's offsets.
    RESUMING = "resuming"
    ESTABLISHED = "established"
    #: we sent (or will send) FIN; the peer may still send.
    FIN_WAIT = "fin-wait"
    #: the peer's stream ended; we may still send.
    CLOSE_WAIT = "close-wait"
    #: both ends shut down; our FIN is not acknowledged yet.
    CLOSING = "closing"
    #: done; lingers to re-acknowledge a retransmitted FIN of the peer.
    TIME_WAIT = "time-wait"
    CLOSED = "closed"

    # Members are singletons compared by identity: hash them so too, in C. (Enum hashes the
    # name in Python, and every segment asks ``state in SYNCHRONIZED``.)
    __hash__ = object.__hash__


class TerminationReason:
    """The ``reason`` tokens of ``ConnectionTerminated``."""

    #: both directions were shut down and acknowledged.
    CLOSED = "closed"
    #: we called ``StreamConnection.abort``.
    ABORTED = "aborted"
    #: the peer sent RST.
    RESET = "reset"
    #: ``max_retries`` consecutive retransmission (or persist) timeouts without an answer.
    RETRY_LIMIT = "retry-limit"
    #: SYN, SYN-ACK or RESUME unanswered after ``max_retries`` retransmissions.
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    #: nothing received for ``idle_timeout`` seconds.
    IDLE_TIMEOUT = "idle-timeout"
    #: an OBJECT_NOT_FOUND signal that no authentic segment refuted in time (§4.3).
    OBJECT_NOT_FOUND = "object-not-found"
    #: an UNREACHABLE signal that no authentic segment refuted in time (§4.3).
    UNREACHABLE = "unreachable"


#: Reasons that mean the path or the peer failed; they set ``StreamConnection.error``.
PATH_FAILURES = frozenset(
    {
        TerminationReason.RESET,
        TerminationReason.RETRY_LIMIT,
        TerminationReason.HANDSHAKE_TIMEOUT,
        TerminationReason.IDLE_TIMEOUT,
        TerminationReason.OBJECT_NOT_FOUND,
        TerminationReason.UNREACHABLE,
    }
)

#: Both sequence spaces are known: data, ACKs and the close apply.
SYNCHRONIZED = frozenset(
    {
        StreamState.ESTABLISHED,
        StreamState.FIN_WAIT,
        StreamState.CLOSE_WAIT,
        StreamState.CLOSING,
        StreamState.TIME_WAIT,
    }
)
#: Synchronized and still sending (TIME_WAIT only re-acknowledges).
SENDING = SYNCHRONIZED - {StreamState.TIME_WAIT}
HANDSHAKING = frozenset({StreamState.SYN_SENT, StreamState.SYN_RECEIVED, StreamState.RESUMING})


class Happening(enum.Enum):
    """What moves a connection through its handshake."""

    CONNECT = "connect"  # the application opened (client)
    SYN = "syn"  # a SYN arrived (server)
    SYN_ACK = "syn-ack"  # the server accepted (client)
    ACK = "ack"  # the client's ACK or first data (server)
    RESUME = "resume"  # created for a flow this host does not know (§4.2.5)
    RESUME_ACK = "resume-ack"  # the peer told the offsets (§4.2.5)

    # Hashed by identity, in C, as ``StreamState``: every ``HANDSHAKE`` lookup hashes one.
    __hash__ = object.__hash__


HANDSHAKE: dict[tuple[StreamState, Happening], StreamState] = {
    (StreamState.IDLE, Happening.CONNECT): StreamState.SYN_SENT,
    (StreamState.IDLE, Happening.SYN): StreamState.SYN_RECEIVED,
    (StreamState.IDLE, Happening.RESUME): StreamState.RESUMING,
    (StreamState.SYN_SENT, Happening.SYN_ACK): StreamState.ESTABLISHED,
    (StreamState.SYN_RECEIVED, Happening.ACK): StreamState.ESTABLISHED,
    (StreamState.RESUMING, Happening.RESUME_ACK): StreamState.ESTABLISHED,
}

HANDSHAKE_SEGMENT: dict[StreamState, StreamType] = {
    StreamState.SYN_SENT: StreamType.SYN,
    StreamState.SYN_RECEIVED: StreamType.SYN_ACK,
    StreamState.RESUMING: StreamType.RESUME,
}

#: (we shut down, the peer's FIN arrived, our FIN was acknowledged) -> state. TIME_WAIT is
#: where the side that finished first lingers; the side that finished last closes at once.
_CLOSE_STEPS: dict[tuple[bool, bool, bool], StreamState] = {
    (False, False, False): StreamState.ESTABLISHED,
    (False, False, True): StreamState.ESTABLISHED,
    (False, True, False): StreamState.CLOSE_WAIT,
    (False, True, True): StreamState.CLOSE_WAIT,
    (True, False, False): StreamState.FIN_WAIT,
    (True, False, True): StreamState.FIN_WAIT,
    (True, True, False): StreamState.CLOSING,
    (True, True, True): StreamState.TIME_WAIT,
}


def after_close_step(shutdown: bool, peer_done: bool, fin_acked: bool) -> StreamState:
    """The state of a synchronized connection from its close facts."""
    return _CLOSE_STEPS[shutdown, peer_done, fin_acked]
