"""Redis specifics of pruning by queue: each queue's finished jobs are indexed in a sorted set of
its own, and a store of key layout 1 (one index for every queue) is upgraded on open."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from forebay import NewJob
from forebay.backends import PruneSpec
from forebay.backends.redis import RedisBackend
from forebay.backends.redis.keys import LAYOUT_VERSION
from forebay.job import Failure, Lease
from forebay.testing import isolated_store


async def _finish(store: RedisBackend, queue: str, n: int) -> list[int]:
    """``n`` jobs of ``queue``: the first half completed, the rest dead."""
    await store.enqueue([NewJob.create(queue, {"i": i}) for i in range(n)])
    jobs = await store.lease(queue=queue, limit=n, worker_id="w", lease_s=30)
    half = n // 2
    assert await store.complete([Lease(j.id, j.lease_token or "") for j in jobs[:half]]) == []
    failures = [Failure(Lease(j.id, j.lease_token or ""), "E: no", "E") for j in jobs[half:]]
    assert await store.dead_letter(failures) == []
    return [j.id for j in jobs]


async def test_finished_jobs_are_indexed_per_queue(redis_url: str, raw: aioredis.Redis) -> None:
    async with isolated_store(redis_url) as store:
        assert isinstance(store, RedisBackend)
        await _finish(store, "a", 4)
        await _finish(store, "b", 2)
        keys = store.keys
        assert await raw.zcard(keys.queue_done("a", "completed")) == 2
        assert await raw.zcard(keys.queue_done("a", "dead")) == 2
        assert await raw.zcard(keys.queue_done("b", "completed")) == 1
        assert await raw.zcard(keys.done("completed")) == 3  # listings keep their index
        later = time.time() + 60
        spec = PruneSpec(later, later, later, queue="a")
        assert await store.prune(spec) == 4
        assert await raw.zcard(keys.queue_done("a", "completed")) == 0
        assert await raw.zcard(keys.done("completed")) == 1  # b's, still there


async def test_a_layout_1_store_is_indexed_per_queue_when_opened(
    redis_url: str, raw: aioredis.Redis
) -> None:
    async with isolated_store(redis_url) as store:
        assert isinstance(store, RedisBackend)
        ids = await _finish(store, "a", 6) + await _finish(store, "b", 4)
        # As layout 1 left it: one index per state for every queue, none per queue.
        for queue in ("a", "b"):
            for state in ("completed", "dead"):
                await raw.delete(store.keys.queue_done(queue, state))
        await raw.set(store.keys.schema, 1)
        again = RedisBackend.from_url(redis_url)
        await again.open()
        try:
            assert again.applied_on_open == [
                "redis key layout 2 (finished jobs indexed per queue)",
                "redis key layout 3 (runs and waiting jobs)",
                "redis key layout 4 (flow control: lanes, rate buckets, tenants)",
                "redis key layout 5 (worker records, finished-job counts)",
            ]
            assert await raw.get(store.keys.schema) == str(LAYOUT_VERSION)
            assert await raw.zcard(store.keys.queue_done("a", "dead")) == 3
            later = time.time() + 60
            assert await again.prune(PruneSpec(later, later, later, queue="b")) == 4
            assert await again.prune(PruneSpec(later, later, later, other_than=("b",))) == 6
            assert [await again.get_job(i) for i in ids] == [None] * len(ids)
            await again.migrate()
            assert await again.migrate() == []  # done once
        finally:
            await again.close()
