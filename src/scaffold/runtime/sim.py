"""The discrete-event runtime: a whole network in one process on a virtual clock.

Links have delay, jitter (which reorders), loss, duplication and can be cut; everything
random comes from one seeded ``random.Random``, so a run is deterministic. Control records go
through their real MessagePack encoding on the way, so the sim exercises the wire too; a
record to a node over ``MAX_FRAME`` is refused as a stream's receiver refuses its frame
(counted ``control-frame-too-large``).

Applications are callbacks: ``net.on_event(host, fn)`` calls ``fn(host_stack, event, now)``
for every event a host stack emits, and anything the callback queues is sent at once.

Every node is driven through the one engine interface (``core/engine.py``) by one flush
loop, ``_flush``: events, then datagrams, then control records, then the node's timer.
Consecutive datagrams of one size from a node to a flow switch, on a plain link (no loss,
jitter, duplication or bandwidth limit), arrive as one *train* (``FlowSwitch.route_train``),
as the kernel's GRO hands them to the ``aio`` runtime; the switch sends a train it routed
whole on as one.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.controller import Command, Controller
from ..core.engine import NodeEngine
from ..core.events import Datagram, HostRelocated, Packet
from ..core.flow_switch import FlowSwitch
from ..core.host import HostStack
from ..core.metrics import Sample
from ..core.object_switch import ObjectSwitch
from ..core.topology import HostSpec, Topology
from ..errors import UsageError
from ..wire import control
from .metrics import runtime_metrics
from .store import MemoryStore, Store, controller_outputs

__all__ = ["EventHandler", "SimLink", "SimNetwork"]

SwitchCore = FlowSwitch | ObjectSwitch

#: the most datagrams one train carries (the kernel's limit for GSO in the ``aio`` runtime)
MAX_TRAIN = 64
#: an application: called with the host's stack, each event it emits, and the time
EventHandler = Callable[[HostStack, Any, float], None]


@dataclass(slots=True)
class SimLink:
    """One direction of a link."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    up: bool = True
    #: the link's MTU in IP bytes: a datagram larger than it less 28 (the IPv4 and UDP
    #: headers) is lost; 0: none
    mtu: int = 0
    #: bits/s; None = unlimited. Packets queue behind each other (drop-tail at ``max_queue``).
    bandwidth: float | None = None
    #: longest a packet may wait in the queue before it is dropped, seconds
    max_queue: float = 0.1
    busy_until: float = 0.0
    sent: int = 0
    lost: int = 0


