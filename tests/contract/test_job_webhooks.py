"""Job webhooks, on every backend: every finish of a job with a ``webhook`` stores, in its
own transaction, one delivery job on ``forebay.webhooks`` saying how the job ended; a settle
that is refused stores nothing. (Delivering it is the webhook handler's job, not the store's.)
"""

from __future__ import annotations

import time

import pytest

from forebay import JobFilter, JobState, NewJob
from forebay.backends import Backend
from forebay.job import Completion, Failure, Job, Retry
from forebay.runs import (
    DEPENDENCY_FAILED,
    JOB_WEBHOOK_TYPES,
    WEBHOOK_QUEUE,
    NewRun,
    job_summary,
    webhook_payload,
)

WORKER = "test-worker"
HOOK = "https://hooks.example.com/jobs"
TOLERANCE = 1e-3  # seconds


def new(queue: str = "q", payload: object = None, **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0} if payload is None else payload, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, queue: str = "q", limit: int = 10) -> list[Job]:
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30.0)


async def deliveries(backend: Backend) -> list[Job]:
    """The delivery jobs stored, oldest first."""
    jobs = await backend.list_jobs(JobFilter(queue=WEBHOOK_QUEUE), limit=1000)
    return sorted(jobs, key=lambda j: j.id)


async def assert_delivery_for(delivery: Job, backend: Backend, job_id: int) -> None:
    """``delivery`` is exactly the delivery of job ``job_id`` as it is stored now."""
    job = await backend.get_job(job_id)
    assert job is not None and job.state.terminal and job.finished_at is not None
    assert job.webhook is not None
    assert delivery.queue == WEBHOOK_QUEUE and delivery.state is JobState.QUEUED
    assert delivery.key is None and delivery.run_id is None and delivery.after == ()
    assert delivery.webhook is None
    expected = webhook_payload(
        job.webhook,
        JOB_WEBHOOK_TYPES[job.state.value],
        job_summary(
            job_id=job.id,
            queue=job.queue,
            state=job.state.value,
            key=job.key,
            run_id=job.run_id,
            attempt=job.attempt,
            error=job.error,
            error_type=job.error_type,
            result=job.result,
            finished_at=job.finished_at.timestamp(),
        ),
    )
    payload = delivery.payload
    assert isinstance(payload, dict) and isinstance(payload["data"], dict)
    data, want = dict(payload["data"]), dict(expected["data"])  # type: ignore[arg-type]
    assert data.pop("finished_at") == pytest.approx(want.pop("finished_at"), abs=TOLERANCE)
    assert data == want
    assert {k: v for k, v in payload.items() if k != "data"} == {
        "url": job.webhook,
        "type": JOB_WEBHOOK_TYPES[job.state.value],
    }


async def test_a_completed_job_stores_its_delivery(backend: Backend) -> None:
    run = await backend.start_run(NewRun.create())
    [job, plain] = await backend.enqueue(
        [new(key="k-1", run=run.id, webhook=HOOK), new(payload={"plain": True})]
    )
    assert job.webhook == HOOK
    a, b = await lease(backend)
    assert await backend.complete([Completion(a.lease, '{"answer": [4, 2]}'), b.lease]) == []
    [delivery] = await deliveries(backend)
    await assert_delivery_for(delivery, backend, job.id)
    data = delivery.payload["data"]  # type: ignore[index,call-overload]
    assert data["result"] == {"answer": [4, 2]} and data["state"] == "completed"  # type: ignore[index,call-overload]
    assert data["run_id"] == run.id and data["key"] == "k-1" and data["attempt"] == 1  # type: ignore[index,call-overload]
    assert delivery.payload["type"] == "job.completed"  # type: ignore[index,call-overload]
    assert plain.webhook is None


async def test_a_dead_job_stores_its_delivery_but_a_retry_does_not(backend: Backend) -> None:
    [job] = await backend.enqueue([new(webhook=HOOK)])
    [first] = await lease(backend)
    await backend.retry([Retry(first.lease, time.time() - 1, "again", "TimeoutError")])
    assert await deliveries(backend) == []
    [second] = await lease(backend)
    assert await backend.dead_letter([Failure(second.lease, "it broke", "ValueError")]) == []
    [delivery] = await deliveries(backend)
    await assert_delivery_for(delivery, backend, job.id)
    data = delivery.payload["data"]  # type: ignore[index,call-overload]
    assert (data["state"], data["error"], data["error_type"]) == ("dead", "it broke", "ValueError")  # type: ignore[index,call-overload]
    assert data["attempt"] == 2 and data["result"] is None  # type: ignore[index,call-overload]


