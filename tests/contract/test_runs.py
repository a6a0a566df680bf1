"""Runs, on every backend: the definition of their counts, sealing and completion (see
:mod:`forebay.runs` and DESIGN §10).

Counts are read after every step and must be exact, and always add up to ``total``. A run
completes exactly once: the concurrent tests settle a run's last two jobs at the same time
through two backend instances on one store, in both orders, again and again. Times are compared
with a tolerance (PostgreSQL keeps microseconds).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from forebay import Forebay, JobFilter, JobState, NewJob, WorkerSettings
from forebay.backends import Backend, PruneSpec, backend_from_url
from forebay.errors import RunNotFound, RunSealed, UnknownRun
from forebay.job import Completion, Failure, Job, Retry
from forebay.runs import (
    RUN_COMPLETED,
    WEBHOOK_QUEUE,
    NewRun,
    Run,
    RunState,
    run_summary,
    webhook_payload,
)
from forebay.testing import drain

WORKER = "test-worker"
HOOK = "https://hooks.example.com/runs"
TOLERANCE = 1e-3  # seconds


def new(queue: str = "q", payload: object = None, **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0} if payload is None else payload, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, queue: str = "q", limit: int = 10) -> list[Job]:
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30.0)


async def start(backend: Backend, **kw: object) -> Run:
    return await backend.start_run(NewRun.create(**kw))  # type: ignore[arg-type]


async def counts(backend: Backend, run_id: str) -> dict[str, int]:
    """The run's counts as read now; they must always add up to its total."""
    run = await backend.get_run(run_id)
    assert run is not None
    parts = {
        "waiting": run.waiting,
        "queued": run.queued,
        "running": run.running,
        "completed": run.completed,
        "dead": run.dead,
        "cancelled": run.cancelled,
    }
    assert all(v >= 0 for v in parts.values()), parts
    assert sum(parts.values()) == run.total, (parts, run.total)
    return {"total": run.total, **{k: v for k, v in parts.items() if v}}


async def jobs_on(backend: Backend, queue: str) -> list[Job]:
    return await backend.list_jobs(JobFilter(queue=queue), limit=1000)


def summary_of(run: Run) -> dict[str, object]:
    """What the completion payload of ``run`` (read once completed) must say."""
    assert run.sealed_at is not None and run.completed_at is not None
    return run_summary(
        run_id=run.id,
        name=run.name,
        key=run.key,
        meta=run.meta,
        total=run.total,
        completed=run.completed,
        dead=run.dead,
        cancelled=run.cancelled,
        created_at=run.created_at.timestamp(),
        sealed_at=run.sealed_at.timestamp(),
        completed_at=run.completed_at.timestamp(),
    )


def assert_same_summary(stored: object, expected: dict[str, object]) -> None:
    """Equal, but times within TOLERANCE."""
    assert isinstance(stored, dict)
    assert set(stored) == set(expected)
    for name, value in expected.items():
        if name.endswith("_at"):
            assert stored[name] == pytest.approx(value, abs=TOLERANCE), name
        else:
            assert stored[name] == value, name


async def completions(backend: Backend, run: Run, queue: str = "done") -> list[Job]:
    """Every completion job stored for ``run``: on its on_complete queue and webhook queue."""
    found = [j for j in await jobs_on(backend, queue) if j.key == f"run:{run.id}:complete"]
    hooks = [j for j in await jobs_on(backend, WEBHOOK_QUEUE) if j.key == f"run:{run.id}:webhook"]
    return found + hooks


# -- starting --------------------------------------------------------------------------------
async def test_start_run_stores_an_open_run_with_no_jobs(backend: Backend) -> None:
    run = await start(
        backend, name="nightly", key="n-1", meta={"by": "cron"}, on_complete="done", webhook=HOOK
    )
    assert run.created and run.state is RunState.OPEN and run.total == 0
    assert (run.name, run.key, run.meta) == ("nightly", "n-1", {"by": "cron"})
    assert (run.on_complete, run.webhook) == ("done", HOOK)
    assert run.sealed_at is None and run.completed_at is None
    assert abs(run.created_at.timestamp() - time.time()) < 60
    stored = await backend.get_run(run.id)
    assert stored is not None and stored.id == run.id and stored.state is RunState.OPEN
    assert (stored.name, stored.key, stored.meta) == ("nightly", "n-1", {"by": "cron"})
    assert (stored.on_complete, stored.webhook) == ("done", HOOK)
    assert stored.created_at.timestamp() == pytest.approx(run.created_at.timestamp(), abs=TOLERANCE)
    assert await counts(backend, run.id) == {"total": 0}
    assert await backend.get_run("0" * 32) is None


