"""The asyncio runtime: real UDP sockets, real TCP control connections (docs/architecture.md §3).

Each node owns one non-blocking UDP socket. Its reader drains up to ``BATCH`` datagrams per
wake-up straight into the core, then sends what the core queued; one timer handle per node
is re-armed from ``core.get_timer()``. Link emulation (delay, loss, cuts) is an egress stage
of our own, because the kernels we run on have no ``netem``: a delayed packet is handed to
``loop.call_at``. The controller is a TCP server speaking framed control records.

``EmbeddedNetwork`` runs a whole topology in one process over loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from ..core.controller import CONTROLLER_COMMANDS, Controller
from ..core.flow_switch import FlowSwitch
from ..core.host import HostEvent, HostRelocated, HostStack
from ..core.object_switch import ObjectSwitch
from ..core.store import MemoryStore, Store
from ..core.topology import Topology
from ..errors import MalformedPacket, UsageError
from ..ids import ObjectId
from ..wire import control

__all__ = ["BATCH", "ControllerRuntime", "EmbeddedNetwork", "EmuLink", "NodeRuntime", "run"]

BATCH = 64
SOCKET_BUFFER = 4 * 1024 * 1024
T = TypeVar("T")
Address = tuple[str, int]
Core = FlowSwitch | ObjectSwitch | HostStack
EventHandler = Callable[[HostStack, HostEvent, float], None]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def call_from_thread(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None
) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and wait for its result.

    Raises:
        UsageError: called from ``loop``'s own thread (it would deadlock) or ``loop`` is closed.
        TimeoutError: no result within ``timeout`` seconds (the coroutine is cancelled).
    """
    if loop.is_closed():
        coro.close()
        raise UsageError("the network's event loop is closed")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise UsageError("blocking calls cannot run on the network's own event loop; use the async API")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"timed out after {timeout} s") from None


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass(slots=True)
class EmuLink:
    """Egress emulation of one direction of a link."""

    delay: float = 0.0
    loss: float = 0.0
    up: bool = True


class AddressBook:
    """Node name <-> UDP address, shared by the nodes of one process."""

    def __init__(self) -> None:
        self.address: dict[str, Address] = {}
        self.name: dict[Address, str] = {}

    def add(self, name: str, address: Address) -> None:
        old = self.address.get(name)
        if old is not None:
            self.name.pop(old, None)
        self.address[name] = address
        self.name[address] = name


