"""Waiting for a job to finish, and finding a job by its key: the same on every backend.

A waiter is released by the backend's wake-up, not by luck: each test lets the waiter read the
unfinished job first (:class:`Reads` sees that read) and only then finishes it, so a backend
whose finishing transitions announced nothing would leave the waiter waiting: PostgreSQL and
Redis wait for a notification while they are listening, and in the tests of one instance
SQLite's poll for other processes' finishes is turned off (``no_polling``), leaving only the
wake-up of its own process. Waiters wait far longer than the tests allow (``BOUND_S``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest

from forebay import (
    ConfigError,
    Forebay,
    InvalidPayload,
    JobNotFound,
    JobState,
    NewJob,
    PermanentError,
    WaitTimeout,
)
from forebay.backends import Backend, backend_from_url
from forebay.job import Failure, Job
from forebay.testing import drain

WORKER = "test-worker"
BOUND_S = 10.0  # a waiter that is not woken fails the test after this long


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch, backend_kind: str) -> None:
    """SQLite waiters re-read only when their own process wakes them."""
    if backend_kind == "sqlite":
        monkeypatch.setattr("forebay.backends.sqlite.backend._FINISH_POLL_S", 3600.0)


def new(queue: str = "q", **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0}, **kw)  # type: ignore[arg-type]


class Reads:
    """Counts a backend's reads of each job, so a test knows its waiters read and now wait."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[int, int] = {}
        self._changed = asyncio.Event()
        read = backend.get_job

        async def counting(job_id: int) -> Job | None:
            job = await read(job_id)
            self.counts[job_id] = self.counts.get(job_id, 0) + 1
            self._changed.set()
            return job

        monkeypatch.setattr(backend, "get_job", counting)

    async def until(self, job_id: int, n: int = 1) -> None:
        """Wait until job ``job_id`` was read ``n`` times."""
        async with asyncio.timeout(BOUND_S):
            while self.counts.get(job_id, 0) < n:
                self._changed.clear()
                await self._changed.wait()


async def running(backend: Backend, n: int = 1, queue: str = "q") -> list[Job]:
    await backend.enqueue([new(queue) for _ in range(n)])
    jobs = await backend.lease(queue=queue, limit=n, worker_id=WORKER, lease_s=60.0)
    assert len(jobs) == n
    return jobs


def waiting(backend: Backend, job_id: int) -> asyncio.Task[Job | None]:
    return asyncio.create_task(backend.wait_for_finish(job_id, timeout_s=10 * BOUND_S))


async def woken(*waiters: asyncio.Task[Job | None]) -> list[Job | None]:
    async with asyncio.timeout(BOUND_S):
        return list(await asyncio.gather(*waiters))


# -- wait_for_finish -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["complete", "dead_letter", "cancel"])
async def test_a_waiter_is_woken_when_its_job_finishes(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, how: str, no_polling: None
) -> None:
    reads = Reads(backend, monkeypatch)
    if how == "cancel":
        [job] = await backend.enqueue([new()])
    else:
        [job] = await running(backend)
    waiter = waiting(backend, job.id)
    await reads.until(job.id)
    assert not waiter.done()
    started = time.monotonic()
    if how == "complete":
        assert await backend.complete([job.lease]) == []
    elif how == "dead_letter":
        assert await backend.dead_letter([Failure(job.lease, "boom", "ValueError")]) == []
    else:
        assert await backend.cancel([job.id]) == [job.id]
    [finished] = await woken(waiter)
    assert finished is not None and finished.id == job.id
    expected = {"complete": "completed", "dead_letter": "dead", "cancel": "cancelled"}[how]
    assert finished.state == expected
    assert time.monotonic() - started < BOUND_S


async def test_a_finished_job_is_returned_at_once(backend: Backend) -> None:
    [job] = await running(backend)
    await backend.complete([job.lease])
    async with asyncio.timeout(BOUND_S):  # timeout_s=inf: only "at once" ends this
        finished = await backend.wait_for_finish(job.id, timeout_s=math.inf)
    assert finished is not None and finished.state is JobState.COMPLETED


