"""What the attack tests do to a controller: raw control connections, with or without a
certificate, sending records (or bytes) the project's own encoders make; and the checks of
legitimate traffic around them."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.api.host import Host
from scaffold.core.controller.commands import Counters, Status
from scaffold.deploy.joining import join_from_state
from scaffold.deploy.state_file import NetworkState, load_state
from scaffold.errors import MalformedPacket
from scaffold.ids import ObjectId
from scaffold.runtime import admin
from scaffold.runtime.tls import Credentials, client_context
from scaffold.wire import control

TOPOLOGY = """\
name = "attacked"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[datacenter]]
name = "dc2"
hosts = ["dc2-h1", "dc2-h2"]

[[link]]
a = "dc1"
b = "dc2"
delay_ms = 1

[[object]]
name = "web"
replicas = ["dc1-h1", "dc2-h1"]
"""


@dataclass
class UpNetwork:
    """A network from ``scaffold up`` in ``directory``; ``process`` runs all of it."""

    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def state_path(self) -> Path:
        return self.directory / ".scaffold" / "state.json"

    @property
    def state(self) -> NetworkState:
        return load_state(self.state_path)

    def rss(self) -> int:
        """The ``scaffold up`` process's resident memory, bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


Address = tuple[str, int]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(
    address: Address, credentials: Credentials | None = None, context: ssl.SSLContext | None = None
) -> Stream:
    """A control connection: plain TCP, or TLS with ``credentials`` (or any ``context``)."""
    if credentials is not None:
        context = client_context(credentials)
    return await asyncio.wait_for(asyncio.open_connection(*address, ssl=context), 10)


async def exchange(
    stream: Stream, *records: control.ControlMessage | bytes, wait: float = 1.0
) -> tuple[list[control.ControlMessage], bool]:
    """Send ``records`` (framed; bytes as they are), then read what comes back until the
    controller closes the connection (True) or is quiet for ``wait`` seconds (False)."""
    reader, writer = stream
    for record in records:
        writer.write(record if isinstance(record, bytes) else control.frame(record))
    decoder = control.FrameDecoder(control.MAX_FRAME_FROM_CONTROLLER)
    got: list[control.ControlMessage] = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                return got, True
            got += decoder.feed(chunk)
    except TimeoutError:
        return got, False
    except (ConnectionError, ssl.SSLError, MalformedPacket):
        return got, True


async def operator_call(state_path: Path, command: Any) -> Any:
    from scaffold.deploy.state_file import load_state

    state = load_state(state_path)
    return await admin.call(state.controller, command, credentials=state.operator())


async def controller_counts(state_path: Path) -> dict[str, int]:
    """The controller's drops and runtime counts, by reason."""
    counters = await operator_call(state_path, Counters())
    mine = counters["controller"]
    return {**mine["drops"], **mine["runtime"]}


async def replicas(state_path: Path, name: str = "web", *, alive: bool = True) -> set[str]:
    """The hosts registered as replicas of ``name`` (only those alive, unless ``alive`` is False)."""
    status = await operator_call(state_path, Status())
    return {
        r["host"]
        for o in status["objects"]
        if o["name"] == name
        for r in o["replicas"]
        if r["alive"] or not alive
    }


async def echo_ten(state_path: Path, client: str, obj: str = "web") -> list[str]:
    """Ten fresh streams to ``obj`` from a host that joins now; who served each (every byte
    is checked to come back)."""
    host = await join_from_state(client, state=state_path)
    try:
        return await echo_ten_on(host, obj)
    finally:
        await host.close()


async def echo_ten_on(host: Host, obj: str = "web") -> list[str]:
    """Ten fresh streams to ``obj`` from ``host``; who served each."""
    served = []
    for i in range(10):
        reader, writer = await host.open_connection(obj, timeout=10)
        payload = f"ping {i}".encode()
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
        served.append(str(writer.get_extra_info("peer_host")))
        writer.close()
    return served


#: the legitimate replicas of `web` in ``TOPOLOGY``
LEGIT = {"dc1-h1", "dc2-h1"}
WEB = ObjectId.from_name("web").raw.hex()


def issue(net: UpNetwork, name: str, role: str = "host") -> Credentials:
    """A certificate from the network's own CA: the credentials of a compromised node."""
    out = net.directory / "stolen" / name
    subprocess.run(
        [sys.executable, "-m", "scaffold", "credentials", "issue", name, "--role", role, "--out", str(out)],
        cwd=net.directory,
        check=True,
        capture_output=True,
    )
    return Credentials(out)


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)