class NodeRuntime:
    """Drives one core (switch or host) with a UDP socket and a control connection."""

    def __init__(
        self,
        core: Core,
        book: AddressBook,
        links: dict[tuple[str, str], EmuLink],
        controller: Address,
        *,
        bind: Address = ("127.0.0.1", 0),
        rng: random.Random | None = None,
        advertise: str | None = None,
    ) -> None:
        self.core = core
        self.name = core.name
        self.book = book
        self.links = links
        self.controller_address = controller
        self.bind_address = bind
        #: the IP neighbours reach this node on, when it binds a wildcard address (a node
        #: in its own network namespace or on its own machine; docs/deployment.md)
        self.advertise = advertise
        self.address: Address = bind
        self.stats: Counter[str] = Counter()
        self.on_event: EventHandler | None = None
        #: send ``NodeStats`` to the controller this often (seconds); None = never
        self.stats_interval: float | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = False
        #: reopen a broken control connection (switches keep forwarding meanwhile)
        self.reconnect = True
        self.reconnect_interval = 0.5
        self._flushing = False
        self._again = False
        self._gateway_before = core.gateway if isinstance(core, HostStack) else ""

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind(self.bind_address)
        self._sock = sock
        self.address = sock.getsockname()[:2]
        if self.advertise is not None:
            self.address = (self.advertise, self.address[1])
        self.book.add(self.name, self.address)
        self._loop.add_reader(sock.fileno(), self._on_readable)
        await self.connect_controller()

    async def connect_controller(self) -> None:
        """Open the control connection and say hello; if it breaks later, keep trying to
        reopen it every ``reconnect_interval`` seconds (the data plane goes on meanwhile).

        Raises:
            OSError: the controller cannot be reached now.
        """
        reader = await self._open_control()
        self._control_task = asyncio.create_task(self._control_loop(reader), name=f"control:{self.name}")
        if self.stats_interval is not None and self._stats_task is None:
            self._stats_task = asyncio.create_task(self._report_stats(), name=f"stats:{self.name}")

    async def _report_stats(self) -> None:
        assert self.stats_interval is not None
        while not self.closed:
            self.send_stats()
            await asyncio.sleep(self.stats_interval)

    def send_stats(self) -> None:
        """Send this node's counters to the controller (``NodeStats``), if connected."""
        core = self.core
        if self._writer is None or self._writer.is_closing():
            return
        is_host = isinstance(core, HostStack)
        record = control.NodeStats(
            node=self.name,
            role=core.role,
            version=0 if is_host else core.version,  # type: ignore[union-attr]
            forwarded=0 if is_host else core.forwarded,  # type: ignore[union-attr]
            drops=dict(core.drops),
            counters=dict(core.counters),
            runtime=dict(self.stats),
            table_entries=0 if is_host else core.table_entries(),  # type: ignore[union-attr]
            trace=[
                (t.flow, t.obj.hex(), t.role, t.dc, t.host, t.socket, t.ttl, t.at) for t in core.trace[-32:]
            ],
        )
        self._writer.write(control.frame(record))

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

    async def _open_control(self) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(*self.controller_address)
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
                await asyncio.sleep(self.reconnect_interval)
                if self._stopping():
                    return
                try:
                    reader = await self._open_control()
                except OSError:
                    self.stats["controller-unreachable"] += 1
                    continue
                self.stats["controller-reconnected"] += 1
                break

    def _stopping(self) -> bool:
        return self.closed or not self.reconnect

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
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
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
        assert self._sock is not None and self._loop is not None
        now = self._loop.time()
        recvfrom = self._sock.recvfrom
        receive = self.core.receive_datagram
        names = self.book.name
        for _ in range(BATCH):
            try:
                data, address = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.stats["recv-error"] += 1
                break
            port = names.get(address)
            if port is None:
                # Still parsed and counted by the core, which trusts no bytes anyway.
                self.stats["unknown-peer"] += 1
                port = ""
            receive(data, port, now)
        self.flush()

    def flush(self) -> None:
        """Send what the core queued, dispatch its events and re-arm its timer.

        Event handlers may call the core and then ``flush`` again; a nested call only
        asks the running one to go round once more.
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
                self._flush_once()
        finally:
            self._flushing = False

    def _flush_once(self) -> None:
        assert self._loop is not None
        core = self.core
        now = self._loop.time()
        if isinstance(core, HostStack):
            handler = self.on_event
            while (event := core.next_event()) is not None:
                if isinstance(event, HostRelocated):
                    self._plug_into(event)
                if handler is not None:
                    handler(core, event, now)
        out = core.datagrams_to_send(now)
        if out:
            self._send_all(out, now)
        messages = core.control_to_send()
        if messages and self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(control.frame(m) for m in messages))
        if isinstance(core, HostStack):
            at = core.get_timer()
            if at != self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = at
                self._timer = self._loop.call_at(at, self._on_timer) if at is not None else None

    def _plug_into(self, event: HostRelocated) -> None:
        """The host moved to another gateway: reach it, with the same link emulation."""
        if event.address is not None:
            self.book.add(event.gateway, (str(event.address[0]), int(event.address[1])))
        template = self.links.get((self.name, self._gateway_before or event.gateway))
        for key in ((self.name, event.gateway), (event.gateway, self.name)):
            if key not in self.links:
                self.links[key] = EmuLink(template.delay if template else 0.0)
        self._gateway_before = event.gateway

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._timer_at = None
        if isinstance(self.core, HostStack):
            self.core.handle_timer(self._loop.time())
        self.flush()

    def _send_all(self, out: list[tuple[str, bytes | bytearray]], now: float) -> None:
        """Send a batch; the common case (no emulation on the link) is one ``sendto``."""
        addresses = self.book.address
        links = self.links
        name = self.name
        sock = self._sock
        assert sock is not None
        for port, data in out:
            address = addresses.get(port)
            if address is None:
                self.stats["no-address"] += 1
                continue
            link = links.get((name, port))
            if link is not None and (link.delay or link.loss or not link.up):
                self._emulate(link, data, address, now)
                continue
            try:
                sock.sendto(data, address)
            except BlockingIOError:
                self.stats["send-buffer-full"] += 1
            except OSError:
                self.stats["send-error"] += 1

    def _emulate(self, link: EmuLink, data: bytes | bytearray, address: Address, now: float) -> None:
        """The egress link stage: cut, random loss, then delay (docs/architecture.md §3)."""
        if not link.up:
            self.stats["link-down"] += 1
            return
        if link.loss and self._rng.random() < link.loss:
            self.stats["link-loss"] += 1
            return
        if link.delay > 0:
            assert self._loop is not None
            self._loop.call_at(now + link.delay, self._sendto, data, address)
            return
        self._sendto(data, address)

    def _sendto(self, data: bytes | bytearray, address: Address) -> None:
        if self._sock is None or self.closed:
            return
        try:
            self._sock.sendto(data, address)
        except BlockingIOError:
            self.stats["send-buffer-full"] += 1
        except OSError:
            self.stats["send-error"] += 1

    # -- control plane -------------------------------------------------------------------

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        decoder = control.FrameDecoder()
        assert self._loop is not None
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                self.stats["controller-lost"] += 1
                return  # keep forwarding on the last tables (docs/protocol.md §6.3)
            try:
                messages = decoder.feed(chunk)
            except MalformedPacket as exc:
                self.stats[f"control-{exc.reason}"] += 1
                return
            now = self._loop.time()
            tables_changed = False
            for message in messages:
                if isinstance(message, control.LinkSettings):
                    self.apply_link_settings(message)
                    continue
                tables_changed = tables_changed or isinstance(message, control.TableSync | control.TableDelta)
                if isinstance(message, control.Welcome) and message.gateway_address is not None:
                    assert isinstance(self.core, HostStack)
                    self.book.add(self.core.gateway, tuple(message.gateway_address))  # type: ignore[arg-type]
                self.core.receive_control(message, now)
                if not isinstance(self.core, HostStack):
                    for name, address in self.core.tables["peers"].items():
                        if self.book.address.get(str(name)) != address:
                            self.book.add(str(name), tuple(address))  # type: ignore[arg-type]
            self.flush()
            if tables_changed and self.stats_interval is not None:
                self.send_stats()  # so waiters on "tables applied" need not wait a period


class ControllerRuntime:
    """The controller core behind a TCP server speaking framed control records."""

    def __init__(self, core: Controller, bind: Address = ("127.0.0.1", 0)) -> None:
        self.core = core
        self.bind_address = bind
        self.address: Address = bind
        self.stats: Counter[str] = Counter()
        #: the last ``NodeStats`` of each node (``scaffold status`` counters)
        self.node_stats: dict[str, control.NodeStats] = {}
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, *self.bind_address)
        self.address = self._server.sockets[0].getsockname()[:2]
        self._arm()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        # Closing the writers ends each connection's reader with EOF; cancelling the
        # handler tasks instead would make asyncio's stream protocol log the cancellation.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def command(self, name: str, **args: Any) -> Any:
        """Run a controller command (``drain``, ``set_weight``, ``migrate_object``,
        ``migrate_host``, ``move_host``, ``set_link``) now and send what it queued.

        Raises:
            UsageError: the command or its arguments are invalid.
        """
        if name not in CONTROLLER_COMMANDS:
            raise UsageError(f"unknown controller command {name!r}")
        result = getattr(self.core, name)(now=self.now(), **args)
        self.flush()
        return result

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        decoder = control.FrameDecoder()
        name: str | None = None
        try:
            while chunk := await reader.read(65536):
                try:
                    messages = decoder.feed(chunk)
                except MalformedPacket as exc:
                    self.stats[f"control-{exc.reason}"] += 1
                    break
                for message in messages:
                    if isinstance(message, control.AdminRequest):
                        writer.write(control.frame(self._admin(message)))
                        continue
                    if isinstance(message, control.NodeStats):
                        self.node_stats[message.node] = message
                        continue
                    if isinstance(message, control.Hello):
                        name = message.node
                        self._writers[name] = writer
                    if name is None:
                        self.stats["before-hello"] += 1
                        continue
                    self.core.receive_message(name, message, self.now())
                self.flush()
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if name is not None and self._writers.get(name) is writer:
                del self._writers[name]
                if self._loop is not None and not self._loop.is_closed():
                    self.core.node_disconnected(name, self.now())
                    self.flush()
            writer.close()

    def _admin(self, request: control.AdminRequest) -> control.AdminReply:
        """``counters`` is answered here (the runtime holds the nodes' reports); every other
        command by the controller core."""
        if request.command == "counters":
            return control.AdminReply(
                request.id, True, result={name: msgspec.to_builtins(s) for name, s in self.node_stats.items()}
            )
        return self.core.admin(request, self.now())

    def flush(self) -> None:
        for node, message in self.core.messages_to_send():
            writer = self._writers.get(node)
            if writer is None or writer.is_closing():
                self.stats["to-disconnected"] += 1
                continue
            writer.write(control.frame(message))
        self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        at = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer = self._loop.call_at(at if at is not None else self._loop.time() + 0.1, self._on_timer)

    def _on_timer(self) -> None:
        self.core.handle_timer(self.now())
        self.flush()


class EmbeddedNetwork:
    """A whole topology in this process over loopback UDP: the embedded default.

    Use as ``async with EmbeddedNetwork(topology) as net: ...``. Backbone delays and losses
    of the topology are applied by the egress link stage.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        seed: int | None = None,
        stream_options: dict[str, Any] | None = None,
        store: Store | None = None,
    ) -> None:
        self.topology = topology
        self.book = AddressBook()
        self.links: dict[tuple[str, str], EmuLink] = {}
        for link in topology.node_links():
            self.links[(link.a, link.b)] = EmuLink(link.delay, link.loss)
            self.links[(link.b, link.a)] = EmuLink(link.delay, link.loss)
        self._controller_options: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "dead_after": dead_after,
            "store": store if store is not None else MemoryStore(),
        }
        self.controller = ControllerRuntime(Controller(topology, **self._controller_options))
        self.nodes: dict[str, NodeRuntime] = {}
        self.stream_options = stream_options
        self._seeded = seed is not None
        self._rng = random.Random(seed)

    async def __aenter__(self) -> EmbeddedNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, ready_timeout: float = 10.0) -> None:
        await self.controller.start()
        for dc in self.topology.datacenters:
            for fs in dc.flow_switches:
                await self._start_node(FlowSwitch(fs, dc.name))
            await self._start_node(ObjectSwitch(dc.object_switch, dc.name))
        for spec in self.topology.hosts():
            await self._start_node(self._host_stack(spec.name, spec.gateway))
        await self.wait_for(self.ready, ready_timeout, "the network to come up")

    def _host_stack(self, name: str, gateway: str) -> HostStack:
        # With a seed, Flow IDs and nonces (hence replica choices) repeat from run to run.
        rng = random.Random(self._rng.getrandbits(64)) if self._seeded else None
        return HostStack(name, gateway, rng, stream_options=self.stream_options)

    async def _start_node(self, core: Core) -> NodeRuntime:
        node = NodeRuntime(
            core, self.book, self.links, self.controller.address, rng=random.Random(self._rng.getrandbits(64))
        )
        self.nodes[core.name] = node
        await node.start()
        return node

    async def add_host(self, name: str, gateway: str) -> NodeRuntime:
        """Attach and register one more host."""
        if name in self.nodes:
            raise UsageError(f"node {name!r} exists")
        self.topology = self.topology.with_host(self.topology.hosts()[0].__class__(name, gateway))
        self.controller.core.topology = self.topology
        for key in ((name, gateway), (gateway, name)):
            self.links[key] = EmuLink(self.topology.local_delay)
        node = await self._start_node(self._host_stack(name, gateway))
        await self.wait_for(
            lambda: isinstance(node.core, HostStack) and node.core.registered, 5.0, f"{name} to register"
        )
        return node

    async def close(self) -> None:
        for node in list(self.nodes.values()):
            await node.close()
        await self.controller.close()

    async def stop_controller(self) -> None:
        """Stop the controller; switches keep forwarding on their last tables and every
        node keeps trying to reconnect."""
        await self.controller.close()

    async def start_controller(self) -> None:
        """Start a new controller on the same address, from the same store (a restart)."""
        address = self.controller.address
        self.controller = ControllerRuntime(
            Controller(self.topology, **self._controller_options), bind=address
        )
        await self.controller.start()

    def set_link(
        self, a: str, b: str, *, up: bool | None = None, delay: float | None = None, loss: float | None = None
    ) -> None:
        """Change the emulation of the node-level link a-b, both directions (a cut cable:
        ``up=False``).

        Raises:
            UsageError: there is no such link.
        """
        for key in ((a, b), (b, a)):
            link = self.links.get(key)
            if link is None:
                raise UsageError(f"no link between {a!r} and {b!r}")
            if up is not None:
                link.up = up
            if delay is not None:
                link.delay = delay
            if loss is not None:
                link.loss = loss

    def host(self, name: str) -> NodeRuntime:
        node = self.nodes.get(name)
        if node is None or not isinstance(node.core, HostStack):
            raise UsageError(f"{name!r} is not a host")
        return node

    async def wait_for_object(self, obj: ObjectId, host: str | None = None, timeout: float = 5.0) -> None:
        """Wait until the controller registered ``obj`` (on ``host``, if given) and every
        object switch applied the tables that include it."""
        ctl = self.controller.core
        key = obj.raw.hex()

        def registered() -> bool:
            replicas = ctl.objects.get(key, {})
            return host in replicas if host is not None else bool(replicas)

        await self.wait_for(registered, timeout, f"the controller to register {obj.short()}")
        targets = {
            name: state.version
            for name, state in ctl.switches.items()
            if state.role == "object-switch" and state.connected
        }

        def applied() -> bool:
            return all(_version(self.nodes[name].core) >= version for name, version in targets.items())

        await self.wait_for(applied, timeout, f"object switches to learn {obj.short()}")

    def ready(self) -> bool:
        for node in self.nodes.values():
            core = node.core
            if isinstance(core, HostStack):
                if not core.registered:
                    return False
            elif not core.synced:
                return False
        return True

    @staticmethod
    async def wait_for(condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
        """Poll ``condition`` until true, or raise ``TimeoutError`` naming ``what``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
            await asyncio.sleep(0.005)


def _version(core: Core) -> int:
    return 0 if isinstance(core, HostStack) else core.version
