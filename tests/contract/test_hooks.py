"""The queue hooks, on every backend: ``on_success``, ``on_failure`` and ``on_exhausted`` run
once the outcome is recorded, for the outcomes they are for, and can neither block nor undo it.

Hooks signal the test through lists and asyncio events; workers run in burst mode (drain and
return, the hooks they started finished) or are stopped once the store shows what the test
waits for. Nothing here waits by sleeping.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import BaseModel

from forebay import (
    Backoff,
    Forebay,
    Job,
    JobState,
    PayloadValidationError,
    PermanentError,
    TransientError,
)
from forebay.errors import ConfigError
from forebay.testing import until
from forebay.worker import WorkerSettings

NO_WAIT = Backoff(base_s=0, jitter=False)


async def test_each_hook_runs_for_its_outcomes(app: Forebay) -> None:
    seen: list[tuple[str, int, object]] = []

    async def on_success(job: Job, result: object) -> None:
        stored = await app.get_job(job.id)  # the outcome is recorded before the hook runs
        seen.append(("success", job.attempt, (result, stored.state)))

    async def on_failure(job: Job, error: BaseException) -> None:
        seen.append(("failure", job.attempt, str(error)))

    async def on_exhausted(job: Job, error: BaseException) -> None:
        seen.append(("exhausted", job.attempt, str(error)))

    @app.handler(
        "docs",
        max_attempts=3,
        backoff=NO_WAIT,
        on_success=on_success,
        on_failure=on_failure,
        on_exhausted=on_exhausted,
    )
    async def handle(job: Job) -> object:
        if job.payload == "flaky" and job.attempt < 2:
            raise TransientError(f"flaky #{job.attempt}")
        if job.payload == "bad":
            raise PermanentError("malformed")
        return {"ok": job.payload}

    flaky = await app.enqueue("docs", "flaky")
    await app.run_worker(burst=True)
    assert seen == [
        ("failure", 1, "flaky #1"),
        ("success", 2, ({"ok": "flaky"}, JobState.COMPLETED)),
    ]
    assert (await app.get_job(flaky.id)).state is JobState.COMPLETED

    seen.clear()
    await app.enqueue("docs", "bad")
    await app.run_worker(burst=True)
    assert sorted(seen) == [("exhausted", 1, "malformed"), ("failure", 1, "malformed")]


async def test_on_failure_runs_for_every_failed_attempt_retried_or_dead(app: Forebay) -> None:
    failures: list[tuple[int, str]] = []
    exhausted: list[int] = []

    async def on_failure(job: Job, error: BaseException) -> None:
        failures.append((job.attempt, type(error).__name__))

    async def on_exhausted(job: Job, error: BaseException) -> None:
        exhausted.append(job.id)

    @app.handler(
        "docs", max_attempts=3, backoff=NO_WAIT, on_failure=on_failure, on_exhausted=on_exhausted
    )
    async def handle(job: Job) -> None:
        raise ValueError("never")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    assert sorted(failures) == [(1, "ValueError"), (2, "ValueError"), (3, "ValueError")]
    assert exhausted == [job.id]
    assert (await app.get_job(job.id)).state is JobState.DEAD


async def test_a_failing_hook_changes_nothing(app: Forebay) -> None:
    async def on_success(job: Job, result: object) -> None:
        raise RuntimeError("hook broke")

    async def on_failure(job: Job, error: BaseException) -> None:
        raise RuntimeError("hook broke")

    @app.handler("docs", on_success=on_success, on_failure=on_failure)
    async def handle(job: Job) -> None:
        if job.payload == "bad":
            raise PermanentError("no")

    good = await app.enqueue("docs", "good")
    bad = await app.enqueue("docs", "bad")
    await app.run_worker(burst=True)
    assert (await app.get_job(good.id)).state is JobState.COMPLETED
    assert (await app.get_job(bad.id)).state is JobState.DEAD


async def test_a_slow_hook_holds_neither_the_lane_nor_the_settle(app: Forebay) -> None:
    release = asyncio.Event()
    hooked: list[int] = []

    async def on_success(job: Job, result: object) -> None:
        hooked.append(job.id)
        await release.wait()

    @app.handler("docs", concurrency=1, on_success=on_success)
    async def handle(job: Job) -> None:
        pass

    jobs = [await app.enqueue("docs", i) for i in range(5)]
    worker = app.worker(settings=WorkerSettings(handle_signals=False))
    running = asyncio.create_task(worker.run())
    try:

        async def all_completed() -> bool:
            counts = {c.queue: c for c in await app.counts()}
            return "docs" in counts and counts["docs"].completed == 5

        # One lane slot, every hook still waiting: the jobs completed one after another anyway.
        await until(all_completed, what="every job completed while the hooks wait")
        await until(lambda: len(hooked) == 5, what="every job's hook started")
        assert sorted(hooked) == sorted(job.id for job in jobs)
    finally:
        release.set()
        worker.stop()
        await running


async def test_a_hook_past_its_time_limit_is_cancelled_and_logged(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    never = asyncio.Event()
    cancelled: list[int] = []

    async def on_failure(job: Job, error: BaseException) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    @app.handler("docs", on_failure=on_failure, hook_timeout_s=0.05)
    async def handle(job: Job) -> None:
        raise PermanentError("no")

    job = await app.enqueue("docs", {})
    with caplog.at_level(logging.ERROR, logger="forebay.worker"):
        await app.run_worker(burst=True)  # returns: the worker waits for hooks within limits
    assert cancelled == [job.id]
    assert (await app.get_job(job.id)).state is JobState.DEAD
    assert any("took longer than 0.05s (hook_timeout_s)" in r.message for r in caplog.records)


async def test_a_worker_told_to_stop_now_cancels_its_running_hooks(app: Forebay) -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    async def on_success(job: Job, result: object) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # hangs: only its (hour-long) limit would end it
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    @app.handler("docs", on_success=on_success, hook_timeout_s=3600)
    async def handle(job: Job) -> None:
        pass

    job = await app.enqueue("docs", {})
    worker = app.worker(settings=WorkerSettings(handle_signals=False))
    running = asyncio.create_task(worker.run())
    await started.wait()
    worker.stop()  # a graceful stop waits for the hook...
    worker.stop_now()  # ...a second signal does not
    await running
    assert cancelled == [job.id]
    assert (await app.get_job(job.id)).state is JobState.COMPLETED


async def test_hooks_may_be_added_to_a_declared_queue(app: Forebay) -> None:
    results: list[object] = []

    async def on_success(job: Job, result: object) -> None:
        results.append(result)

    class Doc(BaseModel):
        n: int

    @app.handler("docs", payload=Doc, max_depth=5)
    async def handle(job: Job) -> int:
        return job.payload_as(Doc).n

    app.queue("docs", on_success=on_success)
    # the queue keeps what its handler declared: its payload model and its max_depth
    assert (app.queues["docs"].payload_model, app.queues["docs"].max_depth) == (Doc, 5)
    with pytest.raises(PayloadValidationError):
        await app.enqueue("docs", {"n": "not a number"})
    await app.enqueue("docs", {"n": 42})
    await app.run_worker(burst=True)
    assert results == [42]


def test_hooks_must_be_async_functions(app: Forebay) -> None:
    def on_success(job: Job, result: object) -> None:
        pass

    with pytest.raises(ConfigError, match="on_success must be an async function"):

        @app.handler("docs", on_success=on_success)  # type: ignore[arg-type]
        async def handle(job: Job) -> None:
            pass
