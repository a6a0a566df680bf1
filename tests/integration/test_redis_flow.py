"""Flow control in the redis backend's own keys (tests/contract/test_flow.py has the semantics).

A job that carries a flow key waits in its lane (``P:q:Q:lane:L``), never in a stream: every
way back to queued must put it there again, or the lease would never see it. Per-key running
counts live in ``P:q:Q:running_keys``: every way out of running must give the slot back, or a
key would stay blocked for good. Tenants' counts live beside the queues'.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from forebay import JobFilter, JobState, NewJob
from forebay.backends.redis import RedisBackend
from forebay.backends.redis.keys import LAYOUT_VERSION
from forebay.flow import FlowLimits, Rate
from forebay.job import Deferral, Failure, Retry
from forebay.testing import isolated_store

WORKER = "redis-flow"


def new(n: int = 0, **kw: object) -> NewJob:
    return NewJob.create("q", {"n": n}, **kw)  # type: ignore[arg-type]


async def lease(store: RedisBackend, now: float, limit: int = 10, lease_s: float = 30.0):
    return await store.lease(queue="q", limit=limit, worker_id=WORKER, lease_s=lease_s, now=now)


async def in_lanes(store: RedisBackend, raw: aioredis.Redis) -> set[int]:
    """The ids waiting in the lanes of queue q."""
    ids: set[int] = set()
    for lane in await raw.smembers(store.keys.lanes("q")):
        ids.update(int(m) for m in await raw.zrange(store.keys.lane("q", lane), 0, -1))
    return ids


async def in_streams(store: RedisBackend, raw: aioredis.Redis) -> set[int]:
    ids: set[int] = set()
    for level in await raw.zrange(store.keys.levels("q"), 0, -1):
        for _entry, fields in await raw.xrange(store.keys.stream("q", level)):
            ids.add(int(fields["id"]))
    return ids


async def test_every_way_back_to_queued_puts_a_keyed_job_in_its_lane(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    await store.set_queue("q", limits=FlowLimits(rate_per_key=Rate(100, 1.0)))
    jobs = await store.enqueue([new(i, rate_key=f"k{i % 2}", fair_key="t") for i in range(5)])
    ids = {j.id for j in jobs}
    assert await in_lanes(store, raw) == ids and not await in_streams(store, raw)
    t = time.time() + 1.0
    got = await lease(store, t)
    assert {j.id for j in got} == ids and await in_lanes(store, raw) == set()
    by_n = {j.payload["n"]: j for j in got}
    await store.retry([Retry(by_n[0].lease, run_at=t, error="e", error_type="E")])
    await store.defer([Deferral(by_n[1].lease, run_at=t, reason="later")])
    await store.release([by_n[2].lease])
    await store.dead_letter([Failure(by_n[3].lease, error="e", error_type="E")])
    assert await store.replay(JobFilter(queue="q")) == 1
    # job 4's lease runs out: the reclaimer puts it back
    await store.reclaim_expired(now=t + 60.0)
    assert await in_lanes(store, raw) == ids and not await in_streams(store, raw)
    again = await lease(store, t + 61.0)
    assert {j.id for j in again} == ids
    # a child released by its parent's finish goes to its lane as well
    parent = got[0]
    [child] = await store.enqueue([NewJob.create("q", {"n": 9}, after=[parent.id], rate_key="k0")])
    assert child.state == JobState.WAITING
    for j in again:
        await store.complete([j.lease])
    assert child.id in await in_lanes(store, raw)
    assert [j.id for j in await lease(store, t + 62.0)] == [child.id]


async def test_run_now_and_cancel_find_a_job_in_its_lane(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    later, gone = await store.enqueue(
        [new(1, concurrency_key="h", delay=3600.0), new(2, concurrency_key="h")]
    )
    assert await store.run_now([later.id]) == [later.id]
    assert await store.cancel([gone.id]) == [gone.id]
    assert await in_lanes(store, raw) == {later.id}
    assert [j.id for j in await lease(store, time.time() + 1.0)] == [later.id]
    assert await raw.smembers(store.keys.lanes("q")) == set()  # an empty lane is forgotten


async def test_per_key_running_counts_return_to_zero_after_every_exit(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    await store.set_queue("q", limits=FlowLimits(concurrency_per_key=10))
    keys = ["a", "b"]
    await store.enqueue([new(i, concurrency_key=keys[i % 2]) for i in range(7)])
    t = time.time() + 1.0
    got = await lease(store, t, lease_s=5.0)
    assert len(got) == 7
    running = await raw.hgetall(store.keys.running_keys("q"))
    assert running == {"a": "4", "b": "3"}
    await store.complete([got[0].lease])
    await store.retry([Retry(got[1].lease, run_at=t + 3600, error="e", error_type="E")])
    await store.dead_letter([Failure(got[2].lease, error="e", error_type="E")])
    await store.defer([Deferral(got[3].lease, run_at=t + 3600, reason="later")])
    await store.release([got[4].lease])
    await store.cancel([got[5].id])
    await store.reclaim_expired(now=t + 6.0)  # got[6]
    assert await raw.hgetall(store.keys.running_keys("q")) == {}
    counts = {c.queue: c for c in await store.counts()}
    assert counts["q"].running == 0


async def test_tenant_counts_agree_with_the_jobs(store: RedisBackend) -> None:
    await store.enqueue([new(i, tenant="acme") for i in range(4)])
    await store.enqueue([new(10 + i, tenant="globex", rate_key="r") for i in range(3)])
    t = time.time() + 1.0
    got = await lease(store, t, limit=4)
    await store.complete([got[0].lease])
    await store.dead_letter([Failure(got[1].lease, error="e", error_type="E")])
    await store.retry([Retry(got[2].lease, run_at=t + 3600, error="e", error_type="E")])
    await store.cancel([got[3].id])
    for tenant in ("acme", "globex"):
        [c] = await store.counts(tenant=tenant)
        for state in JobState:
            listed = await store.list_jobs(JobFilter(tenant=tenant, state=state), limit=100)
            assert getattr(c, str(state)) == len(listed), (tenant, state)


async def test_a_layout_3_store_with_queued_jobs_upgrades_and_leases_them(
    redis_url: str, raw: aioredis.Redis
) -> None:
    async with isolated_store(redis_url) as store:
        assert isinstance(store, RedisBackend)
        old = await store.enqueue([new(i) for i in range(3)] + [new(3, delay=1.0)])
        await raw.set(store.keys.schema, 3)
        again = RedisBackend.from_url(redis_url)
        await again.open()
        try:
            assert again.applied_on_open == [
                "redis key layout 4 (flow control: lanes, rate buckets, tenants)",
                "redis key layout 5 (worker records, finished-job counts)",
            ]
            assert await raw.get(store.keys.schema) == str(LAYOUT_VERSION)
            await again.set_queue("q", limits=FlowLimits(rate=Rate(2, 1.0), fair=True))
            t = time.time() + 5.0
            first = await again.lease(queue="q", limit=10, worker_id=WORKER, lease_s=30, now=t)
            assert [j.id for j in first] == [old[0].id, old[1].id]
            rest = await again.lease(queue="q", limit=10, worker_id=WORKER, lease_s=30, now=t + 1)
            assert [j.id for j in rest] == [old[2].id, old[3].id]
        finally:
            await again.close()


async def test_lane_heads_name_each_lanes_first_job(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    """The lease walks P:q:Q:heads:R instead of every lane: after arrivals, leases, put-backs,
    run-now and cancels, each lane's entry there is its first job, at its run_at."""
    await store.set_queue("q", limits=FlowLimits(rate_per_key=Rate(1000, 1.0)))
    t = time.time() + 1.0
    jobs = await store.enqueue(
        [new(i, rate_key=f"k{i % 3}", priority=i % 2, delay=(i % 4) * 0.5) for i in range(24)]
    )
    got = await lease(store, t + 1.0, limit=5)
    await store.retry([Retry(got[0].lease, run_at=t - 10, error="e", error_type="E")])
    await store.release([got[1].lease])
    await store.cancel([jobs[10].id, jobs[11].id])
    await store.run_now([j.id for j in jobs if j.payload["n"] % 4 == 3])
    await lease(store, t + 0.2, limit=3)
    expected: dict[str, set[tuple[str, float]]] = {}
    for lane in await raw.smembers(store.keys.lanes("q")):
        [(first, at)] = await raw.zrange(store.keys.lane("q", lane), 0, 0, withscores=True)
        expected.setdefault(lane.split("\x00")[0], set()).add((first + lane, at))
    for priority in ("0", "1"):
        heads = await raw.zrange(store.keys.heads("q", priority), 0, -1, withscores=True)
        assert set(heads) == expected.get(priority, set())
    # and every queued job is still leased, best first within its priority
    rest = await lease(store, t + 10.0, limit=100)
    queued = await store.list_jobs(JobFilter(queue="q", state=JobState.QUEUED), limit=100)
    assert queued == [] and len(rest) > 0
    assert [j.priority for j in rest] == sorted((j.priority for j in rest), reverse=True)