class SimNetwork:
    """A simulated SCAFFOLD network built from a ``Topology``."""

    def __init__(
        self,
        topology: Topology,
        *,
        seed: int = 0,
        control_delay: float = 0.001,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        store: Store | None = None,
    ) -> None:
        self.topology = topology
        self.now = 0.0
        self.rng = random.Random(seed)
        self.control_delay = control_delay
        #: where the controller's durable state goes (docs/protocol.md §6.4)
        self.store: Store = store if store is not None else MemoryStore()
        # The sim is a test network in one process: any host may serve any plain name.
        self.controller = Controller(
            topology,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            saved=self.store.load(),
            open_binding=True,
        )
        self.nodes: dict[str, NodeEngine] = {}
        self._hosts: dict[str, HostStack] = {}
        self._switches: dict[str, SwitchCore] = {}
        self.links: dict[tuple[str, str], SimLink] = {}
        #: events of each host that has no handler, in order
        self.events: dict[str, list[object]] = {}
        self.handlers: dict[str, EventHandler] = {}
        #: what the runtime counted per node (``no-link``: a packet for a neighbour it has
        #: no link to), reported with the node's own metrics by ``metrics``
        self.stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.alive: set[str] = set()
        self.delivered = 0
        self.controller_alive = True
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._timers: dict[str, float] = {}
        #: stalled node -> when it runs again; what reached it meanwhile, in order
        self._stalled: dict[str, float] = {}
        self._held: dict[str, list[tuple[str, Any]]] = {}
        for dc in topology.datacenters:
            for fs in dc.flow_switches:
                self._add_switch_node(FlowSwitch(fs, dc.name))
            self._add_switch_node(ObjectSwitch(dc.object_switch, dc.name))
            for host in dc.hosts:
                self._add_host_node(host)
        for link in topology.node_links():
            for key in ((link.a, link.b), (link.b, link.a)):
                self.links[key] = SimLink(link.delay, 0.0, link.loss, bandwidth=link.bandwidth)

    # -- building ------------------------------------------------------------------------

    def _add_switch_node(self, switch: SwitchCore) -> None:
        self.nodes[switch.name] = self._switches[switch.name] = switch

    def _add_host_node(self, spec: HostSpec, **options: Any) -> HostStack:
        stack = HostStack(spec.name, spec.gateway, random.Random(self.rng.getrandbits(64)), **options)
        self.nodes[spec.name] = self._hosts[spec.name] = stack
        self.events.setdefault(spec.name, [])
        return stack

    def start(self) -> None:
        """Connect every node to the controller (switches first, then hosts)."""
        for name in [*self._switches, *self._hosts]:
            self._connect(name)
        self._schedule_controller_timer()

    def _connect(self, name: str) -> None:
        self.alive.add(name)
        self.nodes[name].hello()
        self._flush(name)

    def add_host(self, name: str, gateway: str) -> HostStack:
        """Attach a new host to ``gateway`` and register it."""
        if name in self.nodes:
            raise UsageError(f"node {name!r} exists")
        self.topology = self.topology.with_host(HostSpec(name, gateway))
        self.controller.topology = self.topology
        stack = self._add_host_node(HostSpec(name, gateway))
        for a, b in ((name, gateway), (gateway, name)):
            self.links[(a, b)] = SimLink(self.topology.local_delay)
        self._connect(name)
        return stack

    def restart_host(self, name: str, **options: Any) -> HostStack:
        """Replace a host's stack by a fresh one (a process restart) and register it again;
        the controller gives it back its Host ID.

        Raises:
            UsageError: ``name`` is not a host.
        """
        old = self.host(name)
        stack = self._add_host_node(HostSpec(name, old.gateway), **options)
        self._timers.pop(name, None)
        self._connect(name)
        return stack

    def host(self, name: str) -> HostStack:
        """The stack of host ``name``.

        Raises:
            UsageError: ``name`` is not a host.
        """
        stack = self._hosts.get(name)
        if stack is None:
            raise UsageError(f"{name!r} is not a host")
        return stack

    def switch(self, name: str) -> SwitchCore:
        """The core of switch ``name``.

        Raises:
            UsageError: ``name`` is not a switch.
        """
        switch = self._switches.get(name)
        if switch is None:
            raise UsageError(f"{name!r} is not a switch")
        return switch

    def metrics(self, name: str) -> list[Sample]:
        """Node ``name``'s metrics: its core's and what the runtime counted for it."""
        return [*self.nodes[name].metrics(), *runtime_metrics(self.stats[name])]

    def link(self, a: str, b: str) -> SimLink:
        try:
            return self.links[(a, b)]
        except KeyError:
            raise UsageError(f"no link {a} -> {b}") from None

    def set_link(self, a: str, b: str, **settings: Any) -> None:
        """Change both directions of the node-level link a-b (delay, jitter, loss, up...)."""
        for key in ((a, b), (b, a)):
            link = self.link(*key)
            for attr, value in settings.items():
                setattr(link, attr, value)

    def set_all_links(self, **settings: Any) -> None:
        for link in self.links.values():
            for attr, value in settings.items():
                setattr(link, attr, value)

    def on_event(self, host: str, handler: EventHandler) -> None:
        """Run ``handler(stack, event, now)`` for each event of ``host`` (an application).

        Raises:
            UsageError: ``host`` is not a host.
        """
        self.host(host)
        self.handlers[host] = handler

    def kill(self, node: str) -> None:
        """Stop a node dead: it receives, sends and heartbeats nothing from now on."""
        self.alive.discard(node)

    def stall(self, node: str, duration: float) -> None:
        """Stall a node for ``duration`` virtual seconds from now, as a paused process or a
        starved event loop: it runs nothing and sends nothing; what reaches it meanwhile waits
        (as in its socket) and is handed to it when it runs again, before its overdue timer
        (as the ``aio`` runtime reads its socket before a due timer).

        Raises:
            UsageError: ``node`` is not a switch or host of the network.
        """
        if node not in self.nodes:
            raise UsageError(f"no node {node!r} to stall")
        until = max(self._stalled.get(node, self.now), self.now + duration)
        self._stalled[node] = until
        self._held.setdefault(node, [])
        self._push(until, "resume", node)

    def inject(self, node: str, data: bytes, port: str = "") -> None:
        """Deliver raw bytes to ``node`` now, as if neighbour ``port`` sent them (fuzzing)."""
        self._push(self.now, "packet", (node, port, data))

    def stop_controller(self) -> None:
        """The controller vanishes: records to and from it are lost from now on."""
        self.controller_alive = False

    def command(self, command: Command) -> dict[str, Any]:
        """Run an operator command (``core.controller.commands``) now and send what it queued.

        Raises:
            UsageError: an unknown host, object, datacenter or link.
        """
        result = self.controller.command(command, self.now)
        self._flush_controller()
        return result

    def act(self, node: str, action: Callable[[Any, float], Any]) -> Any:
        """Call ``action(core, now)`` on a node (an application call) and send what it queued."""
        result = action(self.nodes[node], self.now)
        self._flush(node)
        return result

    # -- running -------------------------------------------------------------------------

    def run(self, duration: float, *, max_events: int = 10_000_000) -> None:
        """Advance virtual time by ``duration`` seconds."""
        self.run_until(self.now + duration, max_events=max_events)

    def run_until(self, deadline: float, *, max_events: int = 10_000_000) -> None:
        for _ in range(max_events):
            if not self._queue or self._queue[0][0] > deadline:
                self.now = max(self.now, deadline)
                return
            self._step()
        raise RuntimeError(f"simulation did not settle within {max_events} events")

    def run_while(
        self, condition: Callable[[], bool], *, timeout: float, max_events: int = 10_000_000
    ) -> bool:
        """Run until ``condition()`` is false or ``timeout`` virtual seconds passed.

        Returns True if the condition became false."""
        deadline = self.now + timeout
        for _ in range(max_events):
            if not condition():
                return True
            if not self._queue or self._queue[0][0] > deadline:
                self.now = max(self.now, deadline)
                return not condition()
            self._step()
        raise RuntimeError(f"simulation did not settle within {max_events} events")

    def _push(self, at: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), kind, payload))

    def _step(self) -> None:
        at, _, kind, payload = heapq.heappop(self._queue)
        self.now = at
        if kind == "resume":
            self._resume(payload, at)
            return
        target = payload if kind == "timer" else None if kind == "to-controller" else payload[0]
        if target in self._stalled:
            if kind != "timer":  # a timer is looked at again when the node runs
                self._held[target].append((kind, payload))
            return
        self._dispatch(kind, payload, at)

    def _resume(self, name: str, at: float) -> None:
        if self._stalled.get(name, at) > at:
            return  # stalled again for longer: a later resume
        self._stalled.pop(name, None)
        # One pass, as the aio runtime's: a host's overdue presence packet leaves, what
        # waited is read, then the overdue timer runs, then what the node queued leaves.
        beat = getattr(self.nodes[name], "beat", None)
        if name in self.alive and beat is not None and beat(at):
            self._send(name, self.nodes[name].datagrams_to_send(at))
        for kind, payload in self._held.pop(name, []):
            self._dispatch(kind, payload, at, flush=False)
        timer = self._timers.pop(name, None)
        if name in self.alive:
            if timer is not None and timer <= at:
                self.nodes[name].handle_timer(at)
            self._flush(name)

    def _dispatch(self, kind: str, payload: Any, at: float, *, flush: bool = True) -> None:
        """Hand one queued event to its node and (``flush``) send what it queued."""
        if kind == "packet":
            dst, src, data = payload
            if dst not in self.alive:
                return
            node = self.nodes[dst]
            self.delivered += 1
            node.receive_datagram(data, src, at)
            if flush:
                self._flush(dst)
        elif kind == "train":
            dst, src, train, size = payload
            switch = self._switches.get(dst)
            if dst not in self.alive or not isinstance(switch, FlowSwitch):
                return
            self.delivered += (len(train) + size - 1) // size
            hop = switch.route_train(train, size, src, at)
            if hop is not None:  # routed whole: on to the next hop, after what it queued
                self._send(dst, switch.datagrams_to_send(at))
                self._send(dst, [(hop, bytes(train[o : o + size])) for o in range(0, len(train), size)])
            if flush:
                self._flush(dst)
        elif kind == "to-controller":
            src, body = payload
            if not self.controller_alive:
                return
            self.controller.receive_message(src, control.decode(body), at)
            self._flush_controller()
        elif kind == "to-node":
            dst, body = payload
            if len(body) > control.MAX_FRAME:
                # A stream's receiver refuses such a frame (docs/protocol.md §6.6): so does the sim.
                self.stats[dst]["control-frame-too-large"] += 1
                return
            if dst in self.alive:
                self.nodes[dst].receive_control(control.decode(body), at)
                if flush:
                    self._flush(dst)
        elif kind == "timer":
            name = payload
            if self._timers.get(name) != at:
                return  # superseded
            del self._timers[name]
            if name == "controller":
                if not self.controller_alive:
                    return
                self.controller.handle_timer(at)
                self._flush_controller()
            elif name in self.alive:
                self.nodes[name].handle_timer(at)
                self._flush(name)

    def _flush(self, name: str) -> None:
        """Take everything a node queued: events, control records, datagrams; re-arm its timer."""
        node = self.nodes[name]
        if name not in self.alive:
            return
        while (event := node.next_event()) is not None:
            if isinstance(event, HostRelocated):
                # The host is plugged into its new gateway (VM migration, mobility).
                for key in ((name, event.gateway), (event.gateway, name)):
                    self.links.setdefault(key, SimLink(self.topology.local_delay))
            handler = self.handlers.get(name)
            if handler is not None:
                handler(self._hosts[name], event, self.now)
            elif name in self.events:
                self.events[name].append(event)
        for message in node.control_to_send():
            self._push(self.now + self.control_delay, "to-controller", (name, control.encode(message)))
        self._send(name, node.datagrams_to_send(self.now))
        timer = node.get_timer()
        if timer is not None and self._timers.get(name) != timer:
            self._timers[name] = timer
            self._push(timer, "timer", name)

    def _send(self, name: str, out: list[Datagram]) -> None:
        """Put a node's datagrams on its links: trains to flow switches where the link is
        plain, else one by one through the link's delay, jitter, loss, duplication, queue."""
        train: list[Packet] = []
        train_port = ""
        for port, data in out:
            link = self.links.get((name, port))
            if link is None:
                self.stats[name]["no-link"] += 1
                continue
            if (
                port in self._switches
                and link.up
                and not (link.loss or link.jitter or link.duplicate or link.bandwidth or link.mtu)
            ):
                if train and (
                    port != train_port or len(data) > len(train[0]) or len(train[-1]) < len(train[0])
                ):
                    self._send_train(name, train_port, train)
                    train = []
                train.append(data)
                train_port = port
                continue
            if train:
                self._send_train(name, train_port, train)
                train = []
            self._send_one(name, port, link, data)
        if train:
            self._send_train(name, train_port, train)

    def _send_train(self, name: str, port: str, packets: list[Packet]) -> None:
        link = self.links[(name, port)]
        if len(packets) == 1 or not isinstance(self._switches.get(port), FlowSwitch):
            for data in packets:
                self._send_one(name, port, link, data)
            return
        link.sent += len(packets)
        train = bytearray(b"".join(packets))
        self._push(self.now + link.delay, "train", (port, name, train, len(packets[0])))

    def _send_one(self, name: str, port: str, link: SimLink, data: Packet) -> None:
        link.sent += 1
        if not link.up or (link.loss and self.rng.random() < link.loss):
            link.lost += 1
            return
        if link.mtu and len(data) > link.mtu - 28:
            link.lost += 1  # too big for the link (its MTU counts the IPv4 and UDP headers)
            return
        departure = self.now
        if link.bandwidth:
            start = max(self.now, link.busy_until)
            if start - self.now > link.max_queue:
                link.lost += 1  # the queue is full: drop-tail
                return
            link.busy_until = departure = start + len(data) * 8 / link.bandwidth
        copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
        for _ in range(copies):
            delay = link.delay + (self.rng.random() * link.jitter if link.jitter else 0.0)
            self._push(departure + delay, "packet", (port, name, bytes(data)))

    def _flush_controller(self) -> None:
        for dst, message in controller_outputs(self.controller, self.store):
            self._push(self.now + self.control_delay, "to-node", (dst, control.encode(message)))
        self._schedule_controller_timer()

    def _schedule_controller_timer(self) -> None:
        timer = self.controller.get_timer()
        if timer is not None and self._timers.get("controller") != timer:
            self._timers["controller"] = timer
            self._push(timer, "timer", "controller")

    # -- convenience ---------------------------------------------------------------------

    def settle(self, timeout: float = 1.0) -> None:
        """Run until every host is registered and every switch holds tables."""
        ok = self.run_while(lambda: not self.ready(), timeout=timeout)
        if not ok:
            raise RuntimeError("network did not come up within the timeout")

    def ready(self) -> bool:
        """Every live node is ready: switches hold tables, hosts are registered."""
        return all(node.ready for name, node in self.nodes.items() if name in self.alive)
