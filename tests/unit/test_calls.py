"""One way to call a handler: async or in a thread, one job or a batch, with a timeout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from forebay import InvalidResult, PermanentError, QueueConfig, ResultTooLarge
from forebay.job import Job, JobState
from forebay.worker.calls import call_handler


def _jobs(n: int) -> list[Job]:
    return [
        Job(id=i, queue="q", payload={"i": i}, state=JobState.RUNNING, lease_token="t")
        for i in range(1, n + 1)
    ]


async def test_an_async_handler_gets_one_job_on_the_event_loop() -> None:
    seen: list[tuple[object, int]] = []

    async def handle(job: Job) -> str:
        seen.append((job.payload, threading.get_ident()))
        return "kept"

    errors, result = await call_handler(QueueConfig("q", handler=handle), _jobs(1))
    assert errors == {} and result == '"kept"'
    assert seen == [({"i": 1}, threading.get_ident())]


async def test_a_sync_handler_runs_in_a_thread_and_its_error_is_raised() -> None:
    threads: list[int] = []

    def handle(job: Job) -> None:
        threads.append(threading.get_ident())
        raise PermanentError("refused")

    with pytest.raises(PermanentError, match="refused"):
        await call_handler(QueueConfig("q", handler=handle), _jobs(1))
    assert threads and threads[0] != threading.get_ident()


async def test_a_batch_handler_gets_the_list_and_answers_per_job() -> None:
    error = PermanentError("odd")

    def handle(jobs: Sequence[Job]) -> dict[int, BaseException | None]:
        return {job.id: error for job in jobs if job.id % 2}

    config = QueueConfig("q", handler=handle, batch_size=4)
    assert await call_handler(config, _jobs(4)) == ({1: error, 3: error}, None)

    async def returns_nothing(jobs: Sequence[Job]) -> None:
        assert [job.id for job in jobs] == [1, 2]

    quiet = QueueConfig("q", handler=returns_nothing, batch_size=4)
    assert await call_handler(quiet, _jobs(2)) == ({}, None)


async def test_a_result_is_json_within_the_queue_cap_or_the_call_fails_permanently() -> None:
    async def returns(job: Job) -> object:
        return job.payload

    def config(cap: int) -> QueueConfig:
        return QueueConfig("q", handler=returns, max_result_bytes=cap)

    big = [Job(id=1, queue="q", payload={"text": "é" * 40}, state=JobState.RUNNING)]
    assert (await call_handler(config(100), big))[1] == '{"text":"' + "é" * 40 + '"}'
    with pytest.raises(ResultTooLarge, match=r"returned 91 bytes of JSON.*max_result_bytes=90"):
        await call_handler(config(90), big)
    odd = [Job(id=1, queue="q", payload={1, 2}, state=JobState.RUNNING)]  # type: ignore[arg-type]
    with pytest.raises(InvalidResult, match="not JSON") as caught:
        await call_handler(config(100), odd)
    assert isinstance(caught.value, PermanentError)
    nothing = [Job(id=1, queue="q", payload=None, state=JobState.RUNNING)]
    assert await call_handler(config(100), nothing) == ({}, None)


@pytest.mark.parametrize(("batch_size", "what"), [(None, "handler"), (2, "batch handler")])
async def test_a_timeout_names_timeout_s(batch_size: int | None, what: str) -> None:
    never = asyncio.Event()

    async def handle(job_or_jobs: object) -> None:
        await never.wait()

    config = QueueConfig("q", handler=handle, batch_size=batch_size)
    with pytest.raises(TimeoutError, match=f"^{what} ran longer than timeout_s=0.01$"):
        await call_handler(config, _jobs(1), timeout_s=0.01)


async def test_without_a_timeout_a_handlers_own_timeout_error_passes_through() -> None:
    async def handle(job: Job) -> None:
        raise TimeoutError("the sink did not answer")

    with pytest.raises(TimeoutError, match=r"^the sink did not answer$"):
        await call_handler(QueueConfig("q", handler=handle), _jobs(1))


async def test_progress_reaches_the_given_reporter() -> None:
    reported: list[tuple[int, float, str | None]] = []

    async def report(job: Job, pct: float, message: str | None) -> None:
        reported.append((job.id, pct, message))

    async def handle(job: Job) -> None:
        await job.progress(40, "parsed")

    await call_handler(QueueConfig("q", handler=handle), _jobs(1), progress=report)
    assert reported == [(1, 40.0, "parsed")]