async def test_a_wait_times_out_with_the_job_as_it_stands(backend: Backend) -> None:
    [job] = await running(backend)
    started = time.monotonic()
    current = await backend.wait_for_finish(job.id, timeout_s=0.3)
    assert time.monotonic() - started >= 0.3
    assert current is not None and current.state is JobState.RUNNING
    now = await backend.wait_for_finish(job.id, timeout_s=0)
    assert now is not None and now.state is JobState.RUNNING


async def test_waiting_for_a_missing_job_answers_none(backend: Backend) -> None:
    async with asyncio.timeout(BOUND_S):
        assert await backend.wait_for_finish(987_654, timeout_s=math.inf) is None


async def test_a_job_that_is_put_back_does_not_end_the_wait(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, no_polling: None
) -> None:
    reads = Reads(backend, monkeypatch)
    [job] = await running(backend)
    waiter = waiting(backend, job.id)
    await reads.until(job.id)
    assert await backend.release([job.lease]) == []
    [again] = await backend.lease(queue="q", limit=1, worker_id=WORKER, lease_s=60.0)
    assert not waiter.done()
    assert await backend.complete([again.lease]) == []
    [finished] = await woken(waiter)
    assert finished is not None and finished.state is JobState.COMPLETED


async def test_many_waiters_on_many_jobs_and_two_on_one(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, no_polling: None
) -> None:
    reads = Reads(backend, monkeypatch)
    jobs = await running(backend, 12)
    [queued] = await backend.enqueue([new()])
    waiters = {j.id: waiting(backend, j.id) for j in [*jobs, queued]}
    twin = waiting(backend, jobs[0].id)
    for j in [*jobs, queued]:
        await reads.until(j.id, 2 if j.id == jobs[0].id else 1)
    done, dead = jobs[:8], jobs[8:]
    await asyncio.gather(
        backend.complete([j.lease for j in done[:4]]),
        backend.complete([j.lease for j in done[4:]]),
        backend.dead_letter([Failure(j.lease, "no", "PermanentError") for j in dead]),
        backend.cancel([queued.id]),
    )
    results = dict(zip(waiters, await woken(*waiters.values()), strict=True))
    assert {i: j.state if j else None for i, j in results.items()} == {
        **{j.id: JobState.COMPLETED for j in done},
        **{j.id: JobState.DEAD for j in dead},
        queued.id: JobState.CANCELLED,
    }
    [second] = await woken(twin)
    assert second is not None and second.state is JobState.COMPLETED


async def test_a_big_settle_wakes_every_waiter_of_it(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, no_polling: None
) -> None:
    # More jobs than one PostgreSQL notification can name: waiters are woken all the same.
    reads = Reads(backend, monkeypatch)
    jobs = await running(backend, 450)
    watched = [jobs[0], jobs[225], jobs[-1]]
    waiters = [waiting(backend, j.id) for j in watched]
    for j in watched:
        await reads.until(j.id)
    assert await backend.complete([j.lease for j in jobs]) == []
    assert [j and j.state for j in await woken(*waiters)] == [JobState.COMPLETED] * 3


@pytest.fixture
async def other(url: str, backend: Backend) -> AsyncIterator[Backend]:
    """A second backend on the same store, as another process would have."""
    second = backend_from_url(url)
    await second.open()
    try:
        yield second
    finally:
        await second.close()


