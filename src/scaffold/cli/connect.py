"""``scaffold connect NAME``: netcat on an object name.

It joins the network of ``scaffold up`` (its state file, or ``--network STATE``) as a host of
its own, opens one SCAFFOLD stream to a replica of ``NAME`` and pumps standard input into
the stream and the stream to standard output. End of input half-closes the stream (the
service reads EOF and can still answer); the command ends when the service ends the stream.

Exit status: 0 when the service ended the stream cleanly; 1 when the stream broke after it
was open (a reset, a path that failed and no replica could take over); 2 when it could not
be opened (no network, no replica of ``NAME``, no answer) -- with one line on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..api.streams import StreamReader, StreamWriter
from ..errors import ObjectNotFound, PathError, ScaffoldError

__all__ = ["add_commands"]

CHUNK = 64 * 1024


def add_commands(sub: Any) -> None:
    connect = sub.add_parser(
        "connect",
        help="netcat on an object name: standard input to a stream to NAME, the stream to standard output",
        description=(__doc__ or "").split("\n\n")[0],
    )
    connect.add_argument("name", help="the object's name (or obj: text)")
    connect.add_argument(
        "--network",
        metavar="STATE",
        help="state file of a `scaffold up` network (default .scaffold/state.json)",
    )
    connect.add_argument(
        "--as", dest="as_name", metavar="NAME", help="this host's name (default connect-PID)"
    )
    connect.add_argument("--gateway", metavar="SWITCH", help="the flow switch to attach to")
    connect.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for a replica to answer"
    )
    connect.set_defaults(func=_connect)


def _connect(args: argparse.Namespace) -> int:
    from ..runtime.aio import run

    code: int = run(_main(args))
    return code


async def _main(args: argparse.Namespace) -> int:
    from ..deploy.joining import join_from_state

    host = await join_from_state(
        args.as_name or f"connect-{os.getpid()}", state=args.network, gateway=args.gateway
    )
    try:
        try:
            reader, writer = await host.open_connection(args.name, timeout=args.timeout)
        except TimeoutError:
            raise ScaffoldError(f"no replica of {args.name!r} answered within {args.timeout:g} s") from None
        except ObjectNotFound:
            raise ObjectNotFound(
                f"nothing serves {args.name!r}: no replica is registered (`scaffold status` lists objects)"
            ) from None
        return await _pump(reader, writer)
    finally:
        await host.close()


async def _pump(reader: StreamReader, writer: StreamWriter) -> int:
    """Standard input to ``writer``, ``reader`` to standard output, until the service ends
    the stream; the exit status."""
    stdin = await _input(asyncio.get_running_loop())
    upload = asyncio.create_task(_upload(stdin, writer))
    try:
        while data := await reader.read(CHUNK):
            await _write_out(data)
    except PathError as exc:
        print(f"error: the stream broke: {exc}", file=sys.stderr)
        return 1
    finally:
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError, ScaffoldError, OSError):
            await upload
    writer.close()
    with contextlib.suppress(ScaffoldError):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
    return 0


async def _upload(read: Callable[[], Awaitable[bytes]], writer: StreamWriter) -> None:
    while data := await read():
        writer.write(data)
        await writer.drain()
    writer.write_eof()  # the service reads EOF; its answer still comes back


async def _input(loop: asyncio.AbstractEventLoop) -> Callable[[], Awaitable[bytes]]:
    """An async ``read()`` of standard input (``b""`` at its end)."""
    fd = sys.stdin.fileno()
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        reader = asyncio.StreamReader(limit=CHUNK)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        except (OSError, ValueError):
            pass  # a device the loop cannot watch (/dev/null): it never blocks
        else:
            return lambda: reader.read(CHUNK)

    # A regular file (or such a device) never blocks, and the event loop cannot watch it.
    async def read_file() -> bytes:
        return os.read(fd, CHUNK)

    return read_file


async def _write_out(data: bytes) -> None:
    """Write ``data`` to standard output, all of it, on a thread: a slow reader must not stop
    the event loop, which runs the host's heartbeats and transport."""

    def write_all() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(sys.stdout.fileno(), view) :]

    await asyncio.to_thread(write_all)
