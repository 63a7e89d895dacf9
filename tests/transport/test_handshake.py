"""The opening handshake's extras (docs/protocol.md §4.2.3, §4.2.7 - §4.2.9, §4.3): data on SYN,
the anti-amplification budget, bounded SYN-ACK retransmissions, RETRY, NOT_HERE, verified
signals."""

from __future__ import annotations

import itertools

import pytest

from scaffold.errors import BrokenPathError, ObjectNotFound
from scaffold.transport import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    StreamConnection,
    StreamEvent,
    StreamOptions,
    StreamState,
)
from scaffold.wire import stream as wire
from scaffold.wire.stream import StreamSegment, StreamType

NONCE = 0x0DA7_A0F5_0000_0001
REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"


def send(sender: StreamConnection, receiver: StreamConnection | None, now: float) -> list[StreamSegment]:
    """Everything ``sender`` has to send now, delivered to ``receiver`` (None: lost)."""
    out = sender.segments_to_send(now)
    if receiver is not None:
        for data in out:
            receiver.receive_segment(data, now)
    return [wire.parse(data) for data in out]


def events(conn: StreamConnection) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def state(conn: StreamConnection) -> StreamState:
    """``conn.state`` read through a call, for an assert that more steps follow: mypy would
    hold the attribute at the asserted value across the calls that change it."""
    return conn.state


def open_with(data: bytes, options: StreamOptions | None = None) -> tuple[StreamConnection, StreamConnection]:
    options = StreamOptions() if options is None else options
    client = StreamConnection("client", NONCE, 0.0, options)
    server = StreamConnection("server", NONCE, 0.0, options)
    client.send(data)
    client.connect(0.0)
    return client, server


def test_data_on_syn_reaches_the_server_before_the_handshake_completes() -> None:
    client, server = open_with(REQUEST)
    (syn,) = send(client, server, 0.0)
    assert syn.type is StreamType.SYN and syn.payload == REQUEST
    assert state(server) is StreamState.SYN_RECEIVED
    assert DataReceived(len(REQUEST)) in events(server)
    assert server.read() == REQUEST
    # The server answers at once, before the client's ACK, within its budget.
    server.send(b"HTTP/1.1 200 OK\r\n\r\n")
    # ... and the answer rides in the SYN-ACK: one datagram.
    (syn_ack,) = send(server, client, 0.001)
    assert syn_ack.type is StreamType.SYN_ACK and syn_ack.ack == len(REQUEST)
    assert syn_ack.seq == 0 and syn_ack.payload == b"HTTP/1.1 200 OK\r\n\r\n"
    assert client.state is StreamState.ESTABLISHED and client.read() == b"HTTP/1.1 200 OK\r\n\r\n"
    assert events(client)[:2] == [Connected(), DataReceived(19)]
    # The SYN's bytes are acknowledged: the client never sends them again.
    assert client.outstanding == 0 and client.buffered == 0
    later = send(client, server, 0.002)
    assert all(not s.payload for s in later)
    assert server.state is StreamState.ESTABLISHED


def test_an_answer_larger_than_a_segment_starts_in_the_syn_ack_and_goes_on_as_data() -> None:
    answer = bytes(range(256)) * 10  # 2560 bytes, mss 1200
    client, server = open_with(b"x" * 1200)  # a budget (3x the SYN) for all of it at once
    send(client, server, 0.0)
    server.send(answer)
    first = send(server, client, 0.001)
    assert [s.type for s in first] == [StreamType.SYN_ACK, StreamType.DATA, StreamType.DATA]
    assert [s.seq for s in first] == [0, 1200, 2400] and len(first[0].payload) == 1200
    assert client.read() == answer
    send(client, server, 0.002)  # the ACK: everything arrived, nothing is sent again
    assert server.state is StreamState.ESTABLISHED and server.outstanding == 0


def test_a_lost_syn_ack_with_data_is_retransmitted_bare_and_its_data_follows_the_ack() -> None:
    client, server = open_with(REQUEST)
    send(client, server, 0.0)
    server.send(b"answer")
    (lost,) = send(server, None, 0.001)
    assert lost.type is StreamType.SYN_ACK and lost.payload == b"answer"
    timer = server.get_timer()
    assert timer is not None
    server.handle_timer(timer)  # the handshake's RTO: the SYN-ACK again, bare
    (again,) = send(server, client, timer)
    assert again.type is StreamType.SYN_ACK and again.payload == b""
    assert client.state is StreamState.ESTABLISHED and client.read() == b""
    send(client, server, timer)  # the client's ACK: the server is established
    assert server.state is StreamState.ESTABLISHED and server.outstanding == len(b"answer")
    now = timer
    while not client.readable and now < timer + 10:  # the data's RTO resends it as DATA
        next_timer = server.get_timer()
        assert next_timer is not None
        now = next_timer
        server.handle_timer(now)
        resent = send(server, client, now)
        assert all(s.type is StreamType.DATA for s in resent)
    assert client.read() == b"answer"


