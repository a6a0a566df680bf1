"""The fleet on PostgreSQL across connections: finished jobs counted exactly while several
backends (each its own pool, as worker processes on several hosts) finish jobs of the same
queues at once, the finishes of jobs with links counted in their own transaction, the trace
context stored by every enqueue path, and the fleet migration over a database the previous
release left with jobs in it.

Runs against the real server (``FOREBAY_TEST_PG``, default 127.0.0.1:5432), each test in its
own schema. Times are given (``now=``), never slept through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from forebay import JobFilter, JobState, NewJob
from forebay.backends import PruneSpec
from forebay.backends.postgres import PostgresBackend
from forebay.fleet import WorkerInfo
from forebay.job import Failure
from forebay.runs import NewRun
from tests.integration.fleets import postgres_fleet
from tests.old_stores import postgres_schema_at
from tests.servers import PG_URL, backend_url, unique_name

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
BACKENDS = 3


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[list[PostgresBackend]]:
    """Backends on one schema, each with its own connections (a fleet of workers)."""
    async with postgres_fleet(tmp_path, BACKENDS) as backends:
        yield backends


def worker(worker_id: str, now: float) -> WorkerInfo:
    moment = datetime.fromtimestamp(now, UTC)
    return WorkerInfo(
        id=worker_id,
        host="h",
        pid=1,
        queues=("a",),
        concurrency=4,
        version="1",
        started_at=moment,
        last_seen=moment,
        ttl_s=15.0,
    )


async def test_a_fleet_finishing_two_queues_at_once_counts_every_finish(
    fleet: list[PostgresBackend],
) -> None:
    """Each backend settles batches that mix both queues, one batch per job pair, all at once:
    no finish is lost or counted twice, whichever rows (slots) the connections count in, and
    no two statements deadlock over the counters."""
    per_queue = 60
    for queue in ("a", "b"):
        await fleet[0].enqueue([NewJob.create(queue, {"i": i}) for i in range(per_queue)])
    leased = {
        q: await fleet[0].lease(queue=q, limit=per_queue, worker_id="w", lease_s=60.0)
        for q in ("a", "b")
    }
    pairs = list(zip(leased["a"], leased["b"], strict=True))

    async def finish(n: int) -> None:
        backend = fleet[n % BACKENDS]
        a, b = pairs[n]
        if n % 4 == 0:  # every fourth pair dies
            failures = [Failure(j.lease, error="boom", error_type="E") for j in (b, a)]
            assert await backend.dead_letter(failures) == []
        else:
            assert await backend.complete([a.lease, b.lease] if n % 2 else [b.lease, a.lease]) == []

    await asyncio.gather(*(finish(n) for n in range(per_queue)))
    dead = len(range(0, per_queue, 4))
    for backend in fleet:  # every node reads the same truth
        totals = [(t.queue, t.completed, t.dead, t.reclaimed) for t in await backend.totals()]
        assert totals == [("a", per_queue - dead, dead, 0), ("b", per_queue - dead, dead, 0)]
        rows = await backend.throughput(since=time.time() - 120)
        assert sum(r.completed for r in rows) == 2 * (per_queue - dead)
        assert len({(r.queue, r.minute) for r in rows}) == len(rows)  # slots summed


async def test_two_backends_reclaiming_at_once_count_each_lease_once(
    fleet: list[PostgresBackend],
) -> None:
    await fleet[0].enqueue([NewJob.create("a", {"i": i}) for i in range(50)])
    await fleet[0].lease(queue="a", limit=50, worker_id="dying", lease_s=1.0)
    later = time.time() + 600
    taken = await asyncio.gather(*(b.reclaim_expired(now=later) for b in fleet))
    assert sum(taken) == 50
    [total] = await fleet[1].totals()
    assert total.reclaimed == 50
    [row] = await fleet[2].throughput(since=later)
    assert row.reclaimed == 50


async def test_finishes_of_jobs_with_links_are_counted_in_their_transaction(
    fleet: list[PostgresBackend],
) -> None:
    """Jobs with a run or parents finish in the transaction that also counts their run and
    releases their children; they are counted there too, once."""
    pg = fleet[0]
    run = await pg.start_run(NewRun.create(name="batch"))
    [parent, other] = await pg.enqueue(
        [NewJob.create("a", {}, run=run.id), NewJob.create("a", {}, run=run.id)]
    )
    [child] = await pg.enqueue([NewJob.create("b", {}, after=[parent.id])])
    leased = {j.id: j for j in await pg.lease(queue="a", limit=2, worker_id="w", lease_s=60.0)}
    await asyncio.gather(
        fleet[1].complete([leased[parent.id].lease]),
        fleet[2].dead_letter([Failure(leased[other.id].lease, error="x", error_type="E")]),
    )
    [b] = await pg.lease(queue="b", limit=1, worker_id="w", lease_s=60.0)
    assert b.id == child.id  # released by its parent's finish
    await pg.complete([b.lease])
    totals = {t.queue: (t.completed, t.dead) for t in await pg.totals()}
    assert totals == {"a": (1, 1), "b": (1, 0)}
    counted = await pg.get_run(run.id)
    assert counted is not None and (counted.completed, counted.dead) == (1, 1)


async def test_every_enqueue_path_stores_the_trace_context(fleet: list[PostgresBackend]) -> None:
    pg = fleet[0]
    conn = await asyncpg.connect(PG_URL)
    try:
        async with conn.transaction():
            [mine] = await pg.enqueue([NewJob.create("a", {}, traceparent=TRACE)], connection=conn)
    finally:
        await conn.close()
    run = await pg.start_run(NewRun.create(name="traced"))
    [keyed, linked] = await asyncio.gather(
        fleet[1].enqueue([NewJob.create("a", {}, key="k", traceparent=OTHER_TRACE)]),
        fleet[2].enqueue([NewJob.create("a", {}, run=run.id, traceparent=TRACE)]),
    )
    [again] = await pg.enqueue([NewJob.create("a", {}, key="k", traceparent=TRACE)])
    assert not again.created and again.traceparent == OTHER_TRACE  # the stored job's
    stored = {j.id: j.traceparent for j in await pg.list_jobs(JobFilter(queue="a"))}
    assert stored == {mine.id: TRACE, keyed[0].id: OTHER_TRACE, linked[0].id: TRACE}


async def test_workers_saved_from_many_backends_at_once_while_old_records_go(
    fleet: list[PostgresBackend], tmp_path: Path
) -> None:
    now = time.time()
    stale = [worker(f"stale-{i}", now - 3600) for i in range(5)]
    await fleet[0].save_worker(stale[0])
    await asyncio.gather(*(fleet[i % BACKENDS].save_worker(w) for i, w in enumerate(stale)))
    live = [worker(f"live-{i:02}", now + i / 1000) for i in range(12)]
    await asyncio.gather(*(fleet[i % BACKENDS].save_worker(w) for i, w in enumerate(live)))
    assert [w.id for w in await fleet[1].list_workers()] == [w.id for w in live]
    conn = await asyncpg.connect(PG_URL)
    try:  # the saves deleted the records long expired (listings leave them out at once)
        left = await conn.fetchval(f'SELECT count(*) FROM "{fleet[0].settings.schema}".workers')
    finally:
        await conn.close()
    assert left == len(live)


async def test_pruning_minutes_goes_in_bounded_batches(fleet: list[PostgresBackend]) -> None:
    pg = fleet[0]
    old = time.time() - 3 * 24 * 3600
    then = datetime.fromtimestamp(old - 60, UTC)
    for minute in range(5):  # five old minutes, each with a reclaim
        await pg.enqueue([NewJob.create("a", {}, run_at=then)])
        at = old + minute * 60
        await pg.lease(queue="a", limit=1, worker_id="w", lease_s=1.0, now=at)
        assert await pg.reclaim_expired(now=at + 10) == 1
    assert len(await pg.throughput(since=old - 60)) == 5
    spec = PruneSpec(0, 0, 0, limit=2, throughput_before=time.time() - 24 * 3600)
    assert [await pg.prune(spec) for _ in range(4)] == [2, 2, 1, 0]
    assert await pg.throughput(since=old - 60) == []
    [total] = await pg.totals()
    assert total.reclaimed == 5


async def test_the_fleet_migration_keeps_the_jobs_of_an_existing_database() -> None:
    backend_url("postgres", Path("."))  # the server must answer (a failure in CI)
    schema = unique_name("forebay_fleetmig")
    raw = await asyncpg.connect(PG_URL)
    try:
        await _previous_release(raw, schema)
        backend = PostgresBackend.from_url(f"{PG_URL}?schema={schema}")
        await backend.open()
        try:
            assert backend.applied_on_open == ["0009_fleet.sql"]
            await _the_old_jobs_work_on(backend)
        finally:
            await backend.close()
    finally:
        await raw.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await raw.close()


async def _previous_release(raw: Any, schema: str) -> None:
    """A database as the previous release left it: migrations up to 0008, with 30 queued jobs
    and 5 running ones whose lease has expired."""
    await postgres_schema_at(raw, schema, 9)
    await raw.execute(
        f'INSERT INTO "{schema}".jobs (queue, payload) '
        "SELECT 'a', json_build_object('n', n) FROM generate_series(1, 35) AS n"
    )
    await raw.execute(f"""UPDATE "{schema}".jobs SET state = 'running', attempt = 1,
        deliveries = 1, lease_token = 't', lease_expires_at = now() - interval '1 minute'
        WHERE id <= 5""")


async def _the_old_jobs_work_on(backend: PostgresBackend) -> None:
    [c] = await backend.counts()
    assert (c.queued, c.running) == (30, 5)
    assert await backend.totals() == [] and await backend.list_workers() == []
    old = await backend.list_jobs(JobFilter(queue="a"), limit=100)
    assert len(old) == 35 and all(j.traceparent is None for j in old)
    assert await backend.reclaim_expired() == 5  # the old running jobs come back, counted
    [new] = await backend.enqueue([NewJob.create("a", {"n": 36}, traceparent=TRACE)])
    leased = await backend.lease(queue="a", limit=100, worker_id="w", lease_s=60.0)
    assert len(leased) == 36
    assert await backend.complete([j.lease for j in leased]) == []
    [total] = await backend.totals()
    assert (total.completed, total.dead, total.reclaimed) == (36, 0, 5)
    stored = await backend.get_job(new.id)
    assert stored is not None and stored.traceparent == TRACE
    assert stored.state is JobState.COMPLETED
    await backend.save_worker(worker("w", time.time()))
    assert [w.id for w in await backend.list_workers()] == ["w"]