async def test_start_run_with_a_known_key_returns_that_run(backend: Backend) -> None:
    first = await start(backend, key="daily", name="first")
    await backend.enqueue([new(run=first.id)])
    again = await start(backend, key="daily", name="second")
    assert not again.created and again.id == first.id
    assert again.name == "first" and again.total == 1 and again.queued == 1
    other = await start(backend, key="weekly")
    assert other.created and other.id != first.id
    assert sorted(r.id for r in await backend.list_runs()) == sorted([first.id, other.id])


# -- joining ---------------------------------------------------------------------------------
async def test_an_unknown_run_refuses_the_whole_call(backend: Backend) -> None:
    run = await start(backend)
    with pytest.raises(UnknownRun) as info:
        await backend.enqueue([new(run=run.id), new(), new(run="no-such-run")])
    assert info.value.run_id == "no-such-run"
    assert await backend.counts() == []
    assert await counts(backend, run.id) == {"total": 0}


async def test_a_job_found_by_its_key_does_not_count_again(backend: Backend) -> None:
    run = await start(backend)
    [a, b, c] = await backend.enqueue(
        [new(run=run.id, key="k"), new(run=run.id, key="k"), new(run=run.id)]
    )
    assert a.created and not b.created and b.id == a.id and c.created
    assert a.run_id == run.id
    await backend.enqueue([new(run=run.id, key="k")])
    assert await counts(backend, run.id) == {"total": 2, "queued": 2}


async def test_counts_are_exact_at_every_step(backend: Backend) -> None:
    run = await start(backend)
    other = await start(backend)
    scheduled = new(run=run.id, delay=3600)
    await backend.enqueue([new(run=run.id) for _ in range(5)] + [scheduled, new(run=other.id)])
    await backend.enqueue([new("plain")])
    assert await counts(backend, run.id) == {"total": 6, "queued": 6}
    assert await counts(backend, other.id) == {"total": 1, "queued": 1}

    leased = await lease(backend, limit=4)
    mine = [j for j in leased if j.run_id == run.id]
    assert len(mine) >= 3
    want = {"total": 6, "queued": 6 - len(mine), "running": len(mine)}
    assert await counts(backend, run.id) == want
    a, b, c = mine[:3]

    await backend.retry([Retry(a.lease, time.time() + 3600, "boom", "RuntimeError")])
    want = {"total": 6, "queued": 7 - len(mine), "running": len(mine) - 1}
    assert await counts(backend, run.id) == want

    assert await backend.complete([Completion(b.lease, '{"ok": true}')]) == []
    want = {**want, "running": len(mine) - 2, "completed": 1}
    assert await counts(backend, run.id) == want

    assert await backend.dead_letter([Failure(c.lease, "bad", "ValueError")]) == []
    want = {**want, "running": len(mine) - 3, "dead": 1}
    assert await counts(backend, run.id) == {k: v for k, v in want.items() if v}

    assert await backend.cancel([a.id]) == [a.id]  # a queued (backing-off) job
    want = {**want, "queued": want["queued"] - 1, "cancelled": 1}
    assert await counts(backend, run.id) == {k: v for k, v in want.items() if v}

    [parent] = await backend.enqueue([new(run=run.id)])
    [child] = await backend.enqueue([new(run=run.id, after=[parent.id])])
    assert child.state is JobState.WAITING
    want = {**want, "total": 8, "queued": want["queued"] + 1, "waiting": 1}
    assert await counts(backend, run.id) == {k: v for k, v in want.items() if v}

    # the other run and jobs without a run are untouched
    assert await counts(backend, other.id) == {
        "total": 1,
        **({"queued": 1} if all(j.run_id != other.id for j in leased) else {"running": 1}),
    }
    got = await backend.get_run(run.id)
    assert got is not None and got.state is RunState.OPEN


async def test_cancel_where_and_an_expired_lease_keep_the_counts(backend: Backend) -> None:
    run = await start(backend)
    await backend.enqueue([new(run=run.id) for _ in range(4)])
    await lease(backend, limit=2)
    assert await backend.reclaim_expired(now=time.time() + 10_000) == 2
    assert await counts(backend, run.id) == {"total": 4, "queued": 4}
    await lease(backend, limit=1)
    assert await backend.cancel_where(JobFilter(run_id=run.id)) == 4
    assert await counts(backend, run.id) == {"total": 4, "cancelled": 4}


