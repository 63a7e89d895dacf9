"""The flow switch: routes on DC ID, then Host ID; gateway of its hosts (docs/protocol.md §3.3).

Per packet it reads two fixed-offset fields, does one or two dict lookups and rewrites the
TTL byte; it never builds a ``Header`` on the fast path and keeps no per-flow state. Packets
it cannot route on IDs go to an object switch:

* no DC ID, or no Host ID in this DC -> this DC's object switch refines them;
* a Host ID of this DC that is gone (dead, drained or unknown) -> the Host ID is cleared,
  ``REDIRECTED`` is set, and the object switch re-resolves the same Flow ID (§5.1) -- unless
  the packet is ``TO_CLIENT`` (a server's): a client is not found by object, it is dropped;
* a Host ID that moved to another DC -> the DC ID is rewritten and the sender is told to
  refine (a ``REFINE`` signal, §5.3).

It also watches the hosts it is the gateway of (``attached``): any packet from one is a sign
of life (so a busy host whose presence packets are lost in a full queue is not taken for
dead), and each also sends a presence packet every heartbeat interval, which the switch
takes and drops. A host silent for
``presence_timeout`` is reported down to the controller, a host heard again up
(``HostLiveness``, §6.2) -- only changes, so the controller's load follows churn, not hosts.
After a full sync every attached host is reported again (the controller may be new).
Silence the switch could not hear is not the hosts' fault: a check that runs late (its own
loop or process stalled) sweeps nothing, moves every deadline by the stalled time and sweeps
at the next check, once the runtime has read what waited (``liveness_stalls_forgiven_total``).

A runtime that reads *trains* (several datagrams of one underlay flow in one buffer, the
kernel's GRO) hands them to ``route_train``: every header is checked as above, and when all
of them go to one next hop the train is forwarded whole, in place (§3.3). A train is a sign
of life of its sender like any packet; one holding a presence packet is taken apart.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import MalformedPacket
from ..wire import control
from ..wire import header as wire_header
from ..wire import signal as wire_signal
from ..wire import stream as wire_stream
from ..wire.header import (
    DST_LOCATOR,
    DST_OFFSET,
    DST_ROUTE,
    FLAGS_OFFSET,
    HEADER_LEN,
    HOP,
    ROUTING,
    TTL_OFFSET,
    VERSION,
    Flags,
    Proto,
)
from .events import Packet, TraceHop, Train
from .metrics import MetricKind, Sample, define
from .switch import Switch

__all__ = ["CHECKS", "FORWARDED", "FORWARDED_BYTES", "HOSTS_REPORTED_DOWN", "STALLS_FORGIVEN", "FlowSwitch"]

FORWARDED = define(
    "forwarded_packets_total", MetricKind.COUNTER, "Packets a flow switch sent on.", unit="packets"
)
STALLS_FORGIVEN = define(
    "liveness_stalls_forgiven_total",
    MetricKind.COUNTER,
    "Liveness checks of a flow switch that ran late (its own loop or process stalled): the "
    "stalled time was not counted as its hosts' silence (docs/protocol.md §6.2).",
)
HOSTS_REPORTED_DOWN = define(
    "hosts_reported_down_total",
    MetricKind.COUNTER,
    "Attached hosts a flow switch reported silent to the controller (docs/protocol.md §6.2).",
)
FORWARDED_BYTES = define(
    "forwarded_bytes_total",
    MetricKind.COUNTER,
    "Bytes of the packets a flow switch sent on (SCAFFOLD header and segment; no UDP/IP).",
    unit="bytes",
)

_PROTOS = frozenset(int(p) for p in Proto)
_UNKNOWN_FLAGS = 0xFF & ~int(Flags.TRACE | Flags.REDIRECTED | Flags.TO_CLIENT)
_TRACE = int(Flags.TRACE)
_REDIRECTED = int(Flags.REDIRECTED)
_PRESENCE = int(Proto.PRESENCE)
#: checks per ``presence_timeout``: a silent host is reported at most a sixth of it late
#: (0.7 s after its last packet with 3 x 0.2 s), before the stall probes that find a new
#: replica (0.25 s, then 0.75 s after the data stopped, docs/protocol.md §5.1)
CHECKS = 6
#: a check more than this many check periods after the previous one ran late: the switch
#: itself was stalled (0.3 s with the defaults; a check that is merely late by less still
#: sweeps, so a switch that is always a little late still detects the dead)
STALLED = 3
#: presence packets from hosts not attached yet that a switch remembers (a bound)
_EARLY_LIMIT = 1024
_TO_CLIENT = int(Flags.TO_CLIENT)
_STREAM = int(Proto.STREAM)
#: where a stream segment's type is, and the type of a reset (docs/protocol.md §4.2)
_RST_AT = HEADER_LEN + wire_stream.TYPE_OFFSET
_RST = int(wire_stream.StreamType.RST)
#: flags that keep a train from being forwarded whole: a traced packet is recorded alone, an
#: unknown flag is dropped alone (a server's TO_CLIENT and REDIRECTED ride along)
_TRAIN_FLAGS = 0xFF & ~(_REDIRECTED | _TO_CLIENT)


class FlowSwitch(Switch):
    """Sans-IO flow switch. Feed ``receive_datagram``; drain ``datagrams_to_send``."""

    role: ClassVar[str] = "flow-switch"
    #: its timer is the liveness check: a runtime reads everything waiting in its socket
    #: before it (what already arrived is not silence, docs/protocol.md §6.2)
    drain_before_timer: ClassVar[bool] = True

    def __init__(self, name: str, dc: str) -> None:
        super().__init__(name, dc)
        self._dc_routes: dict[int, str] = {}
        self._host_routes: dict[int, str] = {}
        self._moved: dict[int, int] = {}
        self.forwarded = 0
        self.forwarded_bytes = 0
        #: attached host -> when it was last heard (or started being watched)
        self._heard: dict[str, float] = {}
        #: attached host -> what the controller was last told (True up, False down)
        self._reported: dict[str, bool] = {}
        #: attached hosts not heard from yet: never reported down (one that has not started
        #: is not dead, and a report of it could overtake its registration)
        self._unheard: set[str] = set()
        #: presence heard from a host before the controller said it is attached here (its
        #: Welcome can overtake this switch's delta): taken as heard once it is attached
        self._early: dict[str, float] = {}
        self._check_at: float | None = None
        #: when the previous liveness check ran (None: the checks are off)
        self._last_check: float | None = None
        self.stalls_forgiven = 0
        self.reported_down = 0

    def metrics(self) -> list[Sample]:
        return [
            *super().metrics(),
            FORWARDED.sample(self.forwarded),
            FORWARDED_BYTES.sample(self.forwarded_bytes),
            STALLS_FORGIVEN.sample(self.stalls_forgiven),
            HOSTS_REPORTED_DOWN.sample(self.reported_down),
        ]

    def tables_changed(self, names: set[str] | None) -> None:
        # The fast path reads plain typed dicts; msgspec already decoded the keys as ints.
        self._dc_routes = self.tables["dc_routes"]  # type: ignore[assignment]
        self._host_routes = self.tables["host_routes"]  # type: ignore[assignment]
        self._moved = self.tables["moved_hosts"]  # type: ignore[assignment]
        if names is None or "attached" in names:
            self._watch(full=names is None)

    # -- liveness of attached hosts (docs/protocol.md §6.2) ------------------------------

    def _watch(self, *, full: bool) -> None:
        attached = self.tables["attached"]
        for host in [h for h in self._heard if h not in attached]:
            del self._heard[host]
            self._reported.pop(host, None)
            self._unheard.discard(host)
        if full:
            self._reported.clear()  # tell a (maybe new) controller everything again
        for name in attached:
            if str(name) not in self._heard:
                early = self._early.pop(str(name), None)
                if early is not None and self._now - early < self.presence_timeout:
                    self._heard[str(name)] = early
                else:
                    self._heard[str(name)] = self._now
                    self._unheard.add(str(name))
        if self._heard and self.presence_timeout > 0:
            if self._check_at is None:  # the checks start (again): as if one ran just now
                self._last_check = self._now - self.presence_timeout / CHECKS
            self._check_at = self._now if full else (self._check_at or self._now)
        else:
            self._check_at = None

    def _presence(self, port: str, now: float) -> None:
        if port not in self._heard:
            self.drops["presence-from-unknown"] += 1
            if len(self._early) >= _EARLY_LIMIT:
                self._early.clear()
            self._early[port] = now
            return
        self._heard[port] = now
        self._unheard.discard(port)
        if self._reported.get(port) is not True:
            self._reported[port] = True
            self._control_out.append(control.HostLiveness(node=self.name, up=[port]))

    def get_timer(self) -> float | None:
        return self._check_at

    def handle_timer(self, now: float) -> None:
        """Report the attached hosts silent for longer than ``presence_timeout``; one heard
        again is reported up by its next presence packet.

        A check that comes more than ``STALLED`` check periods after the previous one means
        the switch itself was stalled (a busy event loop, a paused process, a starved CPU):
        the packets of that time may still wait unread in its socket. It reports nothing
        then: every deadline moves by the stalled time (the excess over one period), and the
        next check, one period later, sweeps -- after the runtime has read what waited.
        """
        if self._check_at is None or now < self._check_at:
            return
        limit = self.presence_timeout
        period = limit / CHECKS
        last, self._last_check = self._last_check, now
        heard = self._heard
        if last is not None and now - last > STALLED * period:
            stalled = now - last - period
            for host, at in heard.items():
                heard[host] = min(at + stalled, now)
            self.stalls_forgiven += 1
        else:
            down = [
                host
                for host, at in heard.items()
                if now - at > limit and self._reported.get(host) is not False and host not in self._unheard
            ]
            for host in down:
                self._reported[host] = False
            if down:
                self.reported_down += len(down)
                self._control_out.append(control.HostLiveness(node=self.name, down=down))
        if heard and limit > 0:
            self._check_at = now + period
        else:
            self._check_at = self._last_check = None

    def receive_datagram(self, data: Packet, port: str, now: float) -> None:
        """Route one packet that arrived from neighbour ``port``. Never raises."""
        if len(data) < HEADER_LEN:
            self.drops["truncated"] += 1
            return
        version, proto, flags, ttl, dc, host = ROUTING.unpack_from(data)
        if version != VERSION:
            self.drops["bad-version"] += 1
            return
        if proto not in _PROTOS:
            self.drops["bad-proto"] += 1
            return
        if flags & _UNKNOWN_FLAGS:
            self.drops["bad-flags"] += 1
            return
        heard = self._heard
        if port in heard:
            heard[port] = now  # an attached host is alive (§6.2)
        if proto == _PRESENCE:
            self._presence(port, now)
            return
        if ttl <= 1:
            self.drops["ttl-expired"] += 1
            return
        if not self.synced:
            self.drops["no-tables"] += 1
            return
        buf = bytearray(data)
        buf[TTL_OFFSET] = ttl - 1
        if dc == self.dc_id:
            if host:
                hop = self._host_routes.get(host)
                if hop is None:
                    hop = self._reroute(buf, host)
                    if hop is None:
                        return
            else:
                hop = self.object_switch
        elif dc:
            hop = self._dc_routes.get(dc)
            if hop is None:
                self.drops["no-route"] += 1
                self._signal_source(buf, wire_signal.Signal(wire_signal.SignalType.UNREACHABLE, dc))
                return
        else:
            hop = self.object_switch
        if flags & _TRACE:
            self._record(buf, now)
        self.forwarded += 1
        self.forwarded_bytes += len(buf)
        self._out.append((hop, buf))

    def route_train(self, train: Train, size: int, port: str, now: float) -> str | None:
        """Route a train from neighbour ``port``: packets of ``size`` bytes back to back (the
        last may be shorter). Never raises.

        Every header is checked as in ``receive_datagram``. If all the packets are valid and
        go to one next hop on the plain route (no trace, no presence, orphan, stale DC or
        signal), their TTLs are decremented in ``train`` itself, they count as forwarded, the
        sender (if attached here) counts as heard, and that hop is returned: the caller sends
        the train on whole, after what ``datagrams_to_send`` holds. Otherwise every packet is
        handled one by one as ``receive_datagram`` would (queued, taken or dropped) and None
        is returned.
        """
        total = len(train)
        if not 0 < size <= total:
            size = max(total, 1)  # one packet
        hop: str | None = None
        if self.synced and size >= HEADER_LEN:
            dc_id = self.dc_id
            host_routes = self._host_routes
            dc_routes = self._dc_routes
            unpack = ROUTING.unpack_from
            for offset in range(0, total, size):
                if total - offset < HEADER_LEN:
                    hop = None
                    break
                version, proto, flags, ttl, dc, host = unpack(train, offset)
                if (
                    version != VERSION
                    or proto not in _PROTOS
                    or proto == _PRESENCE
                    or flags & _TRAIN_FLAGS
                    or ttl <= 1
                ):
                    hop = None
                    break
                if dc == dc_id:
                    next_hop = host_routes.get(host) if host else self.object_switch
                elif dc:
                    next_hop = dc_routes.get(dc)
                else:
                    next_hop = self.object_switch
                if next_hop is None or (hop is not None and next_hop != hop):
                    hop = None
                    break
                hop = next_hop
        if hop is not None:
            heard = self._heard
            if port in heard:
                heard[port] = now  # an attached host is alive (§6.2), as in receive_datagram
            for offset in range(TTL_OFFSET, total, size):
                train[offset] -= 1
            self.forwarded += (total + size - 1) // size
            self.forwarded_bytes += total
            return hop
        receive = self.receive_datagram
        for offset in range(0, total, size):
            receive(bytes(train[offset : offset + size]), port, now)
        return None

    def _reroute(self, buf: bytearray, host: int) -> str | None:
        """A Host ID of this DC with no route: moved away, or gone (orphaned flow)."""
        moved_to = self._moved.get(host)
        if moved_to is not None:
            # Stale DC ID (VM migration): correct it in flight and tell the sender (§5.3).
            hop = self._dc_routes.get(moved_to)
            if hop is None:
                self.drops["no-route"] += 1
                return None
            self.counters["stale-dc-corrected"] += 1
            DST_ROUTE.pack_into(buf, DST_OFFSET, moved_to, host)
            self._signal_source(buf, wire_signal.Signal(wire_signal.SignalType.REFINE, host, moved_to))
            return hop
        if buf[FLAGS_OFFSET] & _TO_CLIENT:
            # A server's packet to a client host that is gone -- or only looks gone (missed
            # heartbeats of a busy process). An object lookup would hand it to some replica
            # of the object, which would take it for a client's and "take over" the flow
            # from its own server. The server's RTO repeats it once the client is back.
            self.drops["orphan-to-client"] += 1
            return None
        if buf[1] == _STREAM and len(buf) > _RST_AT and buf[_RST_AT] == _RST:
            # A client's RST for a server's copy of the flow (one it superseded, §3.4) whose
            # host looks gone: it woke from a stall before its gateway's "up" reached the
            # tables. Re-resolved, it would reach the replica that took the flow over and
            # reset the healthy copy; it is meant for that one copy only.
            self.drops["orphan-rst"] += 1
            return None
        # Orphan: keep the Object ID and Flow ID, forget where it was going (§5.1).
        self.counters["orphan-redirected"] += 1
        DST_LOCATOR.pack_into(buf, DST_OFFSET, self.dc_id, 0, 0)
        buf[FLAGS_OFFSET] |= _REDIRECTED
        return self.object_switch

    def _signal_source(self, buf: bytearray, signal: wire_signal.Signal) -> None:
        """Send ``signal`` back to the packet's source host (never for a signal itself)."""
        try:
            h = wire_header.parse(bytes(buf))
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        if h.proto == Proto.SIGNAL or not h.src_dc or not h.src_host:
            return
        packet = wire_header.encode(h.reply(Proto.SIGNAL, self.dc_id), wire_signal.encode(signal))
        routes = self._host_routes if h.src_dc == self.dc_id else self._dc_routes
        hop = routes.get(h.src_host if h.src_dc == self.dc_id else h.src_dc)
        if hop is not None:
            self._out.append((hop, packet))

    def _record(self, buf: bytearray, now: float) -> None:
        ttl, flow, obj, dc, host, socket = HOP.unpack_from(buf)
        self.trace.append(TraceHop(self.name, self.role, flow, obj, dc, host, socket, ttl, now))
