"""The churn scenario's own judging: a flow that has not ended by the timeout is named, with
where it stands (bytes, replica, transport state), not a bare TimeoutError; the schedule
gives an event's flows a full spacing of time in which the process ran before the next event
(which ends their judging)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from scaffold.api.testbed import Testbed
from scaffold.demo.run import DemoOptions
from scaffold.demo.scenario import WAIT_STEP, Scenario
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


def test_the_schedule_waits_longer_by_the_time_the_process_was_not_run() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        scenario = Scenario(Testbed(topology=DemoOptions().topology), flows=0, session_flows=0)
        scenario.t0 = loop.time()
        # The event loop does not run for 0.5 s from t=0.1 (what a machine that does not
        # schedule the process does to it): the flows had 0.5 s less to show progress.
        watch = asyncio.create_task(scenario.watch_stalls())
        loop.call_later(0.1, time.sleep, 0.5)
        await scenario.wait_running(0.0, 0.3)
        watch.cancel()
        assert scenario.now() >= 0.3 + 0.5 - WAIT_STEP
        [(at, stalled)] = scenario.stalls
        assert 0.0 <= at <= 0.1 + WAIT_STEP and stalled >= 0.5 - WAIT_STEP

    run(main())