# -- sealing ---------------------------------------------------------------------------------
async def test_a_sealed_run_refuses_outside_jobs(backend: Backend) -> None:
    run = await start(backend)
    other = await start(backend)
    [first, queued] = await backend.enqueue([new(run=run.id), new(run=run.id)])
    [foreign] = await backend.enqueue([new("elsewhere", run=other.id)])
    sealed = await backend.seal_run(run.id)
    assert sealed is not None and sealed.state is RunState.SEALED and sealed.sealed_at is not None
    with pytest.raises(RunSealed) as info:
        await backend.enqueue([new(), new(run=run.id)])
    assert info.value.run_id == run.id and info.value.state == "sealed"
    # a parent that is not running, or not of this run, does not let a job in
    [running] = await lease(backend, limit=1)
    [running_foreign] = await lease(backend, "elsewhere")
    for parent in (queued.id if running.id == first.id else first.id, running_foreign.id):
        with pytest.raises(RunSealed):
            await backend.enqueue([new(run=run.id, parent_id=parent)])
    assert await counts(backend, run.id) == {"total": 2, "queued": 1, "running": 1}
    assert {c.queue: c.depth for c in await backend.counts()} == {"q": 2, "elsewhere": 1}
    assert foreign.run_id == other.id


async def test_a_running_job_of_a_sealed_run_adds_children(backend: Backend) -> None:
    run = await start(backend, on_complete="done")
    await backend.enqueue([new(run=run.id)])
    await backend.seal_run(run.id)
    [parent] = await lease(backend)
    children = await backend.enqueue(
        [new(run=run.id, parent_id=parent.id, payload={"i": i}) for i in range(3)]
    )
    assert all(c.created and c.parent_id == parent.id and c.run_id == run.id for c in children)
    assert await counts(backend, run.id) == {"total": 4, "queued": 3, "running": 1}
    await backend.complete([parent.lease])
    assert await counts(backend, run.id) == {"total": 4, "queued": 3, "completed": 1}
    got = await backend.get_run(run.id)
    assert got is not None and got.state is RunState.SEALED
    assert await completions(backend, run) == []
    leased = await lease(backend, limit=3)
    # a grandchild of the fan-out joins too
    [grandchild] = await backend.enqueue([new(run=run.id, parent_id=leased[0].id)])
    await backend.complete([j.lease for j in leased])
    assert await counts(backend, run.id) == {"total": 5, "queued": 1, "completed": 4}
    [last] = await lease(backend)
    assert last.id == grandchild.id
    await backend.complete([last.lease])
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert await counts(backend, run.id) == {"total": 5, "completed": 5}
    assert len(await completions(backend, run)) == 1


async def test_seal_unknown_run_is_none_and_sealing_again_changes_nothing(
    backend: Backend,
) -> None:
    assert await backend.seal_run("0" * 32) is None
    run = await start(backend)
    await backend.enqueue([new(run=run.id)])
    first = await backend.seal_run(run.id)
    again = await backend.seal_run(run.id)
    assert first is not None and again is not None and first.sealed_at is not None
    assert again.state is RunState.SEALED and again.sealed_at == first.sealed_at


# -- completion ------------------------------------------------------------------------------
async def test_the_last_finish_completes_the_run_with_its_completion_jobs(
    backend: Backend,
) -> None:
    run = await start(
        backend, name="batch", key="b-7", meta={"n": [1, 2]}, on_complete="done", webhook=HOOK
    )
    await backend.enqueue([new(run=run.id, payload={"i": i}) for i in range(3)])
    await backend.seal_run(run.id)
    a, b, c = await lease(backend, limit=3)
    await backend.complete([Completion(a.lease, '{"r": 1}')])
    await backend.dead_letter([Failure(b.lease, "bad", "ValueError")])
    assert await completions(backend, run) == []
    got = await backend.get_run(run.id)
    assert got is not None and got.state is RunState.SEALED and got.completed_at is None

    before = time.time()
    assert await backend.cancel([c.id]) == [c.id]
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert done.completed_at is not None
    assert before - 1 <= done.completed_at.timestamp() <= time.time() + 1
    assert await counts(backend, run.id) == {"total": 3, "completed": 1, "dead": 1, "cancelled": 1}

    [job] = [j for j in await jobs_on(backend, "done")]
    assert job.key == f"run:{run.id}:complete" and job.state is JobState.QUEUED
    assert job.run_id is None and job.priority == 0
    expected = summary_of(done)
    assert expected["meta"] == {"n": [1, 2]} and expected["total"] == 3
    assert_same_summary(job.payload, expected)

    [hook] = await jobs_on(backend, WEBHOOK_QUEUE)
    assert hook.key == f"run:{run.id}:webhook" and hook.run_id is None
    assert isinstance(hook.payload, dict)
    assert {k: v for k, v in hook.payload.items() if k != "data"} == {
        k: v for k, v in webhook_payload(HOOK, RUN_COMPLETED, {}).items() if k != "data"
    }
    assert_same_summary(hook.payload["data"], expected)

    # the completion jobs are leasable like any job, and nothing completes twice
    [leased] = await lease(backend, "done")
    assert leased.id == job.id
    assert await backend.seal_run(run.id) is not None
    assert len(await completions(backend, run)) == 2
    assert len(await jobs_on(backend, "done")) == 1


