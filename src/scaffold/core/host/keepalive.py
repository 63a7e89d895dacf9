"""Keepalives in bundles: the liveness of many streams for the cost of a few packets
(docs/protocol.md §4.4).

Every stream's keepalive, stall probe and idle timeout sit in the host's timer wheel
(``timers.py``), rounded up to its tick, so the streams due in one tick are handled in one
wake-up. Their keepalives do not go out one packet per stream: the host groups them by peer
host and sends each group as one liveness PROBE (``wire/liveness.py``) listing each flow's
Socket ID at the peer and its nonce. The peer refreshes every flow it holds under that Socket
ID and nonce and answers with the list of those; each answered flow counts as having heard
from its peer (``StreamConnection.peer_alive``).

A bundle never changes where a flow's peer is, and a lost one costs little: a flow whose
entry is left out of the answer, or not answered in time, sends its own KEEPALIVE, which the
network re-resolves like any packet of the flow -- the path to a takeover when the peer host
died (§5.1). Every PROBE is answered, even by a host that holds none of its flows (a probe
for a dead host is re-resolved to a surviving replica, whose empty answer sends the prober's
flows to their takeover at once). An answer that comes late still counts. A bundle answers
only flows whose peer is exactly the bundle's source.

Held streams (a client in an exchange, §4.2.4) send only their first stall probe of a silence
as their own entry; the later ones are one ``PeerWatch`` per peer host: a one-entry PROBE on
the newest joiner's doubling schedule. Answered by the peer, it covers them all; answered by
another host (re-resolved: the peer is gone), or unanswered three times in a row, every
stream with that peer probes alone, each re-resolved by its own Flow ID (§4.4, §5.1).
"""

from __future__ import annotations

from ...errors import MalformedPacket
from ...transport import StreamOptions, StreamState
from ...transport.liveness import Due
from ...wire import header as wire_header
from ...wire import liveness as wire_liveness
from ...wire.header import Flags, Header, Proto
from ...wire.liveness import MAX_ENTRIES, Bundle, BundleType
from .base import BUNDLES, WATCHES, HostStackBase
from .flows import Flow, PeerWatch, PendingBundle

__all__ = ["BUNDLE_ANSWER_MIN", "Keepalives"]

#: a bundle's answer is awaited at least this long (seconds), and at least four smoothed
#: RTTs, before its flows probe alone; a loaded peer answers late, and a dead one's probe
#: is usually answered (empty) by a surviving replica sooner than that
BUNDLE_ANSWER_MIN = 0.5
#: an answer is still taken this long after its flows probed alone (seconds)
BUNDLE_LATE = 5.0
#: bundles waiting for their answer, at most (each holds at most MAX_ENTRIES Socket IDs)
MAX_AWAITING = 4096
#: a watched peer host's probes unanswered in a row before its streams probe alone
WATCH_MISSES = 3


