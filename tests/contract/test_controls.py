"""Operator controls, on every backend: stored queue settings (pause, max_depth), cancelling
running jobs, run-now and cancel by filter (docs/controls.md)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from forebay import ConfigError, Forebay, JobFilter, JobState, NewJob, QueueFull
from forebay.backends import Backend, backend_from_url
from forebay.queue_settings import KEEP
from forebay.runs import NewRun

WORKER = "test-worker"


def new(queue: str = "q", **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0}, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, queue: str = "q", limit: int = 10):
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30.0)


# -- stored settings --------------------------------------------------------------------------
async def test_settings_are_stored_and_listed(backend: Backend) -> None:
    assert await backend.queue_settings() == []
    saved = await backend.set_queue("b", paused=True)
    assert saved.paused and saved.max_depth is None and saved.updated_at is not None
    await backend.set_queue("a", max_depth=5)
    # None / KEEP leave a setting as stored; max_depth=None clears it
    again = await backend.set_queue("b", max_depth=3)
    assert again.paused and again.max_depth == 3
    listed = await backend.queue_settings()
    assert [(s.queue, s.paused, s.max_depth) for s in listed] == [("a", False, 5), ("b", True, 3)]
    cleared = await backend.set_queue("b", paused=False, max_depth=None)
    assert not cleared.paused and cleared.max_depth is None
    kept = await backend.set_queue("a", max_depth=KEEP)
    assert kept.max_depth == 5


async def test_bad_settings_are_refused(backend: Backend) -> None:
    with pytest.raises(ConfigError):
        await backend.set_queue("q", max_depth=0)
    with pytest.raises(ConfigError):
        await backend.set_queue("bad name!", paused=True)
    assert await backend.queue_settings() == []


async def test_a_paused_queue_leases_nothing_and_still_takes_jobs(backend: Backend) -> None:
    await backend.enqueue([new(), new()])
    await backend.set_queue("q", paused=True)
    assert await lease(backend) == []
    more = await backend.enqueue([new()])  # enqueues are accepted while paused
    assert more[0].state is JobState.QUEUED
    await backend.enqueue([new("other")])
    assert len(await lease(backend, "other")) == 1  # other queues go on
    await backend.set_queue("q", paused=False)
    assert len(await lease(backend)) == 3


async def test_resume_wakes_a_waiting_worker(url: str, backend: Backend) -> None:
    await backend.enqueue([new()])
    await backend.set_queue("q", paused=True)
    worker = backend_from_url(url)  # another process's view of the store
    await worker.open()
    try:
        assert await lease(worker) == []
        await worker.wait_for_work(["q"], timeout_s=0.01)  # starts the watch
        # paused: nothing is due, so a wait lasts its whole timeout (no busy loop)
        started = time.monotonic()
        await worker.wait_for_work(["q"], timeout_s=0.3)
        assert time.monotonic() - started >= 0.25
        waiting = asyncio.ensure_future(worker.wait_for_work(["q"], timeout_s=30))
        started = time.monotonic()
        await backend.set_queue("q", paused=False)
        await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 1.0
        assert len(await lease(worker)) == 1
    finally:
        await worker.close()


async def test_stored_max_depth_holds_for_a_bare_producer(backend: Backend) -> None:
    await backend.set_queue("q", max_depth=3)
    await backend.enqueue([new(), new()])  # no max_depth given: the stored one applies
    with pytest.raises(QueueFull) as info:
        await backend.enqueue([new(), new()])
    assert info.value.max_depth == 3
    assert (await backend.counts())[0].queued == 2  # nothing of the refused call stored
    await backend.enqueue([new()])
    with pytest.raises(QueueFull):
        await backend.enqueue([new()])
    await backend.enqueue([new("other")])  # other queues are not limited
    # a caller's own tighter limit still applies; a looser one does not lift the stored one
    await backend.set_queue("q", max_depth=10)
    with pytest.raises(QueueFull):
        await backend.enqueue([new()], max_depth={"q": 3})
    with pytest.raises(QueueFull):
        await backend.enqueue([new() for _ in range(8)], max_depth={"q": 100})
    await backend.set_queue("q", max_depth=None)
    await backend.enqueue([new() for _ in range(20)])


async def test_stored_max_depth_holds_for_concurrent_producers(url: str, backend: Backend) -> None:
    await backend.set_queue("q", max_depth=10)
    other = backend_from_url(url)
    await other.open()
    try:

        async def produce(store: Backend) -> int:
            stored = 0
            for _ in range(10):
                try:
                    await store.enqueue([new()])
                    stored += 1
                except QueueFull:
                    pass
            return stored

        counts = await asyncio.gather(produce(backend), produce(other), produce(backend))
    finally:
        await other.close()
    assert sum(counts) == 10
    assert (await backend.counts())[0].queued == 10


# -- cancel a running job ---------------------------------------------------------------------
async def test_cancel_a_running_job_revokes_its_lease(backend: Backend) -> None:
    await backend.enqueue([new(), new()])
    running = await lease(backend)
    assert await backend.cancel([running[0].id]) == [running[0].id]
    job = await backend.get_job(running[0].id)
    assert job is not None and job.state is JobState.CANCELLED and job.finished_at is not None
    # the worker's heartbeat and late outcome are refused; the job never runs again
    assert await backend.extend([r.lease for r in running], lease_s=30) == [running[0].id]
    assert await backend.complete([running[0].lease]) == [running[0].id]
    assert await backend.reclaim_expired(now=time.time() + 10_000) == 1  # only the other one
    assert [j.id for j in await lease(backend)] == [running[1].id]
    counts = (await backend.counts())[0]
    assert counts.cancelled == 1 and counts.running == 1 and counts.queued == 0
    # cancelling it again changes nothing
    assert await backend.cancel([running[0].id]) == []


# -- run now ----------------------------------------------------------------------------------
async def test_run_now_makes_a_scheduled_job_due(backend: Backend) -> None:
    [scheduled, due] = await backend.enqueue([new(delay=timedelta(hours=1)), new()])
    assert [j.id for j in await lease(backend)] == [due.id]
    assert await backend.run_now([scheduled.id]) == [scheduled.id]
    job = await backend.get_job(scheduled.id)
    assert job is not None and job.run_at is not None
    assert job.run_at.timestamp() <= time.time()
    assert [j.id for j in await lease(backend)] == [scheduled.id]
    # running (and finished) jobs are not moved
    assert await backend.run_now([scheduled.id, due.id, 999_999]) == []


async def test_run_now_makes_a_retry_due(backend: Backend) -> None:
    from forebay.job import Retry

    await backend.enqueue([new()])
    [job] = await lease(backend)
    await backend.retry([Retry(job.lease, time.time() + 3600, "boom", "RuntimeError")])
    assert await lease(backend) == []
    assert await backend.run_now([job.id]) == [job.id]
    [again] = await lease(backend)
    assert again.id == job.id and again.attempt == 2


# -- cancel by filter -------------------------------------------------------------------------
async def test_cancel_where_dry_run_counts_what_the_real_run_cancels(backend: Backend) -> None:
    run = await backend.start_run(NewRun.create())
    await backend.enqueue([new() for _ in range(4)] + [new("other"), new(run=run.id)])
    await lease(backend, limit=2)
    queued_only = JobFilter(queue="q", state=JobState.QUEUED)
    assert await backend.cancel_where(queued_only, dry_run=True) == 3
    assert await backend.cancel_where(JobFilter(queue="q"), dry_run=True) == 5
    assert await backend.cancel_where(JobFilter(run_id=run.id), dry_run=True) == 1
    assert (await backend.counts())[1].cancelled == 0  # a dry run changes nothing
    assert await backend.cancel_where(queued_only) == 3
    assert await backend.cancel_where(JobFilter(queue="q"), dry_run=True) == 2
    assert await backend.cancel_where(JobFilter(queue="q")) == 2
    assert await backend.cancel_where(JobFilter(queue="q")) == 0
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["q"].cancelled == 5 and counts["q"].depth == 0
    assert counts["other"].queued == 1


# -- the app ----------------------------------------------------------------------------------
async def test_a_declared_max_depth_is_stored_for_every_producer(url: str, app: Forebay) -> None:
    app.queue("docs", max_depth=2)
    await app.enqueue("docs", {})
    bare = Forebay(url)  # declares nothing
    try:
        await bare.enqueue("docs", {})
        with pytest.raises(QueueFull):
            await bare.enqueue("docs", {})
        assert (await bare.queue_settings())["docs"].max_depth == 2
        await bare.set_queue("docs", max_depth=3)  # an operator raises it: the app obeys
        await app.enqueue("docs", {})
    finally:
        await bare.close()


async def test_run_now_and_cancel_where_refuse_what_they_cannot_do(app: Forebay) -> None:
    from forebay import JobNotFound
    from forebay.errors import JobStateConflict

    job = await app.enqueue("q", {}, delay=timedelta(hours=1))
    moved = await app.run_now(job.id)
    assert moved.run_at is not None and moved.run_at.timestamp() <= time.time()
    await app.cancel(job.id)
    with pytest.raises(JobStateConflict, match="cancelled"):
        await app.run_now(job.id)
    with pytest.raises(JobNotFound):
        await app.run_now(987_654)
    with pytest.raises(ConfigError, match="queued or running"):
        await app.cancel_where(JobFilter(state=JobState.DEAD))