async def test_a_run_without_on_complete_or_webhook_completes_quietly(backend: Backend) -> None:
    run = await start(backend)
    await backend.enqueue([new(run=run.id)])
    await backend.seal_run(run.id)
    [job] = await lease(backend)
    await backend.complete([job.lease])
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert {c.queue for c in await backend.counts()} == {"q"}


async def test_seal_completes_a_run_whose_jobs_all_finished(backend: Backend) -> None:
    run = await start(backend, on_complete="done", webhook=HOOK)
    await backend.enqueue([new(run=run.id), new(run=run.id)])
    a, b = await lease(backend, limit=2)
    await backend.complete([a.lease, b.lease])
    got = await backend.get_run(run.id)
    assert got is not None and got.state is RunState.OPEN
    assert await completions(backend, run) == []
    sealed = await backend.seal_run(run.id)
    assert sealed is not None and sealed.state is RunState.COMPLETED
    assert sealed.sealed_at is not None and sealed.completed_at is not None
    assert sealed.total == 2 and sealed.completed == 2
    [job, hook] = await completions(backend, run)
    assert_same_summary(job.payload, summary_of(sealed))
    assert isinstance(hook.payload, dict)
    assert_same_summary(hook.payload["data"], summary_of(sealed))
    again = await backend.seal_run(run.id)
    assert again is not None and again.state is RunState.COMPLETED
    assert again.completed_at == sealed.completed_at
    assert len(await completions(backend, run)) == 2


async def test_an_empty_run_completes_at_seal(backend: Backend) -> None:
    run = await start(backend, on_complete="done")
    sealed = await backend.seal_run(run.id)
    assert sealed is not None and sealed.state is RunState.COMPLETED and sealed.total == 0
    [job] = await completions(backend, run)
    assert_same_summary(job.payload, summary_of(sealed))
    with pytest.raises(RunSealed) as info:
        await backend.enqueue([new(run=run.id)])
    assert info.value.state == "completed"


async def test_completion_jobs_are_idempotent_by_key(backend: Backend) -> None:
    run = await start(backend, on_complete="done")
    [early] = await backend.enqueue([new("done", key=f"run:{run.id}:complete")])
    await backend.enqueue([new(run=run.id)])
    await backend.seal_run(run.id)
    [job] = await lease(backend)
    await backend.complete([job.lease])
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    [found] = await completions(backend, run)
    assert found.id == early.id and found.payload == {"n": 0}


async def test_completion_jobs_ignore_a_full_queue(backend: Backend) -> None:
    await backend.set_queue("done", max_depth=1)
    await backend.enqueue([new("done")])
    run = await start(backend, on_complete="done")
    sealed = await backend.seal_run(run.id)
    assert sealed is not None and sealed.state is RunState.COMPLETED
    assert len(await completions(backend, run)) == 1
    assert {c.queue: c.queued for c in await backend.counts()}["done"] == 2


