"""Fuzz the controller over a valid credential (docs/security.md): random and mutated records
from the project's own encoders (``fuzz_control.py``, a process of its own), while the
network's hosts heartbeat. No exception escapes, the hosts' heartbeats are never late by more
than 100 ms, memory stays bounded, and the network serves throughout.

The default run is short; the 60 s run of the issue is
``SCAFFOLD_FUZZ_SECONDS=60 pytest tests/security/test_control_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scaffold.core.topology import make_topology
from scaffold.runtime.aio import EmbeddedNetwork, run

SECONDS = float(os.environ.get("SCAFFOLD_FUZZ_SECONDS", "8"))
FUZZER = Path(__file__).with_name("fuzz_control.py")


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_fuzzed_control_records_never_stop_the_controller(tmp_path: Path) -> None:
    escaped: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: escaped.append(context))
        async with EmbeddedNetwork(
            make_topology(2, 2), credentials_dir=tmp_path / "credentials", open_binding=False
        ) as net:
            assert net.credentials is not None
            fuzzer_credentials = net.credentials.node("fuzzer", "host")
            core = net.controller.core
            legit = [r for r in core.hosts.values()]
            interval = core.heartbeat_interval
            host, port = net.controller.address
            before = rss()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(FUZZER),
                f"{host}:{port}",
                str(fuzzer_credentials.directory),
                str(SECONDS),
                "7",
                stdout=subprocess.PIPE,
            )
            # Watch every host's heartbeats as the controller sees them.
            last = {r.name: r.last_seen for r in legit}
            worst = 0.0
            while proc.returncode is None:
                await asyncio.sleep(0.005)
                for record in legit:
                    if record.last_seen != last[record.name]:
                        worst = max(worst, record.last_seen - last[record.name])
                        last[record.name] = record.last_seen
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.001)
            out, _ = await proc.communicate()
            report = json.loads(out)
            growth = rss() - before
            stats = dict(net.controller.stats)
            print(
                f"fuzz {SECONDS:g} s: {report}; worst heartbeat gap {worst * 1000:.0f} ms; "
                f"memory +{growth / 1e6:.1f} MB; controller {stats}; drops {dict(core.drops)}"
            )
            assert report["bursts"] > 100 and report["connections"] >= 1
            assert all(r.alive for r in legit), "a legitimate host was declared dead"
            assert worst - interval <= 0.1, f"a heartbeat was {(worst - interval) * 1000:.0f} ms late"
            assert growth < 50 * 1024 * 1024
            assert not any(k in stats for k in ("record-error", "timer-error", "connection-error")), stats
            assert net.ready()

    run(main())
    assert not escaped, escaped[:3]
