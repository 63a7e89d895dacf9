"""The kernel tools the namespace testbed drives: ``ip``, ``nft``, ``tc``, and processes by pid.

Every call is bounded in time. Processes are only ever signalled by the pid we started them
with, after checking the kernel's start time of that pid is still the one we recorded (so a
recycled pid is never hit); nothing here looks processes up by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ...errors import ScaffoldError

__all__ = [
    "KernelError",
    "alive",
    "available",
    "entered",
    "ip_batch",
    "namespaces",
    "nft",
    "process_start_time",
    "run",
    "stop_process",
]

COMMAND_TIMEOUT = 20.0
CLONE_NEWNET = 0x40000000


class KernelError(ScaffoldError):
    """A kernel tool failed (its stderr says why)."""


def available() -> str | None:
    """None if namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"the {tool!r} program is not installed"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a tool and return its stdout.

    Raises:
        KernelError: it failed (with ``check``) or did not finish in time.
    """
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"{' '.join(argv[:4])}: {exc}") from None
    if check and done.returncode != 0:
        raise KernelError(f"{' '.join(argv[:6])}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def ip_batch(lines: list[str], namespace: str | None = None, *, check: bool = True) -> None:
    """Run ``ip`` commands (one per line, without the leading ``ip``) in one process.

    Raises:
        KernelError: a command failed (``ip -batch`` stops at the first failure).
    """
    if not lines:
        return
    argv = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
    run(argv, stdin="\n".join(lines) + "\n", check=check)


def nft(namespace: str, script: str) -> None:
    """Load an nftables script in a namespace (atomically).

    Raises:
        KernelError: nft refused it.
    """
    run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], stdin=script)


def namespaces() -> list[str]:
    """The names of all network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def process_start_time(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), 0 if there is no such
    process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state); the start time is field 22.
    if fields[0] in ("Z", "X"):
        return 0
    return int(fields[19])


def alive(pid: int, start_time: int) -> bool:
    """Whether the process we started as ``pid`` (at ``start_time``) still runs."""
    return pid > 0 and start_time != 0 and process_start_time(pid) == start_time


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(pid: int, start_time: int, *, grace: float = 3.0, kill: bool = False) -> None:
    """Stop our process ``pid``: SIGTERM (or SIGKILL at once with ``kill``), then SIGKILL if
    it is still there after ``grace`` seconds; waits (bounded) until it is gone."""
    if not alive(pid, start_time):
        _reap(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, start_time):
            return
        time.sleep(0.01)
    if alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and alive(pid, start_time):
        _reap(pid)
        time.sleep(0.01)
    _reap(pid)


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run this thread in network namespace ``namespace`` (``setns``) for the block: sockets
    created inside belong to it for good. The block should create sockets and return quickly:
    other asyncio tasks that run meanwhile are in that namespace too.

    Raises:
        KernelError: the namespace does not exist or ``setns`` failed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except OSError as exc:
        raise KernelError(f"no namespace {namespace!r}: {exc.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise KernelError(f"setns({namespace}): {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail for our own
                raise KernelError(f"setns back: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(target)
        os.close(home)
