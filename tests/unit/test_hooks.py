"""Hook calls are bounded: past the limit of calls running at once, a call is dropped and
logged instead of piling up, and the calls already running go on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from forebay.queue_config import QueueConfig
from forebay.worker.hooks import HookCall, Hooks


async def test_past_the_limit_a_hook_call_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    ran: list[int] = []

    def call(job_id: int) -> HookCall:
        async def hook() -> None:
            ran.append(job_id)
            await release.wait()

        return HookCall("on_success", job_id, hook)

    hooks = Hooks(max_running=2)
    config = QueueConfig("docs")
    with caplog.at_level(logging.ERROR, logger="forebay.worker"):
        hooks.start(config, [call(1), call(2)])
        hooks.start(config, [call(3)])  # two still run: this one is dropped
    assert hooks.running == 2
    assert any("for job 3 not run: 2 hook calls still run" in r.message for r in caplog.records)
    release.set()
    await hooks.drained()
    assert sorted(ran) == [1, 2]
    hooks.start(config, [call(4)])  # room again
    await hooks.drained()
    assert sorted(ran) == [1, 2, 4]