class Keepalives(HostStackBase):
    """The liveness part of ``HostStack``: run the timer wheel, bundle the keepalives."""

    def _run_liveness(self, keys: list[int], now: float) -> None:
        """Run the liveness timers of the streams whose wheel tick is due."""
        probes: dict[tuple[int, int], list[Flow]] = {}
        streams, timers, wheel = self._streams, self._timers, self._wheel
        for key in keys:
            flow = streams.get(key)
            if flow is None:
                continue
            transport = flow.transport
            if transport is None:
                continue
            bundled = bool(flow.peer_host and flow.peer_socket)
            due = transport.handle_liveness(now, handover=bundled)
            if due:
                if bundled:
                    peer = (flow.peer_dc, flow.peer_host)
                    bundle = probes.get(peer)
                    if bundle is None:
                        probes[peer] = [flow]
                    else:
                        bundle.append(flow)
                    if due is Due.HANDED_OVER:
                        self._join_watch(peer, flow, transport.options, now)
                else:
                    transport.probe(now)
                    self._pump(flow, now)
                    continue
            elif transport.state is StreamState.CLOSED:
                self._pump(flow, now)  # the idle timeout: its events, then it is forgotten
                continue
            # Its deadlines to file again (probed in a bundle, or not due: refreshed by a
            # bundle since it was filed). ``handle_liveness`` cached the new coarse one.
            exact, coarse = transport.deadlines()
            timers.arm(key, exact)
            wheel.arm(key, coarse)
        for peer, flows in probes.items():
            for start in range(0, len(flows), MAX_ENTRIES):
                self._send_probe(peer, flows[start : start + MAX_ENTRIES], now)

    def _send_probe(self, peer: tuple[int, int], flows: list[Flow], now: float, watch: bool = False) -> int:
        """Send one PROBE listing ``flows``; its bundle id (0: none went, the flows probed
        alone)."""
        if len(self._awaiting) >= MAX_AWAITING:
            # Unanswered bundles pile up (the peer is gone): probe each flow the old way.
            for flow in flows:
                self._probe_alone(flow, now)
            return 0
        self._bundle_seq = self._bundle_seq % 0xFFFFFFFF + 1
        bundle = Bundle(BundleType.PROBE, self._bundle_seq, [(f.peer_socket, f.nonce) for f in flows])
        about = flows[0]  # a header names a flow and an Object ID: one of the bundle's
        h = Header(
            proto=Proto.LIVENESS,
            flow=about.flow,
            obj=about.obj,
            dst_dc=peer[0],
            dst_host=peer[1],
            src_dc=self.dc_id,
            src_host=self.host_id,
        )
        self._out.append((self.gateway, wire_header.encode(h, wire_liveness.encode(bundle))))
        srtt = max((f.transport.smoothed_rtt or 0.0 for f in flows if f.transport is not None), default=0.0)
        expiry = now + max(BUNDLE_ANSWER_MIN, 4 * srtt)
        sockets = [f.socket_id for f in flows]
        self._awaiting[bundle.bundle_id] = PendingBundle(peer, sockets, now, expiry, watch=watch)
        if self._timers.get(BUNDLES) is None:
            self._timers.arm(BUNDLES, expiry)
        self.counters["keepalives-bundled"] += len(flows)
        return bundle.bundle_id

    # -- watching peer hosts for held streams --------------------------------------------------

    def _join_watch(self, peer: tuple[int, int], flow: Flow, options: StreamOptions, now: float) -> None:
        """A held stream's first stall probe of a silence went out: its later ones are the
        watch's of its peer host, which restarts its schedule for it (the newest joiner
        sets the pace, so every member is probed at least as often as its own schedule
        would: docs/protocol.md §4.4)."""
        stall, keepalive = options.stall_probe, options.keepalive
        assert stall is not None and keepalive is not None  # HANDED_OVER needs both
        first = now + 2 * stall
        watch = self._watches.get(peer)
        if watch is None:
            self._watches[peer] = watch = PeerWatch(flow, 2 * stall, first, now + keepalive)
        else:
            watch.about, watch.interval, watch.until = flow, 2 * stall, now + keepalive
            watch.due = min(watch.due, first)
        armed = self._timers.get(WATCHES)
        if armed is None or first < armed:
            self._timers.arm(WATCHES, first)

    def _watches_due(self, now: float) -> None:
        """Probe the watched peer hosts whose turn it is, one entry each; end the watches
        whose members' own keepalives have taken over."""
        for peer, watch in list(self._watches.items()):
            if watch.due > now:
                continue
            if now >= watch.until:
                del self._watches[peer]
                continue
            if not watch.pending:  # else the one out is still awaited: its expiry retries
                self._probe_watch(peer, watch, now)
            watch.interval *= 2
            watch.due = now + watch.interval
        if self._watches:
            self._timers.arm(WATCHES, min(w.due for w in self._watches.values()))

    def _probe_watch(self, peer: tuple[int, int], watch: PeerWatch, now: float) -> None:
        watch.pending = self._send_probe(peer, [watch.about], now, watch=True)
        self.counters["peer-watch-probes"] += 1

    def _watch_missed(self, waiting: PendingBundle, bundle_id: int, now: float) -> None:
        """A watch's probe went unanswered: probe again at once -- a dead host's probe is
        re-resolved (and answered by another host) once the controller removed it (§5.1);
        after ``WATCH_MISSES`` in a row, every stream with that peer probes alone."""
        watch = self._watches.get(waiting.peer)
        if watch is None or watch.pending != bundle_id:
            return
        watch.pending = 0
        watch.misses += 1
        if watch.misses >= WATCH_MISSES:
            self._peer_gone(waiting.peer, now)
        else:
            self._probe_watch(waiting.peer, watch, now)

    def _peer_gone(self, peer: tuple[int, int], now: float) -> None:
        """The watched peer host looks gone: every stream with it probes alone, and each
        probe is re-resolved by its own Flow ID to the replica that takes it over (§5.1)."""
        del self._watches[peer]
        self.counters["peer-watch-lost"] += 1
        for flow in list(self._streams.values()):
            if flow.peer_host == peer[1] and flow.peer_dc == peer[0]:
                self._probe_alone(flow, now)

    def _probe_alone(self, flow: Flow, now: float) -> None:
        """A keepalive of the flow's own (a KEEPALIVE segment), which the network re-resolves
        if the peer host is gone."""
        if self._streams.get(flow.socket_id) is flow and flow.transport is not None:
            flow.transport.probe(now)
            self._pump(flow, now)
            self.counters["keepalive-alone"] += 1

    def _bundles_expired(self, now: float) -> None:
        """Bundles whose answer did not come: their flows probe alone; a late answer is
        still taken for a while, then forgotten."""
        for bundle_id, waiting in list(self._awaiting.items()):
            if waiting.expiry > now:
                continue
            if waiting.fell_back:
                del self._awaiting[bundle_id]
            else:
                waiting.fell_back = True
                waiting.expiry = now + BUNDLE_LATE
                self._unanswered(waiting, waiting.sockets, now)
                if waiting.watch:
                    self._watch_missed(waiting, bundle_id, now)
        if self._awaiting:
            self._timers.arm(BUNDLES, min(w.expiry for w in self._awaiting.values()))

    def _unanswered(self, waiting: PendingBundle, sockets: list[int], now: float) -> None:
        for socket_id in sockets:
            flow = self._streams.get(socket_id)
            transport = flow.transport if flow is not None else None
            if flow is not None and transport is not None and transport.last_received < waiting.sent:
                self._probe_alone(flow, now)

    def _receive_liveness(self, h: Header, body: bytes, now: float) -> None:
        try:
            bundle = wire_liveness.parse(body)
        except MalformedPacket as exc:
            self.drops[exc.reason] += 1
            return
        peer = (h.src_dc, h.src_host)
        waiting = None
        if bundle.type is BundleType.ANSWER:
            waiting = self._awaiting.get(bundle.bundle_id)
            if waiting is None:
                self.drops["unexpected-bundle"] += 1
                return
            if waiting.peer != peer:
                # Answered by another host: the network re-resolved the probe, so the peer
                # looks gone. Its entries prove nothing; the flows probe alone at once, and
                # their own keepalives reach a surviving replica (§4.4, §5.1).
                self.drops["unexpected-bundle"] += 1
                del self._awaiting[bundle.bundle_id]
                if waiting.peer in self._watches:
                    # Its held streams wait on the watch: they all probe now.
                    self._peer_gone(waiting.peer, now)
                elif not waiting.fell_back:
                    self._unanswered(waiting, waiting.sockets, now)
                return
            del self._awaiting[bundle.bundle_id]
            if waiting.watch:
                watch = self._watches.get(peer)
                if watch is not None and watch.pending == bundle.bundle_id:
                    watch.pending = watch.misses = 0
        held: list[tuple[int, int]] = []
        streams = self._streams
        for socket_id, nonce in bundle.entries:
            flow = streams.get(socket_id)
            if (
                flow is None
                or flow.nonce != nonce
                or flow.transport is None
                or flow.peer_host != peer[1]
                or flow.peer_dc != peer[0]
            ):
                self.drops["bundle-unknown-flow"] += 1
                continue
            # Its timers move later: they are refiled when their current tick comes (lazily,
            # as the wheel does for every move later), not now. An answer vouches for the
            # moment its probe left: the next keepalive falls on the same tick of the wheel
            # one interval later, not one round trip (and often one more tick) after it.
            flow.transport.peer_alive(waiting.sent if waiting is not None else now)
            held.append((flow.peer_socket, nonce))
        if waiting is not None:
            if not waiting.fell_back:
                # Left out of the answer: the peer does not hold them (there).
                answered = {socket_id for socket_id, _ in bundle.entries}
                self._unanswered(waiting, [s for s in waiting.sockets if s not in answered], now)
        else:
            # Answered even when empty: the prober's flows then probe alone at once.
            answer = Bundle(BundleType.ANSWER, bundle.bundle_id, held)
            # A server's answer to a client host (TO_CLIENT): never re-resolved to a replica.
            reply = h.reply(Proto.LIVENESS, self.dc_id, self.host_id, flags=Flags.TO_CLIENT)
            self._out.append((self.gateway, wire_header.encode(reply, wire_liveness.encode(answer))))