def test_a_duplicated_syn_ack_with_data_is_taken_once() -> None:
    client, server = open_with(REQUEST)
    send(client, server, 0.0)
    server.send(b"answer")
    (raw,) = server.segments_to_send(0.001)
    client.receive_segment(raw, 0.001)
    client.receive_segment(raw, 0.002)  # the network delivered it twice
    assert client.read() == b"answer" and client.read() == b""
    assert client.stats.duplicate_segments == 1


def test_an_answer_that_ends_in_its_first_segment_goes_after_a_bare_syn_ack() -> None:
    """The SYN-ACK carries data but not a FIN: a whole answer and its end (``shutdown``
    before the SYN-ACK left) go as a FIN segment after it."""
    client, server = open_with(REQUEST)
    send(client, server, 0.0)
    server.send(b"bye")
    server.shutdown(0.001)
    first = send(server, client, 0.001)
    assert [(s.type, s.payload) for s in first] == [(StreamType.SYN_ACK, b""), (StreamType.FIN, b"bye")]
    assert client.read() == b"bye" and client.state is StreamState.CLOSE_WAIT


def test_a_retransmitted_syn_carries_the_same_bytes_and_is_taken_once() -> None:
    client, server = open_with(REQUEST)
    send(client, None, 0.0)  # lost
    client.handle_timer(1.0)  # the RTO: the SYN again
    (again,) = send(client, server, 1.0)
    assert again.type is StreamType.SYN and again.payload == REQUEST
    send(server, None, 1.0)  # its SYN-ACK is lost too
    client.handle_timer(3.0)
    send(client, server, 3.0)  # a duplicate SYN: the SYN-ACK again, the bytes not twice
    assert server.read() == REQUEST and server.stats.duplicate_segments == 1
    (syn_ack,) = send(server, client, 3.0)
    assert syn_ack.ack == len(REQUEST) and client.state is StreamState.ESTABLISHED


def test_only_one_segment_rides_in_the_syn_and_the_rest_follows_the_handshake() -> None:
    data = bytes(range(256)) * 20  # 5120 bytes, mss 1200
    client, server = open_with(data)
    (syn,) = send(client, server, 0.0)
    assert len(syn.payload) == 1200
    send(server, client, 0.001)
    rest = send(client, server, 0.002)
    assert b"".join(s.payload for s in rest) == data[1200:]
    assert server.read() == data


def test_the_server_answers_an_unproven_source_at_most_three_times_what_it_sent() -> None:
    client, server = open_with(b"x" * 100)
    send(client, server, 0.0)
    server.send(b"y" * 100_000)  # a large answer to a SYN whose source is not proven yet
    first = send(server, None, 0.001)
    syn_bytes = 76 + wire.FIXED_LEN + 100
    sent = sum(76 + wire.FIXED_LEN + len(s.payload) for s in first)
    assert first[0].type is StreamType.SYN_ACK and sent <= 3 * syn_bytes
    # Once the client's ACK proves the address, the window opens.
    client2, server2 = open_with(b"x" * 100)
    send(client2, server2, 0.0)
    server2.send(b"y" * 100_000)
    send(server2, client2, 0.001)
    send(client2, server2, 0.002)  # the ACK
    more = send(server2, None, 0.003)
    assert sum(len(s.payload) for s in more) > 10_000


def test_a_syn_ack_goes_out_at_most_three_times_for_a_syn_nobody_answers() -> None:
    """A SYN from a forged source: its victim gets the SYN-ACK and two retransmissions."""
    client, server = open_with(b"")
    send(client, server, 0.0)
    packets = send(server, None, 0.0)
    now = 0.0
    while server.state is not StreamState.CLOSED and now < 60:
        timer = server.get_timer()
        assert timer is not None
        now = timer
        server.handle_timer(now)
        packets += send(server, None, now)
    assert [s.type for s in packets] == [StreamType.SYN_ACK] * 3
    assert any(
        isinstance(e, ConnectionTerminated) and e.reason == "handshake-timeout" for e in events(server)
    )
    assert now < 10  # 1 + 2 + 4 s of backoff, not 39 s


def test_retry_makes_the_client_send_its_syn_again_with_the_token_and_its_data() -> None:
    client, server = open_with(REQUEST)
    (syn,) = send(client, None, 0.0)
    assert syn.ack == 0  # no token yet
    retry = StreamSegment(StreamType.RETRY, NONCE, ack=0xABCDEF)
    client.receive_segment(wire.encode(retry), 0.001)
    (again,) = send(client, server, 0.001)  # at once, not after the RTO
    assert again.type is StreamType.SYN and again.ack == 0xABCDEF and again.payload == REQUEST
    assert server.read() == REQUEST
    send(server, client, 0.002)
    assert client.state is StreamState.ESTABLISHED
    # A RETRY once established, or with another nonce, is refused.
    client.receive_segment(wire.encode(retry), 0.003)
    client.receive_segment(wire.encode(StreamSegment(StreamType.RETRY, NONCE + 1, ack=5)), 0.003)
    assert client.drops == {"unexpected": 1, "bad-nonce": 1}


NOT_HERE = wire.encode(StreamSegment(StreamType.NOT_HERE, NONCE))


