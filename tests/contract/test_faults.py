"""Faults that must stay with the job at fault, on every backend.

* A job that was running when its worker died runs alone afterwards, so a poison job's crashes
  are not counted against the jobs that happened to run beside it (the subprocess version of
  this, with real SIGKILLs, is in tests/acceptance/test_poison.py).
* Text no store can hold as given (a lone surrogate, what ``os.fsdecode`` makes of a non-UTF-8
  file name; a NUL character) is refused in keys with a clear error, stored escaped in error
  texts, and never fails the other callers written in the same group commit.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from forebay import Backoff, Forebay, InvalidPayload, Job, JobFilter, JobState
from forebay.backends import Backend, backend_from_url
from forebay.job import Lease, NewJob, Retry

NO_WAIT = Backoff(base_s=0, jitter=False)
BAD_NAME = os.fsdecode(b"scan-\xff.pdf")  # a lone surrogate, as Python decodes such a name


async def _crash_with(url: str, queue: str, n: int) -> list[int]:
    """Lease ``n`` jobs as a worker that then dies; their leases expire at once."""
    doomed = backend_from_url(url)
    await doomed.open()
    try:
        leased = await doomed.lease(queue=queue, limit=n, worker_id="doomed", lease_s=1)
        assert len(leased) == n
        assert await doomed.reclaim_expired(now=time.time() + 3600) == n
    finally:
        await doomed.close()
    return [job.id for job in leased]


async def test_a_job_held_by_a_dead_worker_runs_alone(app: Forebay, url: str) -> None:
    active: set[int] = set()
    beside_a_suspect: list[tuple[int, set[int]]] = []
    suspects: set[int] = set()

    async def handle(job: Job) -> None:
        running_suspects = active & suspects
        if running_suspects or (job.id in suspects and active):
            beside_a_suspect.append((job.id, set(active)))
        active.add(job.id)
        try:
            await asyncio.sleep(0.01)  # the work: long enough for neighbours to overlap
        finally:
            active.discard(job.id)

    app.handler("a", concurrency=4)(handle)
    app.handler("b", concurrency=4)(handle)
    for i in range(3):
        await app.enqueue("a", {"i": i})
    suspects.update(await _crash_with(url, "a", 3))
    for i in range(8):
        await app.enqueue("a", {"i": i})
        await app.enqueue("b", {"i": i})

    await app.run_worker(burst=True)

    assert beside_a_suspect == []
    counts = {c.queue: c for c in await app.counts()}
    assert counts["a"].completed == 11 and counts["b"].completed == 8
    for job_id in suspects:
        job = await app.get_job(job_id)
        # one crash, then one run alone; giving a job back while it waited cost it nothing
        assert job.state is JobState.COMPLETED and job.deliveries == 2 and job.attempt == 1


@pytest.mark.parametrize("key", [f"doc-{BAD_NAME}", "doc-\x00-1"])
async def test_a_key_no_store_can_hold_is_refused_and_nothing_is_stored(
    app: Forebay, key: str
) -> None:
    with pytest.raises(InvalidPayload, match="key must"):
        await app.enqueue("docs", {"i": 1}, key=key)
    with pytest.raises(InvalidPayload, match="key must"):
        await app.enqueue_many(
            [NewJob.create("docs", {"i": 2}, key="fine"), NewJob.create("docs", {}, key=key)]
        )
    assert await app.counts() == []


async def test_one_callers_unencodable_key_fails_that_caller_alone(backend: Backend) -> None:
    # Bypass NewJob.create's check, as a buggy producer of the backend API could: the group
    # commit itself must keep the bad job from failing the 99 good ones written with it.
    def new(key: str) -> NewJob:
        return NewJob("docs", '{"ok":true}', {"ok": True}, key=key)

    keys = [f"good-{i}" for i in range(100)]
    keys[37] = f"bad-{BAD_NAME}"
    results = await asyncio.gather(
        *(backend.enqueue([new(k)]) for k in keys), return_exceptions=True
    )
    failed = [k for k, r in zip(keys, results, strict=True) if isinstance(r, BaseException)]
    assert failed == [keys[37]]
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["docs"].queued == 99


async def test_odd_error_texts_are_stored_escaped_and_fail_no_other_job(app: Forebay) -> None:
    runs: dict[int, int] = {}

    @app.handler("docs", concurrency=8, max_attempts=1, backoff=NO_WAIT)
    async def handle(job: Job) -> None:
        runs[job.id] = runs.get(job.id, 0) + 1
        if job.payload["bad"]:  # type: ignore[index,call-overload]
            raise ValueError(f"cannot read {BAD_NAME}: byte \x00 in header")

    jobs = [await app.enqueue("docs", {"bad": i % 15 == 0}) for i in range(60)]
    await app.run_worker(burst=True)

    assert all(n == 1 for n in runs.values()) and len(runs) == 60  # nothing ran twice
    for job in jobs:
        stored = await app.get_job(job.id)
        if job.payload["bad"]:  # type: ignore[index,call-overload]
            assert stored.state is JobState.DEAD and stored.error_type == "ValueError"
            assert stored.error == "ValueError: cannot read scan-\\udcff.pdf: byte \\x00 in header"
        else:
            assert stored.state is JobState.COMPLETED


async def test_a_settle_with_a_bad_text_fails_no_other_caller(backend: Backend) -> None:
    await backend.enqueue([NewJob.create("docs", {"i": i}) for i in range(3)])
    a, b, c = await backend.lease(queue="docs", limit=3, worker_id="w", lease_s=60)
    bad = Retry(b.lease, time.time(), "x", "ValueError")
    object.__setattr__(bad, "error", f"ValueError: {BAD_NAME}")  # past the value's own escaping
    results = await asyncio.gather(
        backend.complete([a.lease]),
        backend.retry([bad]),
        backend.complete([Lease(c.id, c.lease_token or "")]),
        return_exceptions=True,
    )
    assert results[0] == [] and results[2] == []
    assert (await backend.get_job(a.id)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await backend.get_job(c.id)).state is JobState.COMPLETED  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["queue", "error_type", "run_id"])
async def test_a_filter_no_store_can_hold_is_refused_alike(app: Forebay, field: str) -> None:
    with pytest.raises(InvalidPayload, match=field):
        await app.list_jobs(JobFilter(**{field: "a\x00b"}))  # type: ignore[arg-type]