@pytest.mark.parametrize("rounds", [6])
async def test_two_last_jobs_settled_at_once_complete_the_run_once(
    url: str, backend: Backend, rounds: int
) -> None:
    other = backend_from_url(url)
    await other.open()
    try:
        for i in range(rounds):
            run = await start(backend, on_complete="done", webhook=HOOK)
            await backend.enqueue([new(run=run.id), new(run=run.id)])
            await backend.seal_run(run.id)
            a, b = await lease(backend, limit=2)
            first, second = (backend, other) if i % 2 else (other, backend)
            if i % 3 == 2:  # one completes, the other dies
                refused = await asyncio.gather(
                    first.complete([a.lease]),
                    second.dead_letter([Failure(b.lease, "bad", "ValueError")]),
                )
            else:
                refused = await asyncio.gather(
                    first.complete([a.lease]), second.complete([b.lease])
                )
            assert refused == [[], []]
            done = await backend.get_run(run.id)
            assert done is not None and done.state is RunState.COMPLETED
            assert done.finished == done.total == 2
            found = await completions(backend, run)
            assert sorted(j.queue for j in found) == sorted(["done", WEBHOOK_QUEUE])
            for job in found:
                payload = job.payload if job.queue == "done" else job.payload["data"]  # type: ignore[index]
                assert_same_summary(payload, summary_of(done))
    finally:
        await other.close()


async def test_settling_jobs_of_two_runs_at_once_completes_each_once(
    url: str, backend: Backend
) -> None:
    other = backend_from_url(url)
    await other.open()
    try:
        for i in range(4):
            runs = [await start(backend, on_complete="done") for _ in range(2)]
            for run in runs:
                await backend.enqueue([new(run=run.id), new(run=run.id)])
                await backend.seal_run(run.id)
            leased = await lease(backend, limit=4)
            assert len(leased) == 4
            # each batch settles one job of each run: the two batches race on both runs
            by_run: dict[str, list[Job]] = {}
            for job in leased:
                by_run.setdefault(str(job.run_id), []).append(job)
            left = [jobs[i % 2].lease for jobs in by_run.values()]
            right = [jobs[1 - i % 2].lease for jobs in by_run.values()]
            assert await asyncio.gather(backend.complete(left), other.complete(right)) == [[], []]
            for run in runs:
                done = await backend.get_run(run.id)
                assert done is not None and done.state is RunState.COMPLETED
                assert len(await completions(backend, run)) == 1
    finally:
        await other.close()


# -- replay ----------------------------------------------------------------------------------
async def test_replaying_a_dead_job_moves_it_back_into_queued(backend: Backend) -> None:
    run = await start(backend, on_complete="done")
    await backend.enqueue([new(run=run.id), new(run=run.id)])
    a, b = await lease(backend, limit=2)
    await backend.dead_letter([Failure(a.lease, "bad", "ValueError")])
    assert await counts(backend, run.id) == {"total": 2, "running": 1, "dead": 1}
    assert await backend.replay(JobFilter(ids=(a.id,))) == 1
    assert await counts(backend, run.id) == {"total": 2, "running": 1, "queued": 1}

    # a completed run stays completed when its dead job is replayed
    await backend.seal_run(run.id)
    [again] = await lease(backend)
    await backend.dead_letter([Failure(again.lease, "bad", "ValueError")])
    await backend.complete([b.lease])
    done = await backend.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert await counts(backend, run.id) == {"total": 2, "completed": 1, "dead": 1}
    assert await backend.replay(JobFilter(run_id=run.id)) == 1
    assert await counts(backend, run.id) == {"total": 2, "completed": 1, "queued": 1}
    [third] = await lease(backend)
    await backend.complete([third.lease])
    after = await backend.get_run(run.id)
    assert after is not None and after.state is RunState.COMPLETED
    assert after.completed_at == done.completed_at
    assert await counts(backend, run.id) == {"total": 2, "completed": 2}
    assert len(await completions(backend, run)) == 1


# -- listing and retention -------------------------------------------------------------------
async def test_list_runs_pages_newest_first_and_narrows_by_state(backend: Backend) -> None:
    runs = [await start(backend, name=f"r{i}") for i in range(5)]
    ids = sorted((r.id for r in runs), reverse=True)
    assert [r.id for r in await backend.list_runs()] == ids
    page1 = await backend.list_runs(limit=2)
    page2 = await backend.list_runs(limit=2, before_id=page1[-1].id)
    page3 = await backend.list_runs(limit=2, before_id=page2[-1].id)
    assert [r.id for r in page1 + page2 + page3] == ids
    assert len(page3) == 1
    assert await backend.list_runs(limit=2, before_id=page3[-1].id) == []

    await backend.enqueue([new(run=runs[1].id)])
    await backend.seal_run(runs[1].id)  # sealed: one job left
    await backend.seal_run(runs[3].id)  # empty: completed
    sealed = await backend.list_runs(state=RunState.SEALED)
    assert [r.id for r in sealed] == [runs[1].id] and sealed[0].total == 1
    assert [r.id for r in await backend.list_runs(state=RunState.COMPLETED)] == [runs[3].id]
    opened = await backend.list_runs(state=RunState.OPEN)
    assert [r.id for r in opened] == [i for i in ids if i not in (runs[1].id, runs[3].id)]
    assert [r.id for r in await backend.list_runs(state=RunState.OPEN, limit=1)] == [opened[0].id]


