"""``StreamTransport``: an ``asyncio.Transport`` over one SCAFFOLD stream flow.

Any asyncio protocol runs on it unchanged -- asyncio's own ``StreamReaderProtocol`` (so
``StreamReader`` / ``StreamWriter``), aiohttp's, anyio's -- because it keeps asyncio's
contract (docs/architecture.md §7):

* protocol callbacks never run inside the host's event dispatch or inside a transport call:
  an event of the flow only schedules ``_process`` (the runtime's ``soon``: in the flush,
  once its events are dispatched and before its datagrams leave, when the runtime flushed
  for a datagram or a timer, so what arrived reaches the protocol before the loop's other
  waiting callbacks and an answer leaves with its ACK; else with ``call_soon``), which calls
  ``connection_made``, ``data_received``, ``eof_received``, ``resume_writing`` and
  ``connection_lost`` in that order, from what the flow's state is then (level-triggered); a
  server's new stream runs ``_process`` in the callback that made its protocol (``start``);
* reading: received bytes stay in the stream transport's receive buffer until delivered,
  so ``pause_reading`` closes the peer's window (flow control end to end, docs/protocol.md
  §4.2.4); ``eof_received`` returning false closes the transport;
* writing: ``write`` hands every byte to the stream transport, whose send buffer plays the
  kernel's socket buffer. ``get_write_buffer_size`` is what is queued beyond it; above the
  high-water mark (asyncio's default 64 KiB) the protocol is told ``pause_writing``, and
  ``resume_writing`` once the stream transport reports free space (``SendSpaceAvailable``)
  and the size is at or below the low-water mark;
* ``close`` sends FIN after the queued bytes and stops reading; ``abort`` resets the flow
  (RST). Either calls ``connection_lost(None)`` soon, as asyncio does once its buffer is
  handed to the kernel, while the host stack finishes the flow; a reset by the peer or a
  broken path calls ``connection_lost(BrokenPathError)``;
* ``get_extra_info``: asyncio's keys (``peername``, ``sockname``, ``socket`` -- a
  :class:`FlowSocket` -- and ``None`` for the TLS keys) and SCAFFOLD's own (``flow``,
  ``object``, ``socket_id``, ``peer_host``, ``served_by``, ``resume``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BrokenPathError, ObjectNotFound, PathError
from ..transport import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Reset,
    Resumed,
    StreamConnection,
    StreamEvent,
    TerminationReason,
)

if TYPE_CHECKING:
    from .host import Host

__all__ = ["DEFAULT_HIGH_WATER", "FlowSocket", "StreamTransport"]

log = logging.getLogger("scaffold.transport")

#: asyncio's default write-buffer limits (``set_write_buffer_limits``)
DEFAULT_HIGH_WATER = 64 * 1024
#: bytes handed to ``data_received`` per call (asyncio's selector transports read 256 KiB)
READ_CHUNK = 256 * 1024
#: as asyncio: warn about writes to a closed transport after this many
_LOG_LOST_WRITES = 5

Address = tuple[str, int]


class FlowSocket:
    """What ``get_extra_info("socket")`` gives: the calls libraries make on a kernel socket.

    A SCAFFOLD flow has no file descriptor (``fileno()`` is -1). ``setsockopt`` accepts the
    usual options (``TCP_NODELAY``, ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``...) and records them
    for ``getsockopt``; they change nothing, since the stream transport never delays small
    writes and has its own keepalive (docs/protocol.md §4.2.4). Addresses are the
    transport's ``sockname`` / ``peername``; ``family`` is ``AF_INET``, as they are
    ``(str, int)`` pairs.
    """

    __slots__ = ("_options", "_peername", "_sockname")

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, sockname: Address, peername: Address | None) -> None:
        self._sockname = sockname
        self._peername = peername
        self._options: dict[tuple[int, int], int | bytes] = {}

    def __repr__(self) -> str:
        return f"<scaffold.FlowSocket laddr={self._sockname} raddr={self._peername}>"

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> Address:
        return self._sockname

    def getpeername(self) -> Address:
        """The peer's address.

        Raises:
            OSError: ``ENOTCONN`` on a listening socket.
        """
        if self._peername is None:
            raise OSError(errno.ENOTCONN, "not connected (a server's listening socket)")
        return self._peername

    def setsockopt(
        self, level: int, option: int, value: int | bytes | None, optlen: int | None = None
    ) -> None:
        self._options[(level, option)] = value if value is not None else bytes(optlen or 0)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int | bytes:
        value = self._options.get((level, option), 0)
        if buflen is None:
            return value if isinstance(value, int) else int.from_bytes(value[:4] or b"\0", "little")
        return value if isinstance(value, bytes) else value.to_bytes(4, "little")[:buflen]

    def gettimeout(self) -> float:
        return 0.0


class StreamTransport(asyncio.Transport):
    """An asyncio transport over the stream flow ``socket_id`` of ``host``."""

    __slots__ = (
        "_closing",
        "_eof_delivered",
        "_eof_written",
        "_error",
        "_flow",
        "_high",
        "_host",
        "_loop",
        "_lost",
        "_lost_writes",
        "_low",
        "_made",
        "_migrated",
        "_peer_eof",
        "_peername",
        "_protocol",
        "_reading_paused",
        "_scheduled",
        "_socket",
        "_sockname",
        "_writing_paused",
        "connected",
        "on_lost",
        "resume",
        "socket_id",
        "terminated",
    )

    def __init__(
        self, host: Host, socket_id: int, *, connected: bool, sockname: Address, peername: Address
    ) -> None:
        super().__init__()
        self._host = host
        self._loop = host.loop
        self.socket_id = socket_id
        self._flow = host.stack.flows[socket_id]
        self._protocol: asyncio.BaseProtocol | None = None
        self._sockname = sockname
        self._peername = peername
        self._socket: FlowSocket | None = None
        #: the handshake completed (for a takeover: RESUME answered)
        self.connected = connected
        #: the host stack ended the flow (both FINs, a reset, a broken path)
        self.terminated = False
        #: (send offset, receive offset) when this replica took the flow over mid-stream
        self.resume: tuple[int, int] | None = None
        #: called once, after ``connection_lost`` (a ``Server`` forgets the connection)
        self.on_lost: Callable[[StreamTransport], None] | None = None
        self._error: PathError | None = None
        self._peer_eof = False
        self._migrated = False
        self._closing = False
        self._eof_written = False
        self._made = False
        self._eof_delivered = False
        self._lost = False
        self._scheduled = False
        self._reading_paused = False
        self._writing_paused = False
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._lost_writes = 0

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return (
            f"<scaffold.StreamTransport flow={self._flow.flow:016x} "
            f"object={self._host.object_text(self._flow.obj)[:16]}... {state}>"
        )

    def describe(self) -> str:
        return f"stream {self._flow.flow:016x} on {self._host.name}"

    @property
    def error(self) -> PathError | None:
        """Why the flow failed (a reset, a broken path, no replica left), if it did."""
        return self._error

    @property
    def migrated(self) -> bool:
        """The flow migrated to another host (this end let go without closing it)."""
        return self._migrated

    # -- from the host -----------------------------------------------------------------------

    def on_event(self, event: StreamEvent) -> None:
        """Record an event of the flow's stream transport; the protocol hears of it soon."""
        if isinstance(event, DataReceived):
            pass  # the common one, first: nothing to record (``_deliver`` reads the bytes)
        elif isinstance(event, Connected):
            self.connected = True
        elif isinstance(event, Resumed):
            self.connected = True
            self.resume = (event.send_offset, event.receive_offset)
        elif isinstance(event, EndOfStream):
            self._peer_eof = True
        elif isinstance(event, Reset):
            self._error = BrokenPathError(f"{self.describe()}: reset by the peer")
        elif isinstance(event, ConnectionTerminated):
            self.terminated = True
            if (
                event.reason not in (TerminationReason.CLOSED, TerminationReason.ABORTED)
                and self._error is None
            ):
                # The transport's own error tells ObjectNotFound (nobody serves the object,
                # verified, docs/protocol.md §4.3) from a broken path.
                stream = self._stream
                error = stream.error if stream is not None else None
                if isinstance(error, ObjectNotFound) and not self.connected:
                    self._error = ObjectNotFound(f"{self.describe()}: no replica of the object is registered")
                elif event.reason == TerminationReason.OBJECT_NOT_FOUND:
                    gone = "its server is gone and no replica is left"
                    self._error = BrokenPathError(f"{self.describe()}: {gone}")
                else:
                    self._error = BrokenPathError(f"{self.describe()}: {event.reason}")
        self._schedule()

    def fail(self, error: PathError) -> None:
        """The flow failed outside its transport (no replica left, no route)."""
        if self._error is None:
            self._error = error
        self.terminated = True
        self._schedule()

    def detach(self) -> None:
        """The flow migrated to another host: this end lets go without closing the flow."""
        self._migrated = True
        self.terminated = True
        self._schedule()

    def start(self, protocol: asyncio.BaseProtocol) -> None:
        """Serve the flow with ``protocol``: ``connection_made`` (and what already arrived)
        now if the flow is connected, else once it is. Called outside the host's flush
        (``Server`` makes protocols in a callback of its own), so the callbacks may run in
        this call rather than a turn of the loop later."""
        self._protocol = protocol
        self._process()

    def start_now(self, protocol: asyncio.BaseProtocol) -> None:
        """As :meth:`start`, calling ``connection_made`` at once (``create_connection``
        returns after it, as asyncio's does)."""
        self._protocol = protocol
        self._made = True
        if self._call(protocol.connection_made, self):
            self._schedule()

    # -- the stream transport ----------------------------------------------------------------

    def _live(self) -> bool:
        """The host stack still runs this flow here (not ended, not migrated away)."""
        return not self.terminated and self._host.stack.flows.get(self.socket_id) is self._flow

    @property
    def _stream(self) -> StreamConnection | None:
        return self._flow.transport

    def _readable(self) -> int:
        stream = self._flow.transport
        return stream.readable if stream is not None else 0

    def _take(self, n: int) -> bytes:
        stream = self._flow.transport
        if stream is None or stream.readable == 0:
            return b""
        # ``not self._live()`` inline (per delivery)
        if self.terminated or self._host.stack.flows.get(self.socket_id) is not self._flow:
            # The flow ended (both sides closed) with bytes still unread: they are ours.
            return stream.read(n)
        data = self._host.stack.stream_read(self.socket_id, n, self._loop.time())
        self._host.kick()  # reading may have opened the peer's window: a window update goes
        return data

    # -- delivering to the protocol ----------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._protocol is not None and not self._lost:
            self._scheduled = True
            self._host.node.soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        if not self._made:
            if not self.connected:
                if self.terminated:
                    self._connection_lost(self._error)
                return
            self._made = True
            if not self._call(protocol.connection_made, self):
                return
        if self._error is not None or self._migrated:
            self._connection_lost(self._error)
            return
        if not self._closing and not self._deliver(protocol):
            return
        if self._writing_paused and self.get_write_buffer_size() <= self._low:
            self._writing_paused = False
            if not self._call(protocol.resume_writing):
                return
        if self._closing or (self.terminated and self._eof_delivered):
            self._connection_lost(None)

    def _deliver(self, protocol: asyncio.BaseProtocol) -> bool:
        """Received bytes, then EOF, while reading is not paused. False if the protocol
        failed (the transport is then aborted)."""
        if not isinstance(protocol, asyncio.Protocol | asyncio.BufferedProtocol):
            self._fatal_error(TypeError(f"{protocol!r} is not a stream protocol"), "wrong protocol")
            return False
        more = True
        while more and not self._reading_paused and not self._closing:
            data = self._take(READ_CHUNK)
            if not data:
                break
            # A short read took every readable byte: no second ``_take`` to learn it (bytes
            # that arrive during the callback schedule another ``_process``).
            more = len(data) == READ_CHUNK
            try:  # ``_call`` inline (per delivery)
                if isinstance(protocol, asyncio.BufferedProtocol):
                    self._fill(protocol, data)
                else:
                    protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                buffered = isinstance(protocol, asyncio.BufferedProtocol)
                self._fatal_error(
                    exc, f"protocol.{'buffer_updated' if buffered else 'data_received'}() call failed"
                )
                return False
        if (
            (self._peer_eof or self.terminated)
            and not self._eof_delivered
            and not self._reading_paused
            and not self._closing
            and not self._readable()
        ):
            self._eof_delivered = True
            try:
                keep_open = protocol.eof_received()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "protocol.eof_received() call failed")
                return False
            if not keep_open:
                self.close()
        return True

    @staticmethod
    def _fill(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
        """Hand ``data`` to a buffered protocol, in as many buffers as it offers."""
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
            n = min(len(buffer), len(view))
            if n == 0:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]

    def _call(self, callback: Callable[..., object], *args: object) -> bool:
        """Run a protocol callback; an exception aborts the transport, as in asyncio."""
        try:
            callback(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, f"protocol.{getattr(callback, '__name__', 'callback')}() call failed")
            return False
        return True

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        self._loop.call_exception_handler(
            {
                "message": f"Fatal error: {message}.",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            }
        )
        self._reset()
        self._connection_lost(exc if isinstance(exc, Exception) else None)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        protocol, self._protocol = self._protocol, None
        try:
            if protocol is not None and self._made:
                protocol.connection_lost(exc)
        finally:
            if self.on_lost is not None:
                self.on_lost(self)

    def _elsewhere(self, call: Callable[[], None]) -> bool:
        """Called off the host's loop (asyncio's ``StreamWriter.__del__`` closes from
        whichever thread collected it): hand ``call`` to the loop instead of touching the
        host stack from this thread. True if it was handed (or the loop is gone)."""
        try:
            if asyncio.get_running_loop() is self._loop:
                return False
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):  # the loop closed: the host is gone anyway
            self._loop.call_soon_threadsafe(call)
        return True

    def _reset(self) -> None:
        self._closing = True
        if self._live():
            self._host.stack.stream_abort(self.socket_id, self._host.now())
            self._host.kick()

    # -- asyncio.BaseTransport ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's keys: ``peername`` and ``sockname`` (``(name, port)`` pairs: a client's
        peer is what it dialled, a server's the client host and its Socket ID; a client's
        own is its host and Socket ID, a server's the object and port it serves), ``socket``
        (a :class:`FlowSocket`), and None for ``sslcontext``, ``ssl_object``, ``peercert``,
        ``cipher``, ``compression``.

        SCAFFOLD's: ``flow`` (Flow ID as hex), ``object`` (Object ID text), ``socket_id``
        (the local Socket ID), ``host`` and ``dc`` (this host and its datacenter),
        ``peer_host`` (the serving host, or a server's client host), ``served_by`` (every
        replica that answered this flow), ``resume`` (``(send_offset, receive_offset)`` when
        this replica took the flow over mid-stream, else None), ``packets`` (sent, received),
        ``state`` (the stream transport's ``StreamState`` value) and ``stats`` (its
        ``StreamStats``), both None for a datagram flow.
        """
        flow, host = self._flow, self._host
        if name == "peername":
            return self._peername
        if name == "sockname":
            return self._sockname
        if name == "socket":
            if self._socket is None:
                self._socket = FlowSocket(self._sockname, self._peername)
            return self._socket
        if name == "flow":
            return f"{flow.flow:016x}"
        if name == "object":
            return host.object_text(flow.obj)
        if name == "socket_id":
            return flow.socket_id
        if name == "host":
            return host.name
        if name == "dc":
            return host.dc
        if name == "peer_host":
            return host.host_name(flow.peer_host)
        if name == "served_by":
            return [host.host_name(h) for h in flow.served_by]
        if name == "resume":
            return self.resume
        if name == "packets":
            return (flow.packets_sent, flow.packets_received)
        if name == "state":
            return None if flow.transport is None else flow.transport.state.value
        if name == "stats":
            return None if flow.transport is None else flow.transport.stats
        return default

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """FIN after the bytes written so far; stop reading. ``connection_lost(None)`` follows
        soon; the host stack finishes the flow (retransmissions, the peer's FIN) meanwhile."""
        if self._closing or self._elsewhere(self.close):
            return
        self._closing = True
        if self._live():
            self._host.stack.stream_close(self.socket_id, self._host.now())
            self._host.kick()
        self._schedule()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]  # None once lost, as asyncio's

    # -- asyncio.ReadTransport ---------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self.is_closing()

    def pause_reading(self) -> None:
        """Stop ``data_received``: bytes wait in the receive buffer and the peer's window
        closes."""
        if not self._closing:
            self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._closing and self._reading_paused:
            self._reading_paused = False
            self._schedule()

    # -- asyncio.WriteTransport --------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (all of it); ``pause_writing`` if the buffer went over its limit.

        After ``close`` or a failure the bytes are dropped, as asyncio does.

        Raises:
            TypeError: ``data`` is not bytes-like.
            RuntimeError: after ``write_eof()``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        # ``_live`` inline (per write)
        if self._closing or self.terminated or self._host.stack.flows.get(self.socket_id) is not self._flow:
            self._lost_writes += 1
            if self._lost_writes >= _LOG_LOST_WRITES:
                log.warning(
                    "%s: write() on a closed or failed stream; the bytes are dropped", self.describe()
                )
            return
        self._host.stack.stream_send(
            self.socket_id, data if isinstance(data, bytes) else bytes(data), self._loop.time(), force=True
        )
        self._host.kick()
        if not self._writing_paused:
            # The flow is live (checked above; a send ends none): the pause check without
            # get_write_buffer_size's lookups, once per write.
            stream = self._flow.transport
            if stream is not None and stream.send_backlog > self._high:
                self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """Half-close: the peer reads EOF after the bytes written so far; reading goes on."""
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if self._live():
            self._host.stack.stream_shutdown(self.socket_id, self._host.now())
            self._host.kick()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Reset the flow (RST): unsent bytes are dropped and the peer reads a
        ``BrokenPathError``, not a clean EOF. ``connection_lost(None)`` follows soon."""
        if self._lost or self._elsewhere(self.abort):
            return
        self._reset()
        self._schedule()

    def get_write_buffer_size(self) -> int:
        """Bytes queued beyond the stream transport's send buffer (the kernel socket buffer's
        counterpart): what asyncio would hold in user space."""
        stream = self._stream
        if stream is None or not self._live():
            return 0
        return max(0, stream.buffered - stream.options.send_buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """asyncio's rules: ``high`` defaults to 64 KiB (or 4 * ``low``), ``low`` to high / 4.

        Raises:
            ValueError: not ``high >= low >= 0``.
        """
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()
        self._schedule()

    def _maybe_pause_protocol(self) -> None:
        if self._writing_paused or self.get_write_buffer_size() <= self._high:
            return
        self._writing_paused = True
        protocol = self._protocol
        if protocol is not None:
            try:
                protocol.pause_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio: reported, the transport goes on
                self._loop.call_exception_handler(
                    {"message": "protocol.pause_writing() failed", "exception": exc, "transport": self}
                )
