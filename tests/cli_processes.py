"""Helpers for tests that run the ``scaffold`` command and unmodified programs as processes.

Every process a test starts is recorded and stopped by its pid at the end (SIGTERM, then
SIGKILL); waiting is polling with a deadline on what the process writes.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from scaffold.runtime.tls import CredentialStore

SCAFFOLD = [sys.executable, "-m", "scaffold"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> str:
    """Wait until ``text`` appears in the log ``path`` of ``proc``; the log so far."""
    deadline = time.monotonic() + seconds
    while text not in (log := path.read_text()):
        assert proc.poll() is None, log
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log}"
        time.sleep(0.05)
    return log


def wait_for_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


class Processes:
    """Processes one test started, each with its log in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, *argv: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.directory / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([*argv], cwd=self.directory, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc, log

    def stop(self, proc: subprocess.Popen[bytes], seconds: float = 15) -> int:
        """SIGTERM ``proc`` and wait for it; its exit status."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(seconds)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def run_cli(
    directory: Path, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``scaffold ARGS`` in ``directory``, to completion."""
    return subprocess.run(
        [*SCAFFOLD, *args], cwd=directory, input=stdin, capture_output=True, timeout=timeout, check=False
    )


class Daemons:
    """``scaffold`` daemons of one test, each with its JSON log in ``tmp`` and its own
    credentials from the test's CA; each stopped by its pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = free_port()
        self.controller = ("127.0.0.1", self.port)
        #: the network's CA and every daemon's credentials
        self.credentials = CredentialStore(tmp / "credentials")
        self.operator = self.credentials.operator()

    def creds(self, name: str, role: str) -> str:
        """The credentials directory of daemon ``name`` in ``role``."""
        return str(self.credentials.node(name, role).directory)

    def start(self, name: str, *argv: str) -> None:
        with open(self.tmp / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [*SCAFFOLD, *argv],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.tmp,  # a controller's default store (.scaffold/) is the test's own
            )

    def log(self, name: str, *, only_json: bool = True) -> list[dict[str, object]]:
        """The records process ``name`` wrote, parsed. A daemon writes only JSON lines, so
        by default a line that is not JSON fails the test here; ``only_json=False`` skips
        the human-readable lines of a command such as ``scaffold up``."""
        lines = (self.tmp / f"{name}.log").read_text().splitlines()
        if not only_json:
            lines = [line for line in lines if line.startswith("{")]
        return [json.loads(line) for line in lines if line.strip()]

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every daemon still running (the last started first), then wait; each
        one's exit status (SIGKILLed after 15 s)."""
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=5)
        return codes
