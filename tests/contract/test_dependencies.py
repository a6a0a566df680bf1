"""Dependencies between jobs (``after=[...]``), on every backend: a job waits for its parents,
is released once they are done, and is cancelled when one fails (``after_policy="completed"``),
down the whole chain, in the transaction of the parent's finish.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from forebay import JobFilter, JobState, NewJob, QueueFull
from forebay.backends import Backend, backend_from_url
from forebay.errors import UnknownParent
from forebay.job import Failure, Job
from forebay.runs import DEPENDENCY_FAILED, NewRun, RunState

WORKER = "test-worker"


def new(queue: str = "q", payload: object = None, **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0} if payload is None else payload, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, queue: str = "q", limit: int = 10) -> list[Job]:
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30.0)


async def one(backend: Backend, **kw: object) -> Job:
    [job] = await backend.enqueue([new(**kw)])
    return job


async def state_of(backend: Backend, job_id: int) -> JobState:
    job = await backend.get_job(job_id)
    assert job is not None
    return job.state


async def finish(backend: Backend, job_id: int, how: str) -> None:
    """Lease exactly the job ``job_id`` (the only due one) and end it ``how``."""
    [job] = await lease(backend, limit=1)
    assert job.id == job_id
    if how == "completed":
        assert await backend.complete([job.lease]) == []
    elif how == "dead":
        assert await backend.dead_letter([Failure(job.lease, "bad", "ValueError")]) == []
    else:
        assert await backend.cancel([job.id]) == [job.id]


def assert_failed_for(job: Job | None, parent_id: int, parent_state: str) -> None:
    assert job is not None and job.state is JobState.CANCELLED
    assert job.error_type == DEPENDENCY_FAILED
    assert job.error == f"parent job {parent_id} ended {parent_state}"
    assert job.finished_at is not None
    assert abs(job.finished_at.timestamp() - time.time()) < 60


# -- enqueue ---------------------------------------------------------------------------------
async def test_an_unknown_parent_refuses_the_whole_call(backend: Backend) -> None:
    parent = await one(backend)
    with pytest.raises(UnknownParent) as info:
        await backend.enqueue([new(), new(after=[parent.id, 987_654, 987_650])])
    assert sorted(info.value.job_ids) == [987_650, 987_654]
    assert {c.queue: c.depth for c in await backend.counts()} == {"q": 1}


async def test_a_waiting_job_is_stored_with_its_links_and_not_leased(backend: Backend) -> None:
    b = await one(backend)
    a = await one(backend)
    child = await one(backend, after=[a.id, b.id, a.id], priority=5)
    assert child.state is JobState.WAITING and child.after == tuple(sorted([a.id, b.id]))
    stored = await backend.get_job(child.id)
    assert stored is not None and stored.state is JobState.WAITING
    assert stored.after == tuple(sorted([a.id, b.id])) and stored.after_policy == "completed"
    assert ids(await lease(backend)) == sorted([a.id, b.id])
    [counts] = await backend.counts()
    assert (counts.waiting, counts.running, counts.queued, counts.depth) == (1, 2, 0, 3)
    waiting = await backend.list_jobs(JobFilter(state=JobState.WAITING))
    assert ids(waiting) == [child.id]
    assert ids(await backend.list_jobs(JobFilter(queue="q", state=JobState.WAITING))) == [child.id]
    assert await backend.list_jobs(JobFilter(queue="other", state=JobState.WAITING)) == []


async def test_waiting_jobs_count_toward_max_depth(backend: Backend) -> None:
    parent = await one(backend, queue="p")
    await backend.enqueue([new(after=[parent.id]), new(after=[parent.id])], max_depth={"q": 3})
    with pytest.raises(QueueFull):
        await backend.enqueue([new(after=[parent.id]), new()], max_depth={"q": 3})
    [counts] = [c for c in await backend.counts() if c.queue == "q"]
    assert counts.waiting == 2 and counts.depth == 2


async def test_a_parent_already_finished_at_enqueue(backend: Backend) -> None:
    done, dead, gone, running = [await one(backend, payload={"i": i}) for i in range(4)]
    await finish(backend, done.id, "completed")
    await finish(backend, dead.id, "dead")
    await finish(backend, gone.id, "cancelled")
    [held] = await lease(backend)
    assert held.id == running.id

    queued = await one(backend, after=[done.id])
    assert queued.state is JobState.QUEUED
    always = await one(backend, after=[done.id, dead.id, gone.id], after_policy="always")
    assert always.state is JobState.QUEUED and always.after_policy == "always"
    waits = await one(backend, after=[done.id, running.id])
    assert waits.state is JobState.WAITING
    failed = await one(backend, after=[done.id, dead.id])
    assert failed.state is JobState.CANCELLED
    assert_failed_for(await backend.get_job(failed.id), dead.id, "dead")
    cancelled = await one(backend, after=[gone.id])
    assert_failed_for(await backend.get_job(cancelled.id), gone.id, "cancelled")
    [counts] = await backend.counts()
    assert (counts.queued, counts.waiting, counts.running) == (2, 1, 1)
    assert counts.cancelled == 3 and counts.dead == 1 and counts.completed == 1


async def test_a_scheduled_child_keeps_its_run_at_when_released(backend: Backend) -> None:
    parent = await one(backend)
    later = time.time() + 3600
    child = await one(backend, after=[parent.id], delay=3600)
    assert child.state is JobState.WAITING
    await finish(backend, parent.id, "completed")
    stored = await backend.get_job(child.id)
    assert stored is not None and stored.state is JobState.QUEUED and stored.run_at is not None
    assert stored.run_at.timestamp() == pytest.approx(later, abs=5)
    assert await lease(backend) == []
    [counts] = await backend.counts()
    assert counts.scheduled == 1 and counts.waiting == 0


# -- release ---------------------------------------------------------------------------------
async def test_a_child_is_released_when_its_parent_completes(backend: Backend) -> None:
    parent = await one(backend)
    children = await backend.enqueue([new(after=[parent.id], payload={"c": i}) for i in range(3)])
    await finish(backend, parent.id, "completed")
    assert [await state_of(backend, c.id) for c in children] == [JobState.QUEUED] * 3
    assert ids(await lease(backend)) == ids(children)
    [counts] = await backend.counts()
    assert counts.waiting == 0 and counts.running == 3


async def test_a_diamond_runs_the_last_job_once_both_sides_completed(backend: Backend) -> None:
    a = await one(backend)
    b = await one(backend, after=[a.id])
    c = await one(backend, after=[a.id])
    d = await one(backend, after=[b.id, c.id])
    assert [j.state for j in (b, c, d)] == [JobState.WAITING] * 3
    await finish(backend, a.id, "completed")
    leased = await lease(backend)
    assert ids(leased) == sorted([b.id, c.id])
    first, second = sorted(leased, key=lambda j: j.id)
    assert await backend.complete([first.lease]) == []
    assert await state_of(backend, d.id) is JobState.WAITING
    assert await backend.complete([second.lease]) == []
    assert await state_of(backend, d.id) is JobState.QUEUED
    await finish(backend, d.id, "completed")


async def test_policy_always_runs_whatever_the_parents_ended(backend: Backend) -> None:
    a = await one(backend)
    b = await one(backend)
    child = await one(backend, after=[a.id, b.id], after_policy="always")
    await finish(backend, a.id, "dead")
    assert await state_of(backend, child.id) is JobState.WAITING
    assert await backend.cancel([b.id]) == [b.id]
    assert await state_of(backend, child.id) is JobState.QUEUED
    [leased] = await lease(backend)
    assert leased.id == child.id


@pytest.mark.parametrize("rounds", [6])
async def test_two_parents_finishing_at_once_release_the_child_once(
    url: str, backend: Backend, rounds: int
) -> None:
    other = backend_from_url(url)
    await other.open()
    try:
        for i in range(rounds):
            run = await backend.start_run(NewRun.create())
            a = await one(backend, run=run.id)
            b = await one(backend, run=run.id)
            child = await one(backend, run=run.id, after=[a.id, b.id])
            first, second = await lease(backend, limit=2)
            x, y = (backend, other) if i % 2 else (other, backend)
            assert await asyncio.gather(x.complete([first.lease]), y.complete([second.lease])) == [
                [],
                [],
            ]
            assert await state_of(backend, child.id) is JobState.QUEUED
            got = await backend.get_run(run.id)
            assert got is not None
            assert (got.total, got.waiting, got.queued, got.completed) == (3, 0, 1, 2)
            [leased] = await lease(backend)
            assert leased.id == child.id
            await backend.complete([leased.lease])
        assert await lease(backend) == []
    finally:
        await other.close()


async def test_two_parents_failing_at_once_cancel_the_child_once(
    url: str, backend: Backend
) -> None:
    other = backend_from_url(url)
    await other.open()
    try:
        for i in range(4):
            run = await backend.start_run(NewRun.create())
            a = await one(backend, run=run.id)
            b = await one(backend, run=run.id)
            child = await one(backend, run=run.id, after=[a.id, b.id], webhook="https://h.test/x")
            first, second = await lease(backend, limit=2)
            x, y = (backend, other) if i % 2 else (other, backend)
            await asyncio.gather(
                x.dead_letter([Failure(first.lease, "bad", "ValueError")]),
                y.dead_letter([Failure(second.lease, "bad", "ValueError")]),
            )
            stored = await backend.get_job(child.id)
            assert stored is not None and stored.state is JobState.CANCELLED
            assert stored.error_type == DEPENDENCY_FAILED
            got = await backend.get_run(run.id)
            assert got is not None
            assert (got.total, got.waiting, got.dead, got.cancelled) == (3, 0, 2, 1)
            hooks = await backend.list_jobs(JobFilter(queue="forebay.webhooks"), limit=100)
            assert len([h for h in hooks if h.payload["data"]["id"] == child.id]) == 1  # type: ignore[call-overload,index]
    finally:
        await other.close()


# -- failure ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dead", "cancelled"])
async def test_a_failed_parent_cancels_its_children_down_the_chain(
    backend: Backend, how: str
) -> None:
    a = await one(backend)
    b = await one(backend, after=[a.id])
    c = await one(backend, after=[b.id])
    d = await one(backend, after=[b.id], after_policy="always")
    other = await one(backend)
    e = await one(backend, after=[c.id, other.id])
    if how == "cancelled":
        assert await backend.cancel([a.id]) == [a.id]
    else:
        await finish(backend, a.id, "dead")
    assert_failed_for(await backend.get_job(b.id), a.id, how)
    assert_failed_for(await backend.get_job(c.id), b.id, "cancelled")
    assert_failed_for(await backend.get_job(e.id), c.id, "cancelled")
    assert await state_of(backend, d.id) is JobState.QUEUED  # policy always: b ended
    assert await state_of(backend, other.id) is JobState.QUEUED
    [counts] = await backend.counts()
    assert counts.waiting == 0 and counts.queued == 2
    assert counts.cancelled == 3 + (how == "cancelled")


async def test_a_waiter_sees_a_child_cancelled_for_its_parent(backend: Backend) -> None:
    a = await one(backend)
    b = await one(backend, after=[a.id])
    c = await one(backend, after=[b.id])
    waiters = [asyncio.create_task(backend.wait_for_finish(j.id, timeout_s=30)) for j in (b, c)]
    await finish(backend, a.id, "dead")
    for waited in await asyncio.gather(*waiters):
        assert waited is not None and waited.state is JobState.CANCELLED


async def test_cancel_where_cancels_failed_parents_children(backend: Backend) -> None:
    a = await one(backend, queue="p")
    b = await one(backend, after=[a.id])
    assert await backend.cancel_where(JobFilter(queue="p")) == 1
    assert_failed_for(await backend.get_job(b.id), a.id, "cancelled")


async def test_a_waiting_job_can_be_cancelled(backend: Backend) -> None:
    a = await one(backend, queue="p")
    b = await one(backend, after=[a.id])
    c = await one(backend, after=[a.id])
    grandchild = await one(backend, after=[b.id])
    assert await backend.cancel([b.id]) == [b.id]
    stored = await backend.get_job(b.id)
    assert stored is not None and stored.state is JobState.CANCELLED
    assert stored.error_type != DEPENDENCY_FAILED
    assert_failed_for(await backend.get_job(grandchild.id), b.id, "cancelled")
    assert await backend.cancel([b.id]) == []
    # cancel_where reaches waiting jobs, and state=waiting narrows to them
    d = await one(backend)
    assert await backend.cancel_where(JobFilter(state=JobState.WAITING), dry_run=True) == 1
    assert await backend.cancel_where(JobFilter(queue="q", state=JobState.WAITING)) == 1
    assert await state_of(backend, c.id) is JobState.CANCELLED
    assert await state_of(backend, d.id) is JobState.QUEUED
    # the parent completing later releases nothing
    [leased] = await lease(backend, "p")
    await backend.complete([leased.lease])
    assert await state_of(backend, b.id) is JobState.CANCELLED
    assert await state_of(backend, c.id) is JobState.CANCELLED


async def test_replaying_a_dead_parent_does_not_revive_its_children(backend: Backend) -> None:
    a = await one(backend)
    b = await one(backend, after=[a.id])
    await finish(backend, a.id, "dead")
    assert await backend.replay(JobFilter(ids=(a.id,))) == 1
    await finish(backend, a.id, "completed")
    assert_failed_for(await backend.get_job(b.id), a.id, "dead")
    assert await lease(backend) == []


async def test_a_run_counts_waiting_jobs_and_their_cascade(backend: Backend) -> None:
    run = await backend.start_run(NewRun.create(on_complete="done"))
    a = await one(backend, run=run.id)
    await backend.enqueue([new(run=run.id, after=[a.id]) for _ in range(2)])
    got = await backend.get_run(run.id)
    assert got is not None and (got.total, got.queued, got.waiting) == (3, 1, 2)
    await backend.seal_run(run.id)
    await finish(backend, a.id, "dead")
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert (done.total, done.dead, done.cancelled, done.waiting) == (3, 1, 2, 0)
    assert len(await backend.list_jobs(JobFilter(queue="done"))) == 1


async def test_a_job_stored_cancelled_finishes_in_its_run(backend: Backend) -> None:
    a = await one(backend)
    await finish(backend, a.id, "dead")
    run = await backend.start_run(NewRun.create(on_complete="done"))
    [b] = await backend.enqueue([new(run=run.id, after=[a.id])])
    assert b.state is JobState.CANCELLED
    got = await backend.get_run(run.id)
    assert got is not None and (got.total, got.cancelled) == (1, 1)
    sealed = await backend.seal_run(run.id)
    assert sealed is not None and sealed.state is RunState.COMPLETED


def ids(jobs: list[Job]) -> list[int]:
    return sorted(j.id for j in jobs)
