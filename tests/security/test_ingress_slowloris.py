"""Slow and idle clients against ``scaffold ingress`` joined to a ``scaffold up`` network
(docs/gateway.md, "Bounds").

Slowloris: clients that send a request's head a line at a time never finish it. The HTTP
ingress gives a head ``--header-timeout`` (then ``408``), caps its connections
(``--max-connections``: more wait to be accepted) and opens no stream for a request that has not
arrived; the raw ingress closes connections idle for ``--idle-timeout``. Legitimate requests go
through during the attack (waiting, at most, for the header timeout to free a place) and
after it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .dataplane import DataPlane

SLOW = 200
CAP = 300
EXTRA = 150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(directory: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(directory / f"{name}.log", "w")  # noqa: SIM115 - open for the process's lifetime
    return subprocess.Popen([sys.executable, *args], cwd=directory, stdout=log, stderr=log)


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello.txt")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def counters(log: Path) -> dict[str, int]:
    """The ingress's counters, printed as one JSON line when it stops."""
    line = next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{"))
    errors: dict[str, int] = json.loads(line)["ingress"]["errors"]
    return errors


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3 for http.server")
def test_slow_and_idle_clients_are_bounded(up: DataPlane) -> None:
    directory = up.net.directory
    (directory / "site").mkdir()
    (directory / "site" / "hello.txt").write_text("hello\n")
    http_port, web_port, raw_port = free_port(), free_port(), free_port()
    scaffold = ["-m", "scaffold"]
    network = ["--network", str(up.state_path), "--gateway", "dc2-fs1"]
    procs = [
        start(directory / "site", "http-server", "-m", "http.server", str(http_port), "--bind", "127.0.0.1")
    ]
    try:
        wait_listening(http_port, procs[0], directory / "site" / "http-server.log")
        target = f"127.0.0.1:{http_port}"
        publish = ["publish", "site", "--target", target, *network, "--as", "publisher"]
        web = ["ingress", "site", "--http", "--listen", f"127.0.0.1:{web_port}", "--header-timeout", "1"]
        web += ["--max-connections", str(CAP), *network, "--as", "ingress-http"]
        raw = ["ingress", "web", "--listen", f"127.0.0.1:{raw_port}", "--idle-timeout", "1"]
        raw += [*network, "--as", "ingress-raw"]
        up.allow("site")  # a plain name: served where the operator's policy says
        procs.append(start(directory, "publish", *scaffold, *publish))
        procs.append(start(directory, "ingress-http", *scaffold, *web))
        procs.append(start(directory, "ingress-raw", *scaffold, *raw))
        wait_listening(web_port, procs[2], directory / "ingress-http.log")
        wait_listening(raw_port, procs[3], directory / "ingress-raw.log")
        deadline = time.monotonic() + 30
        while get(web_port) != 200:  # the publisher's replica is registered
            assert time.monotonic() < deadline
            time.sleep(0.2)

        # The attack: request heads that never end, and silent connections, past the cap.
        attackers = []
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", web_port), timeout=10)
            s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: site\r\n")
            attackers.append(s)
        attackers += [socket.create_connection(("127.0.0.1", web_port), timeout=10) for _ in range(EXTRA)]
        # Legitimate requests during the attack: those beyond the cap wait in the accept
        # queue until the header timeout frees a place, then are served.
        started = time.monotonic()
        assert [get(web_port) for _ in range(10)] == [200] * 10
        assert time.monotonic() - started < 5
        # Every attacker got 408 once its head was overdue (or it waited its turn first).
        answers = []
        for s in attackers:
            answers.append(s.recv(100))
            s.close()
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
        assert [get(web_port) for _ in range(10)] == [200] * 10  # and after

        # Idle raw connections are closed after the idle timeout.
        idle = [socket.create_connection(("127.0.0.1", raw_port), timeout=10) for _ in range(20)]
        started = time.monotonic()
        assert all(s.recv(1) == b"" for s in idle)
        assert time.monotonic() - started < 5
        for s in idle:
            s.close()
        echo = socket.create_connection(("127.0.0.1", raw_port), timeout=10)
        echo.sendall(b"still here")
        assert echo.recv(100) == b"still here"
        echo.close()
    finally:
        for proc in reversed(procs):
            stop(proc)
    http_errors = counters(directory / "ingress-http.log")
    assert http_errors.get("header-timeout", 0) >= SLOW + EXTRA
    assert http_errors.get("over-capacity", 0) >= 1  # it stopped accepting at the cap
    assert counters(directory / "ingress-raw.log").get("idle-timeout", 0) >= 20
