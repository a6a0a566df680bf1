"""Redis specifics of the fleet (key layout 5): worker records and finished-job counts live in
keys of the layout and go when they expire or are pruned, the scripts that finish jobs count
them in the same call, a job's traceparent is a field of its hash, and a store of layout 4 is
upgraded on open and keeps working.

The contract suite (``tests/contract/test_fleet.py``) proves the semantics on every backend.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import redis.asyncio as aioredis

from forebay import NewJob
from forebay.backends import PruneSpec
from forebay.backends.redis import RedisBackend
from forebay.backends.redis.keys import LAYOUT_VERSION, TEMPLATES
from forebay.fleet import WorkerInfo, minute_of
from forebay.job import Failure
from forebay.testing import isolated_store

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def worker(worker_id: str, seen: float, ttl_s: float = 15.0) -> WorkerInfo:
    at = datetime.fromtimestamp(seen, UTC)
    return WorkerInfo(
        id=worker_id,
        host="h",
        pid=1,
        queues=("q",),
        concurrency=4,
        version="0",
        started_at=at,
        last_seen=at,
        ttl_s=ttl_s,
    )


async def keys_of(raw: aioredis.Redis, store: RedisBackend) -> list[str]:
    return sorted([k async for k in raw.scan_iter(match=store.keys.everything(), count=1000)])


async def finish(store: RedisBackend, queue: str, completed: int, dead: int) -> None:
    await store.enqueue([NewJob.create(queue, {"i": i}) for i in range(completed + dead)])
    jobs = await store.lease(queue=queue, limit=completed + dead, worker_id="w", lease_s=30)
    await store.complete([j.lease for j in jobs[:completed]])
    await store.dead_letter([Failure(j.lease, "boom", "ValueError") for j in jobs[completed:]])


async def test_every_fleet_key_is_under_the_prefix_and_in_the_layout(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    now = time.time()
    await asyncio.gather(store.save_worker(worker("w1", now)), store.save_worker(worker("w2", now)))
    await asyncio.gather(finish(store, "a", 2, 1), finish(store, "b", 1, 1))
    await store.enqueue([NewJob.create("a", {}, traceparent=TRACE)])
    await store.lease(queue="a", limit=1, worker_id="dying", lease_s=1.0)
    assert await store.reclaim_expired(now=now + 60) == 1
    patterns = [
        t.format(prefix=store.prefix, id="*", state="*", queue="*", priority="*")
        for t in TEMPLATES.values()
    ]
    found = await keys_of(raw, store)
    for name in ("workers", "worker_deadlines", "minutes", "totals"):
        assert getattr(store.keys, name) in found
    assert store.keys.minute(minute_of(now + 60)) in found
    for key in found:
        assert any(fnmatchcase(key, p) for p in patterns), key
    assert await raw.hgetall(store.keys.totals) == {
        "a completed": "2",
        "a dead": "1",
        "a reclaimed": "1",
        "b completed": "1",
        "b dead": "1",
    }


async def test_a_save_deletes_the_records_past_their_time(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    now = time.time()
    await asyncio.gather(
        store.save_worker(worker("killed-1", now - 600, ttl_s=5.0)),
        store.save_worker(worker("killed-2", now - 300, ttl_s=5.0)),
    )
    await store.save_worker(worker("alive", now))
    assert await raw.hkeys(store.keys.workers) == ["alive"]
    assert await raw.zrange(store.keys.worker_deadlines, 0, -1) == ["alive"]
    await asyncio.gather(store.remove_worker("alive"), store.remove_worker("alive"))
    assert not await raw.exists(store.keys.workers, store.keys.worker_deadlines)


async def test_minutes_are_counted_by_the_script_now_and_pruned_with_their_hash(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    await store.enqueue([NewJob.create("q", {"i": i}) for i in range(6)])
    days_ago = time.time() - 3 * 24 * 3600
    hour_ago = time.time() - 3600
    for at in (days_ago, hour_ago):  # leases lost at two times, reclaimed just after
        await store.lease(queue="q", limit=3, worker_id="dying", lease_s=1.0, now=at)
        assert await store.reclaim_expired(now=at + 5) == 3
    old, recent = minute_of(days_ago + 5), minute_of(hour_ago + 5)
    assert await raw.zrange(store.keys.minutes, 0, -1) == [str(old), str(recent)]
    assert await raw.hgetall(store.keys.minute(old)) == {"q reclaimed": "3"}

    cut = time.time() - 24 * 3600
    spec = PruneSpec(0, 0, 0, throughput_before=cut)
    await asyncio.gather(store.prune(spec), store.prune(spec))
    assert await raw.zrange(store.keys.minutes, 0, -1) == [str(recent)]
    assert not await raw.exists(store.keys.minute(old))
    assert await raw.hgetall(store.keys.totals) == {"q reclaimed": "6"}
    await store.prune(PruneSpec(0, 0, 0))  # no throughput_before: minutes stay
    assert await raw.zrange(store.keys.minutes, 0, -1) == [str(recent)]


async def test_a_jobs_traceparent_is_a_field_of_its_hash_only_when_given(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    traced, plain, keyed = await store.enqueue(
        [
            NewJob.create("q", {}, traceparent=TRACE),
            NewJob.create("q", {}),
            NewJob.create("q", {}, traceparent=TRACE, fair_key="t1", tenant="acme"),
        ]
    )
    assert await raw.hget(store.keys.job(traced.id), "traceparent") == TRACE
    assert not await raw.hexists(store.keys.job(plain.id), "traceparent")
    stored = await store.get_job(keyed.id)
    assert stored is not None
    assert (stored.traceparent, stored.fair_key, stored.tenant) == (TRACE, "t1", "acme")


async def test_a_layout_4_store_upgrades_on_open_and_keeps_working(
    redis_url: str, raw: aioredis.Redis
) -> None:
    async with isolated_store(redis_url) as store:
        assert isinstance(store, RedisBackend)
        # As layout 4 left it: jobs queued and running, finished ones, no fleet keys.
        old = await store.enqueue([NewJob.create("q", {"i": i}) for i in range(4)])
        running = await store.lease(queue="q", limit=2, worker_id="w", lease_s=30)
        await finish(store, "done", 1, 1)
        for minute in await raw.zrange(store.keys.minutes, 0, -1):
            await raw.delete(store.keys.minute(int(minute)))
        await raw.delete(store.keys.totals, store.keys.minutes)
        await raw.set(store.keys.schema, 4)

        first, second = RedisBackend.from_url(redis_url), RedisBackend.from_url(redis_url)
        await asyncio.gather(first.open(), second.open())  # two processes starting at once
        try:
            assert "redis key layout 5 (worker records, finished-job counts)" in (
                first.applied_on_open + second.applied_on_open
            )
            assert await raw.get(store.keys.schema) == str(LAYOUT_VERSION) == "5"
            assert await first.migrate() == []
            job = await second.get_job(old[0].id)
            assert job is not None and job.traceparent is None
            # The jobs leased before the upgrade finish and are counted from now on.
            assert await first.complete([j.lease for j in running]) == []
            rest = await second.lease(queue="q", limit=10, worker_id="w", lease_s=30)
            assert sorted(j.id for j in rest) == [old[2].id, old[3].id]
            await second.complete([j.lease for j in rest])
            [total] = await first.totals()  # not "done": its jobs finished before
            assert (total.queue, total.completed, total.dead) == ("q", 4, 0)
            now = time.time()
            await first.save_worker(worker("w1", now))
            assert [w.id for w in await second.list_workers()] == ["w1"]
        finally:
            await first.close()
            await second.close()