def test_not_here_makes_the_client_send_its_syn_again_soon_with_its_data() -> None:
    client, server = open_with(REQUEST)
    (syn,) = send(client, None, 0.0)  # it reached a host whose listener just closed
    assert len(NOT_HERE) <= len(wire.encode(syn))  # the answer is never the larger
    client.receive_segment(NOT_HERE, 0.001)
    assert client.get_timer() == pytest.approx(0.016)  # in milliseconds, not the 1 s RTO
    client.handle_timer(0.01)
    assert send(client, server, 0.01) == []
    client.handle_timer(0.016)
    (again,) = send(client, server, 0.016)  # re-resolved by the object switches, to a replica
    assert again.type is StreamType.SYN and again.payload == REQUEST and again.ack == 0
    assert server.read() == REQUEST
    send(server, client, 0.017)
    assert client.state is StreamState.ESTABLISHED and Connected() in events(client)
    assert client.drops == {}


def test_not_here_with_another_nonce_in_another_state_or_to_a_server_is_dropped() -> None:
    client, server = open_with(b"")
    send(client, server, 0.0)
    client.receive_segment(wire.encode(StreamSegment(StreamType.NOT_HERE, NONCE + 1)), 0.001)
    assert client.get_timer() == pytest.approx(1.0)  # nothing changed: the RTO runs
    server.receive_segment(NOT_HERE, 0.001)  # a server sent no SYN
    assert server.drops == {"unexpected": 1} and server.state is StreamState.SYN_RECEIVED
    send(server, client, 0.002)
    client.receive_segment(NOT_HERE, 0.003)  # established: too late to mean anything
    assert client.drops == {"bad-nonce": 1, "unexpected": 1}
    assert client.state is StreamState.ESTABLISHED


def test_a_host_that_answers_not_here_forever_gets_a_bounded_number_of_syns() -> None:
    """A few fast retries, then the SYN's usual schedule: the connect fails as it would
    have without any answer, only about half a second later."""
    client, _ = open_with(REQUEST)
    syns: list[float] = []
    now = 0.0
    while client.state is not StreamState.CLOSED and now < 60:
        for segment in send(client, None, now):
            assert segment.type is StreamType.SYN and segment.payload == REQUEST
            syns.append(now)
            client.receive_segment(NOT_HERE, now + 0.001)  # answered at once, every time
        timer = client.get_timer()
        assert timer is not None and timer > now
        now = timer
        client.handle_timer(now)
    fast = [b - a for a, b in itertools.pairwise(syns) if b - a < 0.5]
    assert fast == pytest.approx([0.016, 0.031, 0.061, 0.121, 0.241])
    assert len(syns) == 1 + 5 + 10  # the first, five fast retries, max_retries on the RTO
    assert client.drops == {"not-here-ignored": 11}
    assert ConnectionTerminated("handshake-timeout") in events(client)
    assert isinstance(client.error, BrokenPathError)
    assert 39.0 < now < 40.0  # 39 s without any answer


def established(options: StreamOptions | None = None) -> tuple[StreamConnection, StreamConnection]:
    client, server = open_with(b"", options)
    send(client, server, 0.0)
    send(server, client, 0.001)
    send(client, server, 0.002)
    events(client)
    events(server)
    assert client.state is server.state is StreamState.ESTABLISHED
    return client, server


def test_a_signal_refuted_by_the_peer_leaves_the_stream_alone() -> None:
    client, server = established()
    client.suspect("object-not-found", 1.0)
    (probe,) = send(client, server, 1.0)
    assert probe.type is StreamType.KEEPALIVE  # the probe carries the nonce
    send(server, client, 1.01)  # the peer's ACK: authentic, so the signal was false
    client.handle_timer(2.0)
    assert client.state is StreamState.ESTABLISHED and not events(client)


def test_a_signal_nothing_refutes_ends_the_stream_when_the_verification_expires() -> None:
    client, _ = established(StreamOptions(signal_verify=0.5))
    client.suspect("unreachable", 1.0)
    send(client, None, 1.0)  # the probe is lost: the peer really is unreachable
    assert client.get_timer() == pytest.approx(1.5)
    client.handle_timer(1.49)
    assert state(client) is StreamState.ESTABLISHED
    client.handle_timer(1.5)
    assert client.state is StreamState.CLOSED and isinstance(client.error, BrokenPathError)
    assert ConnectionTerminated("unreachable") in events(client)


def test_object_not_found_while_opening_is_confirmed_by_the_silence_after_a_second_syn() -> None:
    client, _ = open_with(b"")
    send(client, None, 0.0)
    client.suspect("object-not-found", 0.01)
    (again,) = send(client, None, 0.01)  # the SYN again at once: it carries the nonce
    assert again.type is StreamType.SYN
    client.handle_timer(0.26)
    assert isinstance(client.error, ObjectNotFound)
    # ...while a SYN-ACK within the verification window refutes it.
    client, server = open_with(b"")
    send(client, server, 0.0)
    client.suspect("object-not-found", 0.001)
    send(server, client, 0.002)
    client.handle_timer(0.5)
    assert client.state is StreamState.ESTABLISHED and Connected() in events(client)