async def test_prune_deletes_completed_runs_past_retention(backend: Backend) -> None:
    done = await start(backend)
    await backend.enqueue([new(run=done.id)])
    [job] = await lease(backend)
    await backend.complete([job.lease])
    await backend.seal_run(done.id)
    opened = await start(backend)
    sealed = await start(backend)
    await backend.enqueue([new(run=sealed.id)])
    await backend.seal_run(sealed.id)
    keep_jobs = {"completed_before": 0.0, "dead_before": 0.0, "cancelled_before": 0.0}

    await backend.prune(PruneSpec(**keep_jobs))  # no runs_before: runs are kept
    await backend.prune(PruneSpec(**keep_jobs, runs_before=time.time() - 3600))
    assert await backend.get_run(done.id) is not None

    await backend.prune(PruneSpec(**keep_jobs, runs_before=time.time() + 3600))
    assert await backend.get_run(done.id) is None
    assert await backend.get_run(opened.id) is not None
    assert await backend.get_run(sealed.id) is not None
    assert {r.id for r in await backend.list_runs()} == {opened.id, sealed.id}
    kept = await backend.get_job(job.id)
    assert kept is not None and kept.run_id == done.id  # the job keeps its run's id


async def test_prune_of_runs_is_bounded_by_the_limit(backend: Backend) -> None:
    for _ in range(3):
        run = await start(backend)
        await backend.seal_run(run.id)
    spec = PruneSpec(0.0, 0.0, 0.0, limit=2, runs_before=time.time() + 3600)
    # the answer counts the runs deleted with the jobs, so a caller goes on while either is
    # at the limit
    assert await backend.prune(spec) == 2
    assert len(await backend.list_runs()) == 1
    assert await backend.prune(spec) == 1
    assert await backend.list_runs() == []
    assert await backend.prune(spec) == 0


async def test_the_worker_prunes_completed_runs_with_its_completed_retention(
    app: Forebay,
) -> None:
    @app.handler("q")
    async def handle(job: Job) -> None:
        return None

    done = await app.start_run()
    await app.seal_run(done.id)
    opened = await app.start_run()
    hour = WorkerSettings(handle_signals=False, completed_retention=timedelta(hours=1))
    await app.worker(settings=hour).prune_once()
    assert await app.get_run(done.id) is not None
    zero = WorkerSettings(handle_signals=False, completed_retention=timedelta(0))
    assert await app.worker(settings=zero).prune_once() == 1
    assert [r.id for r in await app.list_runs()] == [opened.id]
    with pytest.raises(RunNotFound):
        await app.get_run(done.id)


# -- through the app and a worker ----------------------------------------------------------
async def test_a_handler_fans_out_into_its_sealed_run(app: Forebay) -> None:
    summaries: list[object] = []

    @app.handler("split")
    async def split(job: Job) -> None:
        for i in range(3):
            await job.enqueue("part", {"i": i})

    @app.handler("part")
    async def part(job: Job) -> int:
        return int(job.payload["i"])  # type: ignore[call-overload,index]

    @app.handler("done")
    async def done(job: Job) -> None:
        summaries.append(job.payload)

    run = await app.start_run(name="fan", on_complete="done")
    await app.enqueue("split", {}, run=run.id)
    await app.seal_run(run.id)
    # each queue in turn: what one drains was enqueued by the one before
    for queue in ("split", "part", "done"):
        await drain(app, [queue])
    finished = await app.get_run(run.id)
    assert finished.state is RunState.COMPLETED
    assert (finished.total, finished.completed, finished.unfinished) == (4, 4, 0)
    [summary] = summaries
    assert_same_summary(summary, summary_of(finished))
    parts = await app.backend.list_jobs(JobFilter(queue="part"))
    assert len(parts) == 3 and all(p.run_id == run.id and p.parent_id for p in parts)
    # a job outside any run enqueues plain jobs: no run, no parent link
    await app.enqueue("split", {})
    await drain(app, ["split"])
    loose = [p for p in await app.backend.list_jobs(JobFilter(queue="part")) if p.run_id is None]
    assert len(loose) == 3 and all(p.parent_id is None for p in loose)
