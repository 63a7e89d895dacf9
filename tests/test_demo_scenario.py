"""The churn scenario's own failure report: a flow that has not ended by the timeout is
named, with where it stands (bytes, replica, transport state), not a bare TimeoutError."""

from __future__ import annotations

import re

import pytest

from scaffold.api.testbed import Testbed
from scaffold.demo.run import DemoOptions
from scaffold.demo.scenario import Scenario
from scaffold.runtime.aio import run


def test_a_timeout_names_every_unfinished_flow_and_its_state() -> None:
    async def main() -> None:
        topology = DemoOptions().topology
        async with Testbed(topology=topology) as net:
            # 1 MiB at 4 KiB per 50 ms takes ~13 s: nothing ends within the schedule + 0.2 s
            # (resumable flows only: the server failure must not end one with an error).
            scenario = Scenario(net, flows=3, session_flows=0, size=1 << 20, pace=0.05, spacing=0.3)
            await scenario.serve()
            with pytest.raises(TimeoutError) as info:
                await scenario.run(timeout=0.2)
            message = str(info.value)
            assert message.startswith("3 flows unfinished after 0.2 s: ")
            opened = [r for r in scenario.runs if r.writer is not None]
            assert opened  # the schedule takes 2 s: flows open long before that
            for r in scenario.runs:
                name = f"flow {r.index} {r.obj} from {r.client}"
                if r.writer is None:
                    assert f"{name}: not open" in message
                    continue
                # (read from the message: cancelling the flows closed them since)
                found = re.search(
                    rf"{name} \[{r.flow}\]: (\d+)/{r.size} bytes, last at t=[\d.]+s \(now [\d.]+s\),"
                    r" serving [a-z0-9-]+, served by \['[a-z0-9-]+'.*?\], transport established"
                    r" \(received (\d+) bytes in \d+ segments",
                    message,
                )
                assert found, (name, message)
                verified, received = int(found[1]), int(found[2])
                assert 0 <= verified <= received

    run(main())