async def test_every_filter_use_narrows_to_a_tenant(store: RedisBackend) -> None:
    t = time.time() + 1.0
    await store.enqueue([new(i, tenant=("acme", "globex")[i % 2]) for i in range(8)])
    got = await lease(store, t, limit=4)
    await store.dead_letter([Failure(j.lease, error="e", error_type="E") for j in got])
    acme, globex = JobFilter(tenant="acme"), JobFilter(tenant="globex")
    assert {j.tenant for j in await store.list_dead(acme)} == {"acme"}
    assert len(await store.list_dead(acme)) == 2
    assert await store.replay(acme) == 2
    assert await store.purge(globex) == 2
    assert await store.cancel_where(JobFilter(tenant="acme", state=JobState.QUEUED)) == 4
    left = await store.list_jobs(JobFilter(state=JobState.QUEUED), limit=100)
    assert {j.tenant for j in left} == {"globex"} and len(left) == 2
    [c] = await store.counts(tenant="acme")
    assert (c.queued, c.cancelled, c.dead) == (0, 4, 0)


async def heads_agree(store: RedisBackend, raw: aioredis.Redis) -> None:
    """Each lane in P:q:Q:lanes holds jobs, and its entry in its level's heads is its first."""
    expected: dict[str, set[tuple[str, float]]] = {}
    for lane in await raw.smembers(store.keys.lanes("q")):
        [(first, at)] = await raw.zrange(store.keys.lane("q", lane), 0, 0, withscores=True)
        expected.setdefault(lane.split("\x00")[0], set()).add((first + lane, at))
    for priority in ("0", "1"):
        heads = await raw.zrange(store.keys.heads("q", priority), 0, -1, withscores=True)
        assert set(heads) == expected.get(priority, set())


