"""The redis backend's own mechanics, on the Redis server at 127.0.0.1:6379 (own key prefix).

The contract suite proves the semantics; these tests pin what is specific to Redis: the streams
hold only waiting and running jobs, a lease is the job's own deadline, idle workers are woken
across processes, counters kept by the scripts agree with the jobs, keys live under one prefix.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from importlib import resources
from typing import Any

import psutil
import pytest
import redis.asyncio as aioredis

from forebay import (
    BackendUnavailable,
    Backoff,
    ConfigError,
    Forebay,
    Job,
    JobFilter,
    JobState,
    NewJob,
    QueueFull,
    WorkerSettings,
)
from forebay.backends import PruneSpec, backend_from_url
from forebay.backends.redis import RedisBackend
from forebay.backends.redis.keys import GROUP, LAYOUT_VERSION, TEMPLATES
from forebay.job import Deferral, Failure, Lease, Retry
from tests.servers import REDIS_URL

FAR = 10_000.0


def new(queue: str = "q", **kw: Any) -> NewJob:
    return NewJob.create(queue, {"n": 1}, **kw)


async def lease(store: RedisBackend, limit: int = 10, lease_s: float = 30.0) -> list[Job]:
    return await store.lease(queue="q", limit=limit, worker_id="w", lease_s=lease_s)


def own_tcp_addresses() -> set[str]:
    """``host:port`` of this process's TCP sockets, as CLIENT LIST shows its clients' ``addr``."""
    return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections(kind="tcp")}


async def keys_of(raw: aioredis.Redis, store: RedisBackend) -> list[str]:
    return sorted([k async for k in raw.scan_iter(match=store.keys.everything(), count=1000)])


# -- URLs -------------------------------------------------------------------------------------
def test_url_options_and_defaults() -> None:
    backend = RedisBackend.from_url("redis://127.0.0.1:6379/2")
    assert backend.prefix == "forebay" and backend.reconnect_s == 10.0
    tuned = RedisBackend.from_url(
        "redis://127.0.0.1:6379/2?prefix=app1&reconnect_s=2.5&socket_timeout=3"
    )
    assert tuned.prefix == "app1" and tuned.reconnect_s == 2.5
    assert tuned.url == "redis://127.0.0.1:6379/2?socket_timeout=3"  # the rest is redis-py's
    assert backend_from_url("rediss://h:6379").capabilities.name == "redis"


def test_upstash_url_form_is_accepted_and_masked() -> None:
    backend = backend_from_url("rediss://default:AXyZtoken123@eu1-fine-cat-1234.upstash.io:6379")
    assert isinstance(backend, RedisBackend)
    assert "AXyZtoken123" not in repr(backend)
    assert "eu1-fine-cat-1234.upstash.io" in repr(backend)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?prefix=",
        "redis://127.0.0.1:6379/0?prefix=a*b",
        "redis://127.0.0.1:6379/0?reconnect_s=soon",
        "redis://127.0.0.1:6379/0?reconnect_s=-1",
        "redis://127.0.0.1:notaport/0",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        backend_from_url(url)


async def test_unreachable_server_is_backend_unavailable() -> None:
    backend = backend_from_url("redis://127.0.0.1:1/0?reconnect_s=0")
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await backend.open()


def test_enqueue_cannot_join_a_transaction() -> None:
    backend = RedisBackend()
    with pytest.raises(ConfigError, match="transaction"):
        asyncio.run(backend.enqueue([new()], connection=object()))


# -- key layout -------------------------------------------------------------------------------
def test_scripts_take_every_key_name_from_the_keys_module() -> None:
    folder = resources.files("forebay.backends.redis").joinpath("lua")
    for script in folder.iterdir():
        code = "\n".join(
            line.split("--")[0] for line in script.read_text(encoding="utf-8").splitlines()
        )  # the header comments document the layout; the code may not spell it
        assert "PREFIX" not in code, script.name  # only the generated prelude spells names
        assert ":job:" not in code and ":q:" not in code, script.name


async def test_every_key_is_under_the_prefix_and_in_the_layout(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    await store.enqueue([new(key="k"), new(priority=3), new(delay=3600), new("other")])
    [job, *_] = await lease(store, limit=2)
    await store.complete([job.lease])
    await store.cancel([(await store.enqueue([new()]))[0].id])
    patterns = [
        t.format(prefix=store.prefix, id="*", state="*", queue="*", priority="*")
        for t in TEMPLATES.values()
    ]
    found = await keys_of(raw, store)
    assert found
    for key in found:
        assert key.startswith(store.prefix + ":")
        assert any(fnmatchcase(key, p) for p in patterns), key


async def test_waiters_ride_out_a_killed_finish_subscription(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    first, second = await store.enqueue([new(), new()])
    before = {c["id"] for c in await raw.client_list(_type="pubsub")}
    assert await store.wait_for_finish(first.id, timeout_s=0) is not None  # subscribes
    new_ones = [c for c in await raw.client_list(_type="pubsub") if c["id"] not in before]
    # Tests in other processes (another pytest-xdist worker) may subscribe meanwhile: ours is
    # the one on a socket of this process (when the server sees our address, as on 127.0.0.1).
    mine = own_tcp_addresses()
    ours = [c["id"] for c in new_ones if c["addr"] in mine] or [c["id"] for c in new_ones]
    assert len(ours) == 1 and store._subscriber.subscribed
    await raw.client_kill_filter(_id=ours[0])
    # While it resubscribes, waiters re-read every 0.5 s; once back, messages wake them.
    waiter = asyncio.create_task(store.wait_for_finish(first.id, timeout_s=60))
    assert await store.cancel([first.id]) == [first.id]
    async with asyncio.timeout(10):
        assert (await waiter) is not None
    async with asyncio.timeout(30):
        while not store._subscriber.subscribed:
            await store.wait_for_finish(second.id, timeout_s=0.05)
    waiter = asyncio.create_task(store.wait_for_finish(second.id, timeout_s=600))
    assert await store.cancel([second.id]) == [second.id]
    async with asyncio.timeout(10):
        finished = await waiter
    assert finished is not None and finished.state == "cancelled"


async def test_drop_everything_keeps_other_prefixes(redis_url: str, raw: aioredis.Redis) -> None:
    mine = RedisBackend.from_url(redis_url)
    neighbour = RedisBackend(REDIS_URL, prefix=mine.prefix + "-neighbour")
    await mine.open()
    await neighbour.open()
    try:
        await mine.enqueue([new()])
        [kept] = await neighbour.enqueue([new()])
        await mine.drop_everything()
        assert await keys_of(raw, mine) == []
        assert await neighbour.get_job(kept.id) is not None
    finally:
        await neighbour.drop_everything()
        await neighbour.close()
        await mine.close()


async def test_migrate_records_the_layout_and_refuses_a_newer_one(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    assert await store.migrate() == []
    assert await raw.get(store.keys.schema) == str(LAYOUT_VERSION)
    await raw.set(store.keys.schema, LAYOUT_VERSION + 1)
    with pytest.raises(ConfigError, match="newer forebay"):
        await store.migrate()


# -- streams ------------------------------------------------------------------------------------
async def test_a_due_job_goes_through_the_stream_and_leaves_it(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    stream = store.keys.stream("q", 0)
    await store.enqueue([new()])
    assert await raw.xlen(stream) == 1
    [job] = await lease(store)
    pending = await raw.xpending(stream, GROUP)
    assert pending["pending"] == 1  # delivered with XREADGROUP, not yet acknowledged
    assert await store.complete([job.lease]) == []
    assert await raw.xlen(stream) == 0  # XACK + XDEL: finished entries do not accumulate
    assert (await raw.xpending(stream, GROUP))["pending"] == 0


async def test_streams_hold_only_waiting_and_running_jobs(
    redis_url: str, raw: aioredis.Redis
) -> None:
    app = Forebay(redis_url)
    seen: list[int] = []

    @app.handler("q", concurrency=16, max_attempts=2, backoff=Backoff(base_s=0, jitter=False))
    async def handle(job: Job) -> None:
        seen.append(job.id)
        if job.payload["i"] % 7 == 0 and job.attempt == 1:  # type: ignore[index,call-overload]
            raise RuntimeError("flaky once")

    try:
        await app.enqueue_many([NewJob.create("q", {"i": i}, priority=i % 3) for i in range(600)])
        await app.run_worker(burst=True, settings=WorkerSettings(handle_signals=False))
        assert len(seen) == 600 + len(range(0, 600, 7))  # every job, the flaky ones twice
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        for priority in range(3):
            assert await raw.xlen(backend.keys.stream("q", priority)) == 0
            assert (await raw.xpending(backend.keys.stream("q", priority), GROUP))["pending"] == 0
    finally:
        await app.backend.drop_everything()
        await app.close()


async def test_a_job_due_earlier_than_the_stream_waits_in_the_waiting_set(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    now = datetime.now(UTC)
    [later] = await store.enqueue([new()])
    [earlier] = await store.enqueue([new(run_at=now - timedelta(minutes=5))])
    assert await raw.xlen(store.keys.stream("q", 0)) == 1
    assert await raw.zcard(store.keys.waiting("q", 0)) == 1
    assert [j.id for j in await lease(store)] == [earlier.id, later.id]


async def test_pruning_removes_finished_jobs_and_empty_levels(
    store: RedisBackend, raw: aioredis.Redis
) -> None:
    await store.enqueue([new(priority=p, key=f"k{p}") for p in (0, 5, 9)])
    jobs = await lease(store)
    await store.complete([j.lease for j in jobs])
    future = time.time() + FAR
    assert await store.prune(PruneSpec(future, future, future)) == 3
    assert await raw.zrange(store.keys.levels("q"), 0, -1) == ["0"]
    assert await raw.zcard(store.keys.jobs) == 0
    left = [k for k in await keys_of(raw, store) if ":job:" in k]
    assert left == []
    # the key is free again once its job is pruned
    assert (await store.enqueue([new(key="k5")]))[0].created


# -- leases -------------------------------------------------------------------------------------
async def test_the_lease_deadline_is_the_jobs_own_and_heartbeats_move_it(
    store: RedisBackend,
) -> None:
    await store.enqueue([new(), new()])
    short, long_ = await lease(store, lease_s=5)
    now = time.time()
    assert await store.extend([long_.lease], lease_s=3600) == []
    assert await store.reclaim_expired(now=now + 60) == 1  # only the one not heartbeating
    assert (await store.get_job(short.id)).state is JobState.QUEUED  # type: ignore[union-attr]
    assert (await store.get_job(long_.id)).state is JobState.RUNNING  # type: ignore[union-attr]
    assert await store.complete([long_.lease]) == []


async def test_reclaimed_and_released_jobs_keep_their_place(store: RedisBackend) -> None:
    first, second, third = await store.enqueue([new(), new(), new()])
    leased = await lease(store, limit=2, lease_s=1)
    assert [j.id for j in leased] == [first.id, second.id]
    assert await store.release([leased[1].lease]) == []
    assert await store.reclaim_expired(now=time.time() + 60) == 1
    again = await lease(store)
    assert [j.id for j in again] == [first.id, second.id, third.id]
    assert again[0].deliveries == 2 and again[0].attempt == 1  # crash: the attempt given back
    assert again[1].deliveries == 1 and again[1].attempt == 1  # release: both given back


async def test_every_transition_out_of_running_checks_the_token(store: RedisBackend) -> None:
    await store.enqueue([new() for _ in range(5)])
    jobs = await lease(store)
    stale = [Lease(j.id, "stale") for j in jobs]
    now = time.time()
    assert await store.complete(stale[:1]) == [jobs[0].id]
    assert await store.retry([Retry(stale[1], now, "e", "E")]) == [jobs[1].id]
    assert await store.dead_letter([Failure(stale[2], "e", "E")]) == [jobs[2].id]
    assert await store.defer([Deferral(stale[3], now, "r")]) == [jobs[3].id]
    assert await store.release(stale[4:]) == [jobs[4].id]
    assert await store.extend(stale, lease_s=10) == [j.id for j in jobs]
    assert not await store.progress(stale[0], pct=10, message=None)
    assert {(await store.get_job(j.id)).state for j in jobs} == {JobState.RUNNING}  # type: ignore[union-attr]


# -- waking idle workers --------------------------------------------------------------------------
async def test_an_enqueue_elsewhere_wakes_an_idle_waiter_at_once(
    store: RedisBackend, redis_url: str
) -> None:
    producer = RedisBackend.from_url(redis_url)
    await producer.open()
    try:
        waiting = asyncio.create_task(store.wait_for_work(["q"], timeout_s=30))
        await asyncio.sleep(0)  # let it poll and block
        t0 = time.monotonic()
        await producer.enqueue([new()])
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - t0 < 5  # woken by the entry, not by the 30 s timeout
        assert len(await lease(store)) == 1
    finally:
        await producer.close()


async def test_a_scheduled_job_wakes_the_waiter_when_due(store: RedisBackend) -> None:
    await store.enqueue([new(delay=timedelta(milliseconds=200))])
    assert await lease(store) == []
    t0 = time.monotonic()
    await asyncio.wait_for(store.wait_for_work(["q"], timeout_s=30), 10)
    assert time.monotonic() - t0 < 5
    assert len(await lease(store)) == 1


async def test_a_job_put_back_elsewhere_wakes_the_waiter(
    store: RedisBackend, redis_url: str
) -> None:
    other = RedisBackend.from_url(redis_url)
    await other.open()
    try:
        await store.enqueue([new()])
        [job] = await other.lease(queue="q", limit=1, worker_id="other", lease_s=30)
        waiting = asyncio.create_task(store.wait_for_work(["q"], timeout_s=30))
        await asyncio.sleep(0)
        await other.release([job.lease])
        await asyncio.wait_for(waiting, 10)
        assert [j.id for j in await lease(store)] == [job.id]
    finally:
        await other.close()


async def test_wait_returns_after_its_timeout_when_nothing_comes(store: RedisBackend) -> None:
    t0 = time.monotonic()
    await store.wait_for_work(["q"], timeout_s=0.2)
    assert 0.15 < time.monotonic() - t0 < 5


# -- counters and group commit ------------------------------------------------------------------
async def _settle_randomly(store: RedisBackend, rng: random.Random, jobs: list[Job]) -> None:
    now = time.time()
    for j in jobs:
        action = rng.choice(["complete", "retry", "dead", "defer", "release", "keep"])
        if action == "complete":
            await store.complete([j.lease])
        elif action == "retry":
            await store.retry([Retry(j.lease, now + rng.choice([-1, 3600]), "e", "E")])
        elif action == "dead":
            await store.dead_letter([Failure(j.lease, "e", "E")])
        elif action == "defer":
            await store.defer([Deferral(j.lease, now + rng.choice([-1, 3600]), "r")])
        elif action == "release":
            await store.release([j.lease])


async def _random_step(store: RedisBackend, rng: random.Random) -> None:
    choice = rng.random()
    if choice < 0.35:
        batch = [
            new(priority=rng.choice([0, 1, 5]), delay=rng.choice([0, 0, 3600]))
            for _ in range(rng.randint(1, 5))
        ]
        await store.enqueue(batch)
    elif choice < 0.7:
        jobs = await lease(store, limit=rng.randint(1, 4), lease_s=rng.choice([1, 60]))
        await _settle_randomly(store, rng, jobs)
    elif choice < 0.8:
        await store.reclaim_expired(now=time.time() + 30)
    elif choice < 0.9:
        queued = await store.list_jobs(JobFilter(state=JobState.QUEUED), limit=3)
        await store.cancel([j.id for j in queued[: rng.randint(0, 2)]])
    else:
        await store.replay(JobFilter())


async def test_counters_agree_with_the_jobs_after_a_random_mix(store: RedisBackend) -> None:
    rng = random.Random(7)
    for _ in range(60):
        await _random_step(store, rng)
    at = time.time()
    jobs = await store.list_jobs(JobFilter(), limit=10_000)
    [counts] = await store.counts(now=at)
    for state in JobState:
        assert getattr(counts, state.value) == sum(1 for j in jobs if j.state is state), state
    queued = [j for j in jobs if j.state is JobState.QUEUED]
    assert counts.scheduled == sum(1 for j in queued if j.run_at and j.run_at.timestamp() > at)
    assert counts.retrying == sum(1 for j in queued if j.attempt > 0)
    due = [j.run_at.timestamp() for j in queued if j.run_at and j.run_at.timestamp() <= at]
    if due:
        assert counts.oldest_queued_age_s == pytest.approx(at - min(due), abs=1e-3)
    else:
        assert counts.oldest_queued_age_s is None


async def test_concurrent_enqueues_each_get_their_own_answer(store: RedisBackend) -> None:
    async def one(i: int) -> Job | QueueFull:
        try:
            return (await store.enqueue([new(key=f"k{i % 150}")], max_depth={"q": 100}))[0]
        except QueueFull as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(300)))
    jobs = [r for r in results if isinstance(r, Job)]
    created = {j.id for j in jobs if j.created}
    assert len(created) == 100  # exactly max_depth stored, the rest refused or deduplicated
    assert all(isinstance(r, QueueFull) for r in results if not isinstance(r, Job))
    assert all(j.id in created for j in jobs)  # a duplicate key answers with the stored job
    [counts] = await store.counts()
    assert counts.queued == 100


async def test_a_large_enqueue_is_stored_in_slices_in_order(store: RedisBackend) -> None:
    jobs = await store.enqueue([NewJob.create("q", {"i": i}) for i in range(5000)])
    assert [j.payload for j in jobs] == [{"i": i} for i in range(5000)]
    ids = [j.id for j in jobs]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    [counts] = await store.counts()
    assert counts.queued == 5000


# -- the same as the reference backend ----------------------------------------------------------
async def _same_step(backends: list[Any], rng: random.Random) -> list[Any]:
    """Apply one random operation to every backend; return what each answered."""
    choice, now = rng.random(), time.time()
    if choice < 0.3:
        specs = [
            {"priority": rng.choice([0, 1, 5]), "offset": rng.choice([0, 0, -30, -5, 3600])}
            for _ in range(rng.randint(1, 4))
        ]
        batch = [
            new(priority=s["priority"], run_at=datetime.fromtimestamp(now + s["offset"], UTC))
            if s["offset"]
            else new(priority=s["priority"])
            for s in specs
        ]
        return [[j.id for j in await b.enqueue(batch)] for b in backends]
    if choice < 0.65:
        limit = rng.randint(1, 4)
        leased = [await b.lease(queue="q", limit=limit, worker_id="w", lease_s=5) for b in backends]
        ids = [[j.id for j in jobs] for jobs in leased]
        if ids[0] == ids[1]:  # settle the same way on both, with each backend's own tokens
            actions = [
                rng.choice(["complete", "retry", "defer", "release", "dead"]) for _ in ids[0]
            ]
            offsets = [rng.choice([-10, 3600]) for _ in ids[0]]
            for backend, jobs in zip(backends, leased, strict=True):
                for job, action, offset in zip(jobs, actions, offsets, strict=True):
                    await _apply(backend, job, action, now + offset)
        return ids
    if choice < 0.75:
        return [await b.reclaim_expired(now=now + 60) for b in backends]
    target = rng.randint(1, 30)
    if choice < 0.85:
        return [await b.cancel([target]) for b in backends]
    return [await b.replay(JobFilter(ids=(target,))) for b in backends]


async def _apply(backend: Any, job: Job, action: str, run_at: float) -> None:
    if action == "complete":
        await backend.complete([job.lease])
    elif action == "retry":
        await backend.retry([Retry(job.lease, run_at, "e", "E")])
    elif action == "defer":
        await backend.defer([Deferral(job.lease, run_at, "r")])
    elif action == "release":
        await backend.release([job.lease])
    else:
        await backend.dead_letter([Failure(job.lease, "e", "E")])


def _essence(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.state,
        job.priority,
        job.attempt,
        job.deliveries,
        job.defers,
        job.error_type,
        job.finished_at is None,
        job.lease_token is None,
    )


async def test_behaves_like_the_sqlite_backend(store: RedisBackend, tmp_path: Any) -> None:
    reference = backend_from_url(f"sqlite:///{tmp_path / 'reference.db'}")
    await reference.open()
    try:
        rng = random.Random(2024)
        for step in range(120):
            answers = await _same_step([reference, store], rng)
            assert answers[0] == answers[1], f"step {step}: sqlite {answers[0]} redis {answers[1]}"
        ours = await store.list_jobs(JobFilter(), limit=10_000)
        theirs = await reference.list_jobs(JobFilter(), limit=10_000)
        assert [_essence(j) for j in ours] == [_essence(j) for j in theirs]
        at = time.time()
        strip = lambda c: c.to_dict() | {"oldest_queued_age_s": None}  # noqa: E731
        assert [strip(c) for c in await store.counts(now=at)] == [
            strip(c) for c in await reference.counts(now=at)
        ]
    finally:
        await reference.close()
