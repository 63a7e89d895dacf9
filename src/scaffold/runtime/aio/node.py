"""``NodeRuntime``: one core (switch or host) with a UDP socket and a control connection.

Its reader drains up to ``BATCH`` reads per wake-up straight into the core, then flushes:
events, datagrams, control records, and one timer handle re-armed from ``core.get_timer()``
-- the same for every kind of core (docs/architecture.md §3.2). A read may be a train of
datagrams (GRO, ``udp.py``): a flow switch routes it whole (``route_train``) when every
datagram in it goes to one next hop, any other core gets its datagrams one by one. What the
core sends leaves in trains too: consecutive datagrams to one neighbour, one system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ...core.engine import NodeEngine
from ...core.events import HostRelocated, NeighboursLearned, Packet, TablesApplied, Train
from ...core.metrics import Sample
from ...errors import MalformedPacket, ScaffoldError
from ...wire import control
from ..metrics import runtime_metrics
from ..tls import Credentials, client_context, peer_identity
from .links import Address, AddressBook, EmuLink, valid_address
from .udp import MAX_DATAGRAM, SOCKET_BUFFER, UdpEndpoint, mtu_towards

__all__ = ["BATCH", "KEEPALIVE", "SOCKET_BUFFER", "ControllerRefused", "EventHandler", "NodeRuntime"]

#: reads per wake-up (each a datagram or a train of up to 64)
BATCH = 64
#: bytes a core takes datagram by datagram per wake-up: with 64 KiB segments, 64 reads
#: would keep the event loop on one socket long enough to starve the control connections
#: (heartbeats) and timers of every other node in the process; a flow switch routing trains
#: whole is not held to it (forwarding a train costs the same whatever its size)
READ_BUDGET = 512 * 1024
#: reads (datagrams or trains) taken from the socket before a timer is handled
TIMER_DRAIN = 4 * BATCH
#: for a core whose timer judges silence (a flow switch's liveness check), rounds of
#: ``TIMER_DRAIN`` reads until the socket is empty: more than its buffer holds
SILENCE_DRAIN_ROUNDS = 16
#: how long connecting to one controller replica may take before the next is tried (s)
CONNECT_TIMEOUT = 1.0
#: IPv4 + UDP headers: an interface's MTU less this is the largest datagram it sends
_IP_UDP = 28
#: the core events the runtime itself acts on (the rest only go to ``on_event``)
_NODE_EVENTS = (NeighboursLearned, HostRelocated, TablesApplied)
#: a node (switch or host) says something at least this often, so the controller's idle
#: timeout (30 s) never cuts a quiet but live control connection (docs/protocol.md §6.6)
KEEPALIVE = 10.0
HANDSHAKE_TIMEOUT = 5.0


class ControllerRefused(ScaffoldError):
    """The controller refused this node's ``Hello`` (the reason names why), or the peer
    at the controller's address is not the network's controller."""


CoreT_co = TypeVar("CoreT_co", bound=NodeEngine, covariant=True)
#: an application: called with the core, each event it emits, and the time
EventHandler = Callable[[CoreT_co, Any, float], None]


class NodeRuntime(Generic[CoreT_co]):
    """Drives one core (switch or host) with a UDP socket and a control connection."""

    def __init__(
        self,
        core: CoreT_co,
        book: AddressBook,
        links: dict[tuple[str, str], EmuLink],
        controller: Address | str | Sequence[Address],
        *,
        bind: Address = ("127.0.0.1", 0),
        rng: random.Random | None = None,
        advertise: str | None = None,
        offload: bool = True,
        reuse_port: bool = False,
        data_plane: bool = True,
        credentials: Credentials | None = None,
    ) -> None:
        """``credentials``: this node's certificate, for mutual TLS to the controller
        (None: plain TCP, for a controller without credentials)."""
        self.core = core
        #: a flow switch's whole-train router, looked up once (not per wake-up)
        self._route_train = getattr(core, "route_train", None)
        self.credentials = credentials
        #: why the controller refused this node (then it stops reconnecting)
        self.refused: str | None = None
        self.name = core.name
        self.book = book
        self.links = links
        #: every controller replica (one, or several on etcd); the one that answered last first
        #: (a worker of a switch has one: its hub's Unix socket, deploy/daemons/switch_pool.py)
        self.controllers: list[Address | str] = (
            [controller] if isinstance(controller, tuple | str) else [tuple(a) for a in controller]  # type: ignore[misc]
        )
        self.bind_address = bind
        #: the IP neighbours reach this node on, when it binds a wildcard address (a node
        #: in its own network namespace or on its own machine; docs/deployment.md)
        self.advertise = advertise
        self.address: Address = bind
        #: use the kernel's GSO / GRO where it has them (False: a system call per datagram)
        self.offload = offload
        #: share the UDP address with other processes (worker processes of one switch)
        self.reuse_port = reuse_port
        #: False: no UDP socket, only the control connection (the supervisor of a switch's
        #: worker processes, which binds nothing and announces ``bind`` as the workers' address)
        self.data_plane = data_plane
        #: called with every record from the controller before the core takes it
        self.on_control: Callable[[control.ControlMessage], None] | None = None
        self.stats: Counter[str] = Counter()
        self.on_event: EventHandler[CoreT_co] | None = None
        #: send ``NodeStats`` to the controller this often (seconds); None = never
        self.stats_interval: float | None = None
        #: without ``stats_interval``, send a keepalive at least this often (seconds), well
        #: within the controller's idle timeout (docs/protocol.md §6.6)
        self.keepalive = KEEPALIVE
        self._stats_task: asyncio.Task[None] | None = None
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: UdpEndpoint | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = False
        #: reopen a broken control connection (switches keep forwarding meanwhile)
        self.reconnect = True
        self.reconnect_interval = 0.25
        #: a standby replica named the leader: go there now, not after the interval
        self._redirected = False
        self._flushing = False
        self._again = False
        self._flush_scheduled = False
        #: callbacks ``soon`` put off while a flush ran (an application's protocol callbacks)
        self._deferred: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self._deliver_scheduled = False
        #: neighbours whose path limit the core was told, by the address it was measured to
        self._limits: dict[str, Address] = {}

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket and connect to the controller.

        Raises:
            OSError: the address cannot be bound, or the controller cannot be reached now.
        """
        self._loop = asyncio.get_running_loop()
        if self.data_plane:
            udp = UdpEndpoint(self.bind_address, self.stats, offload=self.offload, reuse_port=self.reuse_port)
            self._udp = udp
            self.address = udp.address
            self._loop.add_reader(udp.fileno(), self._on_readable)
        if self.advertise is not None:
            self.address = (self.advertise, self.address[1])
        self.book.add(self.name, self.address)
        await self.connect_controller()

    @property
    def gso(self) -> bool:
        """Whether this node sends trains (the kernel has GSO and offload is on)."""
        return self._udp is not None and self._udp.gso

    @property
    def gro(self) -> bool:
        """Whether this node reads trains (the kernel has GRO and offload is on)."""
        return self._udp is not None and self._udp.gro

    async def connect_controller(self) -> None:
        """Open the control connection and say hello; if it breaks later, keep trying to
        reopen it every ``reconnect_interval`` seconds (the data plane goes on meanwhile).

        Raises:
            OSError: the controller cannot be reached now.
        """
        reader = await self._open_control()
        self._control_task = asyncio.create_task(self._control_loop(reader), name=f"control:{self.name}")
        if self._stats_task is None:
            self._stats_task = asyncio.create_task(self._report_stats(), name=f"stats:{self.name}")

    async def _report_stats(self) -> None:
        """Send ``NodeStats`` every ``stats_interval``; a node without one still sends a
        keepalive (an empty frame, ``KEEPALIVE_FRAME``) every ``keepalive`` seconds.

        Hosts too: their liveness goes to their gateway as presence packets (§6.2), so a host
        that binds nothing new says nothing to the controller, whose idle timeout (§6.6) would
        close its connection -- and a closed connection marks the host dead, taking its
        replicas out of the tables until it has registered again.
        """
        quiet = 0.0
        while not self.closed:
            keepalive = self.keepalive_interval()
            if self.stats_interval is not None:
                self.send_stats()
            elif quiet >= keepalive:
                quiet = 0.0
                if self._writer is not None and not self._writer.is_closing():
                    self._writer.write(control.KEEPALIVE_FRAME)  # no record: nothing to handle
            period = self.stats_interval if self.stats_interval is not None else keepalive / 4
            quiet += period
            await asyncio.sleep(period)

    def keepalive_interval(self) -> float:
        """How often a quiet node keeps its control connection alive: a third of the idle
        timeout the controller announced to this host (``Welcome.idle_timeout``, §6.6), else
        ``keepalive``."""
        announced: float = getattr(self.core, "control_idle_timeout", 0.0)
        return announced / 3 if announced > 0 else self.keepalive

    def metrics(self) -> list[Sample]:
        """This node's metrics: its core's and its runtime's (``stats``)."""
        return [*self.core.metrics(), *runtime_metrics(self.stats)]

    def trace(self) -> list[tuple[int, str, str, int, int, int, int, float]]:
        """This node's latest refinement trace hops, as ``NodeStats`` carries them."""
        return [
            (t.flow, t.obj.hex(), t.role, t.dc, t.host, t.socket, t.ttl, t.at) for t in self.core.trace[-32:]
        ]

    def send_stats(self) -> None:
        """Send this node's metrics to the controller (``NodeStats``), if connected."""
        if self._writer is None or self._writer.is_closing():
            return
        record = control.NodeStats(
            node=self.name, role=self.core.role, metrics=self.metrics(), trace=self.trace()
        )
        self._writer.write(control.frame(record))

    def send_control(self, message: control.ControlMessage) -> None:
        """Send one record to the controller now, if connected (else it is lost: what matters
        is sent again after the full sync a reconnection brings)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(control.frame(message))

    def apply_link_settings(self, settings: control.LinkSettings) -> None:
        """Change the egress emulation towards one neighbour (``scaffold fault delay``)."""
        key = (self.name, settings.peer)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = EmuLink()
        if settings.delay is not None:
            link.delay = max(0.0, settings.delay)
        if settings.loss is not None:
            link.loss = min(1.0, max(0.0, settings.loss))
        if settings.up is not None:
            link.up = settings.up

    @property
    def controller_address(self) -> Address | str:
        """The controller replica this node tries first (the leader, as far as it knows)."""
        return self.controllers[0]

    async def _open_control(self) -> asyncio.StreamReader:
        """Connect to the first controller replica that accepts, trying the known leader first.

        Raises:
            ControllerRefused: the controller refused this node, or a peer is not the
                network's controller.
            OSError: no replica accepts.
        """
        if self.refused is not None:
            raise ControllerRefused(f"the controller refused {self.name}: {self.refused}")
        error: OSError | None = None
        for k, address in enumerate(list(self.controllers)):
            try:
                if isinstance(address, str):
                    # A Unix socket: the hub of a switch's workers (deploy/daemons/switch_pool.py),
                    # in a directory only this user may enter -- no TLS there
                    connecting = asyncio.open_unix_connection(address)
                elif self.credentials is None:
                    connecting = asyncio.open_connection(*address)
                else:
                    connecting = asyncio.open_connection(
                        *address,
                        ssl=client_context(self.credentials),
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                    )
                reader, writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                error = exc if isinstance(exc, OSError) else OSError(str(exc))
                continue
            if self.credentials is not None and not isinstance(address, str):
                peer = peer_identity(writer.get_extra_info("ssl_object"))
                if peer is None or peer.role != "controller":
                    writer.close()
                    self.stats["not-the-controller"] += 1
                    raise ControllerRefused(f"the peer at {address} is not the network's controller")
            if k:
                self.controllers.insert(0, self.controllers.pop(k))
            break
        else:
            raise error or OSError("no controller address")
        self._writer = writer
        self.core.hello(self.address)
        self.flush()
        return reader

    async def _control_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            await self._read_control(reader)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            while True:
                if self._stopping():
                    return
                if not self._redirected:
                    await asyncio.sleep(self.reconnect_interval)
                self._redirected = False
                if self._stopping():
                    return
                try:
                    reader = await self._open_control()
                except (OSError, ControllerRefused):
                    self.stats["controller-unreachable"] += 1
                    continue
                self.stats["controller-reconnected"] += 1
                break

    def _stopping(self) -> bool:
        return self.closed or not self.reconnect or self.refused is not None

    async def close(self) -> None:
        """Stop the node: close its socket and its control connection."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        if self._udp is not None and self._loop is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._control_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

    # -- data plane ----------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._udp is not None and self._loop is not None:
            self._drain(BATCH)
            self.flush(deliver=True)

    def _drain(self, reads: int) -> bool:
        """Give the core up to ``reads`` reads from the socket (``READ_BUDGET`` bytes of
        them taken datagram by datagram); a flow switch routes each train whole if it can.
        Returns False once the socket is empty."""
        udp = self._udp
        assert udp is not None and self._loop is not None
        now = self._loop.time()
        read = udp.read
        receive = self.core.receive_datagram
        route_train = self._route_train
        names = self.book.name
        budget = READ_BUDGET
        for _ in range(reads):
            if budget <= 0:
                break
            got = read()
            if got is None:
                return False
            data, size, address = got
            port = names.get(address)
            if port is None:
                # Still parsed and counted by the core, which trusts no bytes anyway.
                self.stats["unknown-peer"] += 1
                port = ""
            if not size:
                budget -= len(data)
                receive(bytes(data), port, now)
                continue
            self.stats["trains-received"] += 1
            if route_train is not None:
                hop = route_train(data, size, port, now)
                if hop is not None:
                    self._forward_train(hop, data, size, now)
                continue
            budget -= len(data)
            for offset in range(0, len(data), size):
                receive(bytes(data[offset : offset + size]), port, now)
        return True

    def _forward_train(self, hop: str, train: Train, size: int, now: float) -> None:
        """Send on a train the core routed whole, after what it queued before it (order)."""
        out = self.core.datagrams_to_send(now)
        if out:
            self._send_all(out, now)
        udp = self._udp
        assert udp is not None
        address = self.book.address.get(hop)
        if address is None:
            self.stats["no-address"] += (len(train) + size - 1) // size
            return
        link = self.links.get((self.name, hop))
        if link is not None and (link.delay or link.loss or not link.up or link.mtu):
            for offset in range(0, len(train), size):  # the link stage works per datagram
                self._emulate(link, bytes(train[offset : offset + size]), address, now)
            return
        udp.send_train([train], size, address)
        self.stats["trains-forwarded"] += 1

    def flush(self, *, deliver: bool = False) -> None:
        """Dispatch the core's events, send what it queued and re-arm its timer.

        Event handlers may call the core and then ``flush`` again; a nested call only
        asks the running one to go round once more. What the handlers put off with
        ``soon`` (the application's protocol callbacks) runs once the events are
        dispatched: with ``deliver`` (the runtime's own callbacks: a datagram, a timer),
        before the datagrams are sent -- so what arrived reaches the application first and
        what it writes in answer leaves in the same flush, with the acknowledgment it
        carries; else in the loop's next turn (a flush an application's call asked for runs
        no other application code inside that call).
        """
        if self.closed or self._loop is None:
            return
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._flush_once(deliver)
        finally:
            self._flushing = False
        if self._deferred and not self._deliver_scheduled:
            self._deliver_scheduled = True
            self._loop.call_soon(self._scheduled_deliver)

    def soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` outside the core's event dispatch: in a flush for what
        arrived (``flush(deliver=True)``), once its events are dispatched and before its
        datagrams leave -- an application's protocol hears of a segment before the loop runs
        the other callbacks waiting (other nodes' datagrams, in one process), and what it
        writes leaves in that flush; with no such flush under way, in the loop's next turn
        (``call_soon``)."""
        if self._flushing:
            self._deferred.append((callback, args))
        elif self._loop is not None:
            self._loop.call_soon(callback, *args)

    def _deliver(self) -> None:
        """Run the callbacks ``soon`` put off, and those they put off, until none is left.
        Their calls to the core only ask the flush under way to go round once more."""
        assert self._loop is not None
        while self._deferred:
            deferred, self._deferred = self._deferred, []
            for callback, args in deferred:
                try:
                    callback(*args)
                except Exception as exc:  # one application's failure stops no other's
                    self._loop.call_exception_handler(
                        {"message": f"{self.name}: callback {callback!r} failed", "exception": exc}
                    )

    def _scheduled_deliver(self) -> None:
        self._deliver_scheduled = False
        if self._deferred:
            self.flush(deliver=True)

    def flush_soon(self) -> None:
        """Flush once the event loop's current turn is over: what the application queued in
        that turn (many streams' writes and reads) leaves in one flush, in trains -- flushing
        at the first ask would cost a busy loop a system call per turn and split its trains
        (half again as many sends and reads per request under wrk). Asked from a callback
        ``soon`` put off, the flush under way goes round once more."""
        if self._flushing:
            self._again = True
        elif not self._flush_scheduled and self._loop is not None and not self.closed:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush(deliver=True)

    def _flush_once(self, deliver: bool) -> None:
        loop = self._loop
        assert loop is not None
        core = self.core
        now = loop.time()
        handler = self.on_event
        tables_applied = False
        while (event := core.next_event()) is not None:
            if isinstance(event, _NODE_EVENTS):  # one test for the many that are the handler's
                if isinstance(event, NeighboursLearned):
                    self._learn_addresses(event.addresses)
                elif isinstance(event, HostRelocated):
                    self._plug_into(event)
                else:
                    tables_applied = True
            if handler is not None:
                handler(core, event, now)
        # What the callbacks' calls to the core raised is dispatched first, in the round they
        # asked for (``_again``): their datagrams then leave with this round's, and the timer
        # is set once, from the state after them.
        later = False
        if deliver and self._deferred:
            self._deliver()
            now = loop.time()
            later = self._again
        if not later:
            out = core.datagrams_to_send(now)
            if out:
                self._send_all(out, now)
            at = core.get_timer()
            if at != self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = at
                self._timer = loop.call_at(at, self._on_timer) if at is not None else None
        messages = core.control_to_send()
        if messages and self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(control.frame(m) for m in messages))
        if tables_applied and self.stats_interval is not None:
            self.send_stats()  # so waiters on "tables applied" need not wait a period

    def _learn_addresses(self, addresses: Mapping[str, Address]) -> None:
        for name, address in list(addresses.items()):
            if not valid_address(address):
                self.stats["bad-address"] += 1  # never let it reach a send path
                continue
            if self.book.address.get(name) != address:
                self.book.add(name, address)
            if name != self.name and self._limits.get(name) != address:
                # The largest datagram the interface towards that neighbour sends: a host
                # bounds its streams' path-MTU search by it (docs/protocol.md §4.2.6).
                self._limits[name] = address
                mtu = mtu_towards(address)
                if mtu is not None and self._loop is not None:
                    self.core.set_path_limit(name, min(mtu - _IP_UDP, MAX_DATAGRAM), self._loop.time())

    def _plug_into(self, event: HostRelocated) -> None:
        """The host moved to another gateway: reach it, with the same link emulation as
        its first access link."""
        template = next((link for (a, _), link in self.links.items() if a == self.name), None)
        for key in ((self.name, event.gateway), (event.gateway, self.name)):
            if key not in self.links:
                self.links[key] = EmuLink(template.delay if template else 0.0)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._timer_at = None
        # A host's presence packet leaves before anything else: reading what waits may take
        # a busy loop a while, and its gateway judges it by when it hears it (§6.2).
        beat = getattr(self.core, "beat", None)
        now = self._loop.time()
        if beat is not None and beat(now):
            self._send_all(self.core.datagrams_to_send(now), now)
        # What already arrived comes before what is due: a timer that fires while the loop
        # lags behind the socket must not take packets waiting in it for silence (a gateway
        # declaring a host dead, a sender's retransmission timeout).
        self._read_pending()
        self.core.handle_timer(self._loop.time())
        self.flush(deliver=True)

    def _read_pending(self) -> None:
        """Give the core what waits in the socket (a bounded number of reads). A core whose
        timer judges silence (``drain_before_timer``: a gateway's liveness check, §6.2) gets
        everything that waits, sending what it forwards between rounds: a presence packet
        queued behind a burst of data is still a sign of life."""
        if self._udp is None or self._loop is None:
            return
        rounds = SILENCE_DRAIN_ROUNDS if getattr(self.core, "drain_before_timer", False) else 1
        for _ in range(rounds):
            if not self._drain(TIMER_DRAIN):
                return
            out = self.core.datagrams_to_send(self._loop.time())
            if out:
                self._send_all(out, self._loop.time())

    def _send_all(self, out: list[tuple[str, Packet]], now: float) -> None:
        """Send a batch: consecutive datagrams to one neighbour go out as one train (one
        system call); a link with emulation gets its datagrams one by one."""
        addresses = self.book.address
        links = self.links
        name = self.name
        udp = self._udp
        assert udp is not None
        # One datagram (a setup's segments, a request's): sent at once, no train to build.
        train = len(out) > 1
        push = udp.push if train else udp.send
        for port, data in out:
            address = addresses.get(port)
            if address is None:
                self.stats["no-address"] += 1
                continue
            link = links.get((name, port))
            if link is not None and (link.delay or link.loss or not link.up or link.mtu):
                udp.flush()  # what was queued before it goes first
                self._emulate(link, data, address, now)
                continue
            push(data, address)
        if train:
            udp.flush()

    def _emulate(self, link: EmuLink, data: Packet, address: Address, now: float) -> None:
        """The egress link stage: cut, MTU, random loss, then delay (docs/architecture.md §3)."""
        if not link.up:
            self.stats["link-down"] += 1
            return
        if link.mtu and len(data) + _IP_UDP > link.mtu:
            self.stats["link-too-big"] += 1
            return
        if link.loss and self._rng.random() < link.loss:
            self.stats["link-loss"] += 1
            return
        if link.delay > 0:
            assert self._loop is not None
            self._loop.call_at(now + link.delay, self._sendto, data, address)
            return
        self._sendto(data, address)

    def _sendto(self, data: Packet, address: Address) -> None:
        if self._udp is None or self.closed:
            return
        self._udp.send(data, address)

    # -- control plane -------------------------------------------------------------------

    def _follow(self, message: control.NotLeader) -> None:
        """A standby replica answered: try the leader it names first, at once (§6.8)."""
        self.stats["controller-redirected"] += 1
        if message.leader is not None:
            leader = (str(message.leader[0]), int(message.leader[1]))
            if leader in self.controllers:
                self.controllers.remove(leader)
            self.controllers.insert(0, leader)
            self._redirected = True
        else:
            self.controllers.append(self.controllers.pop(0))  # nobody leads yet: the next one

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        # The controller is authenticated (TLS), but its table syncs are not chunked yet.
        decoder = control.FrameDecoder(control.MAX_FRAME_FROM_CONTROLLER)
        assert self._loop is not None
        while True:
            try:
                chunk = await reader.read(65536)
            except OSError:
                # Reset rather than closed: a controller killed while this node's reports
                # sat unread in its socket answers with RST, not FIN (and TLS may fail in
                # the middle of a record). The connection is as gone as after an EOF; were
                # the error left to end the control task, the node would never reconnect
                # -- never report to the next leader, never hear of a table change again.
                chunk = b""
            if not chunk:
                self.stats["controller-lost"] += 1
                return  # keep forwarding on the last tables (docs/protocol.md §6.3)
            try:
                messages = decoder.feed(chunk)
            except MalformedPacket as exc:
                self.stats[f"control-{exc.reason}"] += 1
                return
            now = self._loop.time()
            for message in messages:
                if isinstance(message, control.NotLeader):
                    self._follow(message)
                    return
                try:
                    if self.on_control is not None:
                        self.on_control(message)
                    if isinstance(message, control.LinkSettings):
                        self.apply_link_settings(message)  # for the runtime's link stage, not the core
                    elif isinstance(message, control.Refused):
                        self.refused = message.reason
                        self.stats[f"refused-{message.reason}"] += 1
                    else:
                        self.core.receive_control(message, now)
                except Exception:
                    self.stats["control-record-error"] += 1
            self.flush()
