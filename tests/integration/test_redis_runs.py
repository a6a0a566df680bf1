"""Runs and dependencies in the redis backend's own keys (own key prefix per test).

The contract suite proves the semantics; these tests pin what is specific to Redis: a refused
call among concurrent enqueues merged into one script call fails alone, a long chain is
cancelled in one script, the per-queue counters agree with the waiting index, the keys of runs
and children live in the layout and go with what they belong to, and a job whose run is gone
never brings the run back.
"""

from __future__ import annotations

import asyncio
import time
from fnmatch import fnmatchcase
from typing import Any

import redis.asyncio as aioredis

from forebay import EnqueueError, Job, JobFilter, JobState, NewJob
from forebay.backends import PruneSpec
from forebay.backends.redis import RedisBackend
from forebay.backends.redis.keys import TEMPLATES
from forebay.errors import RunSealed, UnknownParent, UnknownRun
from forebay.job import Failure
from forebay.runs import NewRun, RunState


def new(queue: str = "q", **kw: Any) -> NewJob:
    return NewJob.create(queue, {"n": 1}, **kw)


async def lease(store: RedisBackend, limit: int = 10) -> list[Job]:
    return await store.lease(queue="q", limit=limit, worker_id="w", lease_s=30.0)


async def keys_of(raw: aioredis.Redis, store: RedisBackend) -> list[str]:
    return sorted([k async for k in raw.scan_iter(match=store.keys.everything(), count=1000)])


async def test_a_refused_call_among_merged_enqueues_fails_alone(store: RedisBackend) -> None:
    open_run = await store.start_run(NewRun.create())
    sealed = await store.start_run(NewRun.create())
    await store.enqueue([new(run=sealed.id)])
    await store.seal_run(sealed.id)
    [parent] = await store.enqueue([new("p")])
    bad = {
        1: new(run="no-such-run"),
        2: new(run=sealed.id),
        3: new(after=[parent.id, 999_999]),
    }

    async def one(i: int) -> Job | EnqueueError:
        job = bad.get(i % 4) or new(run=open_run.id, after=[parent.id])
        try:
            return (await store.enqueue([job, new("other")]))[0]
        except EnqueueError as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(200)))
    for i, result in enumerate(results):
        expected = {1: UnknownRun, 2: RunSealed, 3: UnknownParent}.get(i % 4, Job)
        assert isinstance(result, expected), (i, result)
    got = await store.get_run(open_run.id)
    assert got is not None and (got.total, got.waiting) == (50, 50)
    counts = {c.queue: c for c in await store.counts()}
    assert counts["q"].waiting == 50 and counts["other"].queued == 50


async def test_a_long_chain_is_cancelled_in_one_script(store: RedisBackend) -> None:
    run = await store.start_run(NewRun.create(on_complete="done"))
    [head] = await store.enqueue([new(run=run.id)])
    last = head
    for _ in range(300):
        [last] = await store.enqueue([new(run=run.id, after=[last.id], webhook="https://h.test/")])
    await store.seal_run(run.id)
    [held] = await lease(store)
    assert await store.dead_letter([Failure(held.lease, "bad", "ValueError")]) == []
    tail = await store.get_job(last.id)
    assert tail is not None and tail.state is JobState.CANCELLED
    done = await store.get_run(run.id)
    assert done is not None and done.state is RunState.COMPLETED
    assert (done.total, done.dead, done.cancelled, done.waiting) == (301, 1, 300, 0)
    counts = {c.queue: c for c in await store.counts()}
    assert (counts["q"].waiting, counts["q"].cancelled) == (0, 300)
    assert counts["forebay.webhooks"].queued == 300 and counts["done"].queued == 1


async def test_waiting_counts_agree_with_the_waiting_index(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    parents = await store.enqueue([new() for _ in range(4)])
    children = await store.enqueue(
        [new("c", after=[p.id for p in parents[: i + 1]]) for i in range(4)]
    )
    assert [c.state for c in children] == [JobState.WAITING] * 4
    held = await lease(store, limit=2)
    await store.complete([j.lease for j in held])
    await store.cancel([children[3].id])

    waiting = await store.list_jobs(JobFilter(state=JobState.WAITING))
    indexed = await raw.zrange(store.keys.waiting_jobs, 0, -1)
    assert sorted(str(j.id) for j in waiting) == sorted(indexed)
    [counts] = [c for c in await store.counts() if c.queue == "c"]
    assert counts.waiting == len(indexed) == 1  # two released, one cancelled
    assert (counts.queued, counts.cancelled) == (2, 1)


async def test_run_and_children_keys_are_in_the_layout_and_go_with_their_owners(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    run = await store.start_run(NewRun.create(key="nightly", on_complete="done"))
    [parent] = await store.enqueue([new(run=run.id)])
    [child] = await store.enqueue([new(run=run.id, after=[parent.id])])
    await store.seal_run(run.id)
    patterns = [
        t.format(prefix=store.prefix, id="*", state="*", queue="*", priority="*")
        for t in TEMPLATES.values()
    ]
    for key in await keys_of(raw, store):
        assert any(fnmatchcase(key, p) for p in patterns), key
    assert await raw.exists(store.keys.run(run.id), f"{store.prefix}:children:{parent.id}") == 2

    for job in (parent, child):
        [held] = await lease(store)
        assert held.id == job.id
        await store.complete([held.lease])
    later = time.time() + 60
    await store.prune(PruneSpec(later, later, later, runs_before=later))
    assert await store.get_run(run.id) is None
    left = await keys_of(raw, store)
    assert not [k for k in left if ":children:" in k or ":run:" in k], left
    assert await raw.hlen(f"{store.prefix}:run_keys") == 0
    again = await store.start_run(NewRun.create(key="nightly"))
    assert again.created and again.id != run.id


async def test_a_job_whose_run_is_gone_never_brings_it_back(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    run = await store.start_run(NewRun.create())
    [job] = await store.enqueue([new(run=run.id)])
    await raw.delete(store.keys.run(run.id))  # as a pruned run, or a run_id from layout 2
    [held] = await lease(store)
    await store.dead_letter([Failure(held.lease, "bad", "ValueError")])
    assert await store.replay(JobFilter(ids=(job.id,))) == 1
    [again] = await lease(store)
    await store.complete([again.lease])
    assert await raw.exists(store.keys.run(run.id)) == 0
    stored = await store.get_job(job.id)
    assert stored is not None and stored.run_id == run.id
    assert stored.state is JobState.COMPLETED


async def test_a_replayed_parent_counts_once_for_a_child_that_runs_always(
    store: RedisBackend,
) -> None:
    a, b = await store.enqueue([new("p"), new("p")])
    [child] = await store.enqueue([new(after=[a.id, b.id], after_policy="always")])
    [held] = await store.lease(queue="p", limit=1, worker_id="w", lease_s=30.0)
    assert held.id == a.id
    await store.dead_letter([Failure(held.lease, "bad", "ValueError")])
    assert await store.replay(JobFilter(ids=(a.id,))) == 1
    both = await store.lease(queue="p", limit=2, worker_id="w", lease_s=30.0)
    [held] = [j for j in both if j.id == a.id]
    await store.dead_letter([Failure(held.lease, "bad", "ValueError")])
    waits = await store.get_job(child.id)
    assert waits is not None and waits.state is JobState.WAITING  # b is still running