@pytest.mark.parametrize(
    "limits",
    [
        FlowLimits(),
        FlowLimits(rate_per_key=Rate(1000, 1.0)),
        FlowLimits(rate_per_key=Rate(1000, 1.0), fair=True),
    ],
    ids=["no-limits", "per-key-rate", "fair-one-group"],
)
async def test_leases_over_many_lanes_go_best_first_and_keep_the_heads(
    store: RedisBackend, raw: aioredis.Redis, limits: FlowLimits
) -> None:
    """A lease takes several jobs from some lanes and the first of others, empties lanes and
    stops before jobs not yet due: it takes the jobs in (priority, run_at, id) order, as with
    jobs without keys (fair with one group of 40 lanes: the same), and leaves each lane's
    head in place."""
    await store.set_queue("q", limits=limits)
    t = time.time() + 1.0
    jobs = await store.enqueue(
        [
            new(i, rate_key=f"k{i % 40}" if i % 7 else f"k{i % 3}", priority=int(i % 5 == 0))
            for i in range(200)
        ]
        + [new(200 + i, rate_key=f"k{i}", delay=30.0) for i in range(10)]
    )
    due = sorted(jobs[:200], key=lambda j: (-j.priority, j.run_at, j.id))
    leased: list[int] = []
    for limit in (1, 7, 30, 2, 100, 100):
        got = await lease(store, t, limit=limit)
        leased += [j.id for j in got]
        await heads_agree(store, raw)
    assert leased == [j.id for j in due]
    assert await in_lanes(store, raw) == {j.id for j in jobs[200:]}
