"""A first user, from the shell: ``scaffold up`` serves nothing, ``scaffold publish`` says whom
a target joins, ``scaffold connect`` talks to a service, ``scaffold top`` shows it all."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli_processes import SCAFFOLD, Processes, free_port, run_cli, wait_for, wait_for_port

#: a TCP server that answers only once its client half-closed: how many bytes it got
COUNTER = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    got = 0
    while data := conn.recv(65536):
        got += len(data)
    conn.sendall(f"{got} bytes\\n".encode())
    conn.close()
"""

pytestmark = pytest.mark.slow


def test_up_serves_nothing_then_publish_connect_and_top_work_from_the_shell(
    tmp_path: Path, processes: Processes
) -> None:
    up, up_log = processes.spawn("up", *SCAFFOLD, "up")
    assert "serving nothing yet" in wait_for(up_log, "is up", up)
    status = run_cli(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["objects"] == []

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("served by an unmodified http.server\n")
    web, counter = free_port(), free_port()
    processes.spawn(
        "http", sys.executable, "-m", "http.server", str(web), "--bind", "127.0.0.1", "--directory", "site"
    )
    processes.spawn("counter", sys.executable, "-c", COUNTER, str(counter))
    wait_for_port(web)
    wait_for_port(counter)
    first, first_log = processes.spawn(
        "publish-1", *SCAFFOLD, "publish", "web", "--target", f"127.0.0.1:{web}", "--as", "first"
    )
    assert "'web' has no replica yet" in wait_for(first_log, "published", first)
    second, second_log = processes.spawn(
        "publish-2",
        *SCAFFOLD,
        "publish",
        "web",
        "--target",
        f"127.0.0.1:{web}",
        "--as",
        "second",
        "--gateway",
        "west-fs1",
    )
    assert "'web' is already served by first (east, weight 1)" in wait_for(second_log, "published", second)
    count, count_log = processes.spawn(
        "publish-3", *SCAFFOLD, "publish", "count", "--target", f"127.0.0.1:{counter}"
    )
    wait_for(count_log, "published", count)

    # An HTTP request piped into `scaffold connect` reaches http.server; its answer comes back.
    got = run_cli(tmp_path, "connect", "web", stdin=b"GET /hello.txt HTTP/1.0\r\nHost: web\r\n\r\n")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(b"HTTP/1.0 200 OK\r\n")
    assert got.stdout.endswith(b"\r\n\r\nserved by an unmodified http.server\n")
    # End of input is a half-close: a service that answers only after EOF still answers.
    payload = bytes(range(256)) * 1000
    counted = run_cli(tmp_path, "connect", "count", stdin=payload)
    assert (counted.returncode, counted.stdout) == (0, b"256000 bytes\n"), counted.stderr
    missing = run_cli(tmp_path, "connect", "nobody-serves-this", stdin=b"")
    assert missing.returncode == 2
    assert b"nothing serves 'nobody-serves-this'" in missing.stderr

    top = run_cli(tmp_path, "top", "--once", "--json", "--interval", "0.3")
    assert top.returncode == 0, top.stderr
    view = json.loads(top.stdout)
    assert view["summary"]["objects"] == 2 and view["summary"]["hosts_alive"] >= 13
    roles = {n["node"]: n["role"] for n in view["nodes"]}
    assert roles["controller"] == "controller" and roles["east-fs1"] == "flow-switch"
    assert all(n["packets_per_s"] >= 0 and n["drops"] >= 0 for n in view["nodes"])
    assert any(e["kind"] == "bind" and e["target"] == "second" for e in view["events"])

    for proc in (first, second, count):
        assert processes.stop(proc) == 0
    down = run_cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert up.wait(15) == 0