async def test_cancelled_jobs_store_their_deliveries(backend: Backend) -> None:
    queued, running, by_filter = await backend.enqueue(
        [new(webhook=HOOK), new(webhook=HOOK), new("other", webhook=HOOK)]
    )
    [held] = await lease(backend, limit=1)
    assert held.id == queued.id
    assert await backend.cancel([running.id, held.id]) == sorted([running.id, held.id])
    assert await backend.cancel_where(JobFilter(queue="other")) == 1
    found = await deliveries(backend)
    assert len(found) == 3
    by_job = {d.payload["data"]["id"]: d for d in found}  # type: ignore[index,call-overload]
    assert set(by_job) == {queued.id, running.id, by_filter.id}
    for job_id, delivery in by_job.items():
        await assert_delivery_for(delivery, backend, job_id)
        assert delivery.payload["type"] == "job.cancelled"  # type: ignore[index,call-overload]


async def test_jobs_cancelled_for_a_parent_store_their_deliveries(backend: Backend) -> None:
    [parent] = await backend.enqueue([new()])
    [child] = await backend.enqueue([new(after=[parent.id], webhook=HOOK)])
    [grandchild] = await backend.enqueue([new(after=[child.id], webhook=HOOK)])
    [held] = await lease(backend)
    await backend.dead_letter([Failure(held.lease, "bad", "ValueError")])
    found = await deliveries(backend)
    assert len(found) == 2  # the parent has no webhook
    by_job = {d.payload["data"]["id"]: d for d in found}  # type: ignore[index,call-overload]
    assert set(by_job) == {child.id, grandchild.id}
    for job_id, delivery in by_job.items():
        await assert_delivery_for(delivery, backend, job_id)
        assert delivery.payload["data"]["error_type"] == DEPENDENCY_FAILED  # type: ignore[index,call-overload]
    # a job stored cancelled at enqueue (its parent already failed) is a finish too
    [late] = await backend.enqueue([new(after=[parent.id], webhook=HOOK)])
    assert late.state is JobState.CANCELLED
    found = await deliveries(backend)
    assert len(found) == 3
    await assert_delivery_for(found[-1], backend, late.id)


async def test_no_webhook_stores_no_delivery(backend: Backend) -> None:
    [a, b, c, d] = await backend.enqueue([new() for _ in range(4)])
    e = (await backend.enqueue([new(after=[d.id])]))[0]
    x, y = await lease(backend, limit=2)
    await backend.complete([x.lease])
    await backend.dead_letter([Failure(y.lease, "bad", "ValueError")])
    await backend.cancel([c.id, d.id])
    assert await backend.get_job(e.id) is not None
    assert {q.queue for q in await backend.counts()} == {"q"}
    assert a.webhook is None and b.webhook is None


async def test_a_refused_settle_stores_nothing(backend: Backend) -> None:
    [job] = await backend.enqueue([new(webhook=HOOK)])
    [held] = await lease(backend)
    assert await backend.cancel([job.id]) == [job.id]
    assert len(await deliveries(backend)) == 1
    # the worker's late outcomes carry a revoked lease: refused, nothing stored
    assert await backend.complete([held.lease]) == [job.id]
    assert await backend.dead_letter([Failure(held.lease, "bad", "ValueError")]) == [job.id]
    assert await backend.cancel([job.id]) == []
    assert await backend.cancel_where(JobFilter(ids=(job.id,))) == 0
    [delivery] = await deliveries(backend)
    await assert_delivery_for(delivery, backend, job.id)


async def test_a_delivery_job_joins_no_run_and_a_run_completion_still_counts(
    backend: Backend,
) -> None:
    run = await backend.start_run(NewRun.create(on_complete="done"))
    [job] = await backend.enqueue([new(run=run.id, webhook=HOOK)])
    await backend.seal_run(run.id)
    [held] = await lease(backend)
    await backend.complete([held.lease])
    [delivery] = await deliveries(backend)
    assert delivery.run_id is None
    got = await backend.get_run(run.id)
    assert got is not None and got.total == 1 and got.completed == 1
    assert job.run_id == run.id
