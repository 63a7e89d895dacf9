"""Sim applications for churn tests: a resumable pattern-content server and verifying clients.

They are event callbacks (``SimNetwork.on_event``) working on ``HostStack`` directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from scaffold.apps.pattern import PatternChecker, pattern
from scaffold.core.host import (
    DatagramReceived,
    FlowAccepted,
    HostEvent,
    HostStack,
    StreamEventFor,
)
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork
from scaffold.transport import ConnectionTerminated, EndOfStream

CONTENT = ObjectId.from_name("content")
CHUNK = 32 * 1024


@dataclass
class ContentServer:
    """Serves ``size`` bytes of the pattern on every stream, from whatever offset the stream
    is at: a new flow starts at 0, a taken-over or migrated one where the client is."""

    size: int

    def __call__(self, stack: HostStack, event: HostEvent, now: float) -> None:
        if isinstance(event, DatagramReceived):
            stack.send_datagram(event.socket_id, event.data, now)
            return
        socket_id = event.socket_id if isinstance(event, StreamEventFor | FlowAccepted) else None
        if socket_id is None or socket_id not in stack.flows:
            return
        transport = stack.flows[socket_id].transport
        if transport is None or transport.state.value in ("resuming", "syn-received", "idle"):
            return
        if isinstance(event, StreamEventFor) and isinstance(event.event, EndOfStream):
            return
        self.fill(stack, socket_id, now)

    def fill(self, stack: HostStack, socket_id: int, now: float) -> None:
        transport = stack.flows[socket_id].transport
        assert transport is not None
        while transport.send_offset < self.size:
            offset = transport.send_offset
            want = min(CHUNK, self.size - offset)
            # A short write marks the transport blocked: SendSpaceAvailable calls us back.
            if stack.stream_send(socket_id, pattern(offset, want), now) < want:
                break
        if transport.send_offset >= self.size and transport.state.value in ("established", "close-wait"):
            stack.stream_shutdown(socket_id, now)


@dataclass
class Download:
    host: str
    socket_id: int
    checker: PatternChecker = field(default_factory=PatternChecker)
    ended: str = ""
    progress: list[tuple[float, int]] = field(default_factory=list)
    #: Host IDs of every replica that served this download
    servers: list[int] = field(default_factory=list)


@dataclass
class Downloader:
    """Reads every stream it opened, checks the pattern, and records progress over time."""

    downloads: dict[tuple[str, int], Download] = field(default_factory=dict)

    def open(self, net: SimNetwork, host: str, obj: ObjectId = CONTENT) -> Download:
        flow = net.act(host, lambda core, now: core.open_stream(obj, now))
        download = Download(host, flow.socket_id)
        self.downloads[(host, flow.socket_id)] = download
        net.on_event(host, self)
        return download

    def __call__(self, stack: HostStack, event: HostEvent, now: float) -> None:
        if not isinstance(event, StreamEventFor):
            return
        download = self.downloads.get((stack.name, event.socket_id))
        if download is None:
            return
        if isinstance(event.event, ConnectionTerminated):
            download.ended = event.event.reason
            return
        flow = stack.flows.get(event.socket_id)
        if flow is None or flow.transport is None:
            return
        download.servers = list(flow.served_by)
        data = stack.stream_read(event.socket_id, -1, now)
        if data:
            download.checker.feed(data)
            download.progress.append((now, download.checker.offset))
        if isinstance(event.event, EndOfStream):
            stack.stream_close(event.socket_id, now)

    def done(self) -> bool:
        return all(d.ended for d in self.downloads.values())


def serve_content(
    net: SimNetwork, replicas: dict[str, int], size: int, *, resumable: bool = True, policy: str = ""
) -> ContentServer:
    server = ContentServer(size)
    for host, weight in replicas.items():

        def bind(core: HostStack, now: float, w: int = weight) -> None:
            core.bind(CONTENT, w, "content", resumable=resumable, policy=policy)

        net.act(host, bind)
        net.on_event(host, server)
    net.run(0.05)
    return server


def stall(download: Download, since: float) -> float:
    """The longest gap between progress records after ``since`` (virtual seconds)."""
    times = [since] + [t for t, _ in download.progress if t >= since]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def recovery(download: Download, since: float) -> float:
    """How long after ``since`` the download first made progress again (virtual seconds)."""
    after = [t for t, _ in download.progress if t > since]
    return (after[0] - since) if after else float("inf")
