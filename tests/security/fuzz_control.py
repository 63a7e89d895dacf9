"""A control-record fuzzer: random and mutated records made by the project's own encoders,
sent over a valid (host) credential to a controller, reconnecting whenever it is cut.

    python tests/security/fuzz_control.py HOST:PORT CREDENTIALS_DIR SECONDS SEED

It prints one JSON line at the end: records and bytes sent, connections made.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import sys
import time
from collections.abc import Callable

from scaffold.runtime.tls import Credentials, client_context
from scaffold.wire import control
from scaffold.wire.control import ControlMessage

Make = Callable[[random.Random], ControlMessage]


def text(rng: random.Random) -> str:
    choices = ["fuzzer", "dc1-h1", "dc1-fs1", "", "[/oops]", "../../x", "é" * 40, "x" * 300, "\x00", "web"]
    return (
        rng.choice(choices)
        if rng.random() < 0.7
        else "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(8))
    )


def number(rng: random.Random) -> int:
    return rng.choice([0, 1, -1, 65535, 65536, 2**31, 2**63 - 1, 2**64 - 1, rng.randrange(1 << 16)])


def hexid(rng: random.Random) -> str:
    return rng.choice(["4b" * 32, "00" * 32, "zz" * 32, rng.randbytes(32).hex(), "ab"])


def address(rng: random.Random) -> tuple[str, int]:
    return (rng.choice(["127.0.0.1", "0.0.0.0", "10.9.9.9", "::1", "evil.example", ""]), number(rng))


MAKERS: list[Make] = [
    lambda r: control.Hello(
        text(r), r.choice(["host", "flow-switch", "object-switch", "operator"]), text(r), text(r), address(r)
    ),
    lambda r: control.Hello("fuzzer", "host", gateway="dc1-fs1", address=("127.0.0.1", 9)),
    lambda r: control.Heartbeat(text(r), number(r)),
    lambda r: control.Bind(hexid(r), number(r), text(r), r.randbytes(r.randrange(200))),
    lambda r: control.Unbind(hexid(r)),
    lambda r: control.SyncRequest(text(r), number(r)),
    lambda r: control.AdminRequest(number(r), text(r), {text(r): r.choice([number(r), text(r), None, 1.5])}),
    lambda r: control.AdminRequest(
        number(r),
        r.choice(["status", "counters", "drain", "set-weight", "migrate-object"]),
        {"host": text(r), "object": "web", "weight": number(r)},
    ),
    lambda r: control.NodeStats(
        text(r), text(r), [control.MetricSample(text(r), number(r), {text(r): text(r)})]
    ),
    lambda r: control.FlowsOut(
        hexid(r), text(r), text(r), number(r), r.random() < 0.5, [r.randbytes(64)], r.random() < 0.5
    ),
    lambda r: control.DrainDone(hexid(r)),
    lambda r: control.TableSync(number(r), number(r), control.SwitchTables()),
    lambda r: control.Refused(text(r)),
]


def mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        if kind == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif kind == 2:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 16))
        else:
            data += rng.randbytes(rng.randrange(1, 64))
    return bytes(data)


def frame(rng: random.Random) -> bytes:
    body = control.encode(rng.choice(MAKERS)(rng))
    if rng.random() < 0.1:  # mostly records that decode: they reach the handlers
        body = mutate(rng, body)
    length = len(body) if rng.random() < 0.97 else rng.choice([0, len(body) + 7, 2**32 - 1])
    return control.FRAME.pack(length) + body


async def main(controller: str, credentials: str, seconds: float, seed: int) -> None:
    host, _, port = controller.rpartition(":")
    rng = random.Random(seed)
    context: ssl.SSLContext = client_context(Credentials(credentials))
    sent = frames = connections = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=context), 5)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        connections += 1
        drain = asyncio.create_task(_discard(reader))
        try:
            while time.monotonic() < deadline and not drain.done():
                burst = b"".join(frame(rng) for _ in range(rng.randrange(1, 8)))
                writer.write(burst)
                await writer.drain()
                sent += len(burst)
                frames += 1
                await asyncio.sleep(0.002)
        except (OSError, ConnectionError):
            pass
        writer.close()
        drain.cancel()
    print(json.dumps({"bytes": sent, "bursts": frames, "connections": connections}))


async def _discard(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except (OSError, ConnectionError):
        pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