@pytest.mark.parametrize("how", ["complete", "cancel"])
async def test_a_job_finished_by_another_instance_wakes_the_waiter(
    backend: Backend, other: Backend, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    reads = Reads(backend, monkeypatch)
    if how == "cancel":
        [job] = await backend.enqueue([new()])
    else:
        [job] = await running(backend)
    waiter = waiting(backend, job.id)
    await reads.until(job.id)
    if how == "complete":
        assert await other.complete([job.lease]) == []
    else:
        assert await other.cancel([job.id]) == [job.id]
    [finished] = await woken(waiter)  # SQLite: by its poll for other processes' finishes
    assert finished is not None and finished.state.terminal


# -- get_job_by_key --------------------------------------------------------------------------
async def test_a_job_is_found_by_its_queue_and_key(backend: Backend) -> None:
    [a] = await backend.enqueue([new("alpha", key="doc-1")])
    [b] = await backend.enqueue([new("beta", key="doc-1")])
    await backend.enqueue([new("alpha", key="doc-2"), new("alpha")])
    found_a = await backend.get_job_by_key("alpha", "doc-1")
    found_b = await backend.get_job_by_key("beta", "doc-1")
    assert found_a is not None and found_a.id == a.id and found_a.queue == "alpha"
    assert found_b is not None and found_b.id == b.id and found_b.queue == "beta"
    assert found_a.payload == {"n": 0} and found_a.key == "doc-1"
    assert await backend.get_job_by_key("alpha", "doc-3") is None
    assert await backend.get_job_by_key("gamma", "doc-1") is None


async def test_a_job_found_by_key_is_current(backend: Backend) -> None:
    [job] = await backend.enqueue([new(key="k")])
    [leased] = await backend.lease(queue="q", limit=1, worker_id=WORKER, lease_s=60.0)
    await backend.complete([leased.lease])
    found = await backend.get_job_by_key("q", "k")
    assert found is not None and found.id == job.id and found.state is JobState.COMPLETED


# -- the app: wait, wait_sync, get_job by key -------------------------------------------------
def declare(app: Forebay) -> None:
    @app.handler("documents", max_attempts=1)
    async def ingest(job: Job) -> str:
        if job.payload == "fail":
            raise PermanentError("refused")
        return "done"


async def test_app_wait_returns_each_job_as_its_worker_ends_it(app: Forebay) -> None:
    declare(app)
    ok = await app.enqueue("documents", "ok")
    bad = await app.enqueue("documents", "fail")
    gone = await app.enqueue("documents", "ok", delay=3600)
    waits = [asyncio.create_task(app.wait(j.id, timeout_s=10 * BOUND_S)) for j in (ok, bad, gone)]
    await app.cancel(gone.id)
    await drain(app)
    async with asyncio.timeout(BOUND_S):
        done = await asyncio.gather(*waits)
    assert [(j.id, j.state) for j in done] == [
        (ok.id, JobState.COMPLETED),
        (bad.id, JobState.DEAD),
        (gone.id, JobState.CANCELLED),
    ]
    assert done[1].error_type == "PermanentError" and done[0].finished_at is not None


async def test_app_wait_times_out_or_finds_no_job(app: Forebay) -> None:
    declare(app)
    job = await app.enqueue("documents", "ok")
    with pytest.raises(WaitTimeout) as info:
        await app.wait(job.id, timeout_s=0.2)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.job_id, info.value.state) == (job.id, "queued")
    assert f"job {job.id} is still queued" in str(info.value)
    with pytest.raises(JobNotFound):
        await app.wait(987_654, timeout_s=1)
    with pytest.raises(ConfigError):
        await app.wait(job.id, timeout_s=-1)


def test_app_wait_sync_from_a_script(url: str) -> None:
    producer, worker = Forebay(url), Forebay(url)
    declare(worker)

    async def work() -> None:
        async with worker:
            await drain(worker)

    try:
        job = producer.enqueue_sync("documents", "ok")
        with pytest.raises(WaitTimeout):
            producer.wait_sync(job.id, timeout_s=0.1)
        asyncio.run(work())  # another instance: another process, for the store
        assert producer.wait_sync(job.id, timeout_s=BOUND_S).state is JobState.COMPLETED
    finally:
        asyncio.run(_drop(url))
        producer.close_sync()


async def _drop(url: str) -> None:
    async with Forebay(url) as app:
        await app.backend.drop_everything()


async def test_app_get_job_by_queue_and_key(app: Forebay) -> None:
    declare(app)
    first = await app.enqueue("documents", "ok", key="doc-1")
    other = await app.enqueue("archive", "ok", key="doc-1")
    assert (await app.get_job("documents", key="doc-1")).id == first.id
    assert (await app.get_job("archive", key="doc-1")).id == other.id
    assert (await app.get_job(first.id)).key == "doc-1"
    with pytest.raises(JobNotFound, match="no job with key 'doc-2' on queue 'documents'"):
        await app.get_job("documents", key="doc-2")
    with pytest.raises(ConfigError, match="give its key"):
        await app.get_job("documents")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="not both"):
        await app.get_job(first.id, key="doc-1")  # type: ignore[call-overload]
    with pytest.raises(InvalidPayload, match="queue name"):
        await app.get_job("no such queue", key="doc-1")
    with pytest.raises(InvalidPayload, match="key"):
        await app.get_job("documents", key="")
