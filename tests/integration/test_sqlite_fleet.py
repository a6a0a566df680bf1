"""The fleet on the SQLite backend: what the shared contract (tests/contract/test_fleet.py)
cannot say about one file — a store written before the fleet upgrades in place and keeps its
jobs (running ones included), and two stores open on one file, as two worker processes have,
see each other's workers and add up each other's counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from forebay.backends.base import PruneSpec
from forebay.backends.sqlite import SQLiteBackend
from forebay.fleet import WorkerInfo
from forebay.job import Completion, Failure, JobFilter, JobState, NewJob
from tests.integration.fleets import sqlite_pair
from tests.old_stores import sqlite_add_jobs, sqlite_store_at

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _store_before_fleet(path: Path) -> None:
    """A job store as version 9 of the schema left it: two queued jobs and one running."""
    conn = sqlite_store_at(path, 10)
    try:
        now = time.time() - 1.0
        sqlite_add_jobs(conn, "old", ["k1", "k2"], now, tenant="acme")
        running = {"state": "running", "attempt": 1, "deliveries": 1, "lease_token": "tok"}
        running |= {"lease_expires_at": now + 0.5, "worker_id": "gone", "started_at": now}
        sqlite_add_jobs(conn, "old", ["k3"], now, **running)
    finally:
        conn.close()


def _worker(worker_id: str, started: float, *, queues: tuple[str, ...] = ("old",)) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-a",
        pid=7,
        queues=queues,
        concurrency=4,
        version="1.0.0",
        started_at=datetime.fromtimestamp(started, UTC),
        last_seen=datetime.fromtimestamp(started, UTC),
        ttl_s=30.0,
    )


async def test_a_store_from_before_the_fleet_keeps_its_jobs_and_counts_from_then_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _store_before_fleet(path)
    store = SQLiteBackend(path)
    await store.open()
    try:
        assert store.applied_on_open == ["0010_fleet.sql"]
        old = sorted(await store.list_jobs(JobFilter(queue="old")), key=lambda j: j.id)
        assert [(j.key, j.state, j.payload, j.tenant, j.traceparent) for j in old] == [
            ("k1", JobState.QUEUED, {"i": 1}, "acme", None),
            ("k2", JobState.QUEUED, {"i": 2}, "acme", None),
            ("k3", JobState.RUNNING, {"i": 3}, None, None),
        ]
        assert await store.totals() == [] and await store.list_workers() == []

        # The running job's worker died before the upgrade: its lease is reclaimed and counted.
        at = time.time() + 60
        assert await store.reclaim_expired(now=at) == 1
        leased = await store.lease(queue="old", limit=10, worker_id="w", lease_s=30.0, now=at)
        assert sorted(j.key for j in leased) == ["k1", "k2", "k3"]
        by_key = {j.key: j for j in leased}
        assert await store.complete([by_key["k1"].lease, by_key["k3"].lease]) == []
        failure = Failure(by_key["k2"].lease, error="boom", error_type="ValueError")
        assert await store.dead_letter([failure]) == []
        [total] = await store.totals()
        assert (total.queue, total.completed, total.dead, total.reclaimed) == ("old", 2, 1, 1)

        # A key stored before the upgrade still deduplicates; new jobs carry their trace.
        [again, traced] = await store.enqueue(
            [NewJob.create("old", {}, key="k1"), NewJob.create("new", {}, traceparent=TRACE)]
        )
        assert not again.created and again.traceparent is None
        stored = await store.get_job(traced.id)
        assert traced.created and stored is not None and stored.traceparent == TRACE
    finally:
        await store.close()

    # Opened again: nothing more to apply, the counts are still there.
    again_store = SQLiteBackend(path)
    await again_store.open()
    try:
        assert again_store.applied_on_open == []
        assert [t.completed for t in await again_store.totals()] == [2]
    finally:
        await again_store.close()


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBackend, SQLiteBackend]]:
    """Two stores open on one file, as two worker processes would have."""
    async with sqlite_pair(tmp_path / "fleet.db") as two:
        yield two


async def test_two_stores_on_one_file_list_each_others_workers(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    now = time.time()
    await asyncio.gather(
        a.save_worker(_worker("wa", now)),
        b.save_worker(_worker("wb", now + 1, queues=("old", "new"))),
    )
    for store in (a, b):
        assert [w.id for w in await store.list_workers(now=now + 2)] == ["wa", "wb"]
    await b.remove_worker("wa")  # a clean stop, seen through the other store
    assert [w.queues for w in await a.list_workers(now=now + 2)] == [("old", "new")]


async def test_two_stores_finishing_at_once_add_up_their_counts(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    await a.enqueue([NewJob.create(q, {"i": i}) for q in ("x", "y") for i in range(60)])

    async def drain(store: SQLiteBackend, queue: str) -> None:
        while leased := await store.lease(queue=queue, limit=7, worker_id="w", lease_s=30.0):
            done, dead = leased[:-1], leased[-1]
            await asyncio.gather(
                store.complete([j.lease for j in done]),
                store.dead_letter([Failure(dead.lease, error="boom", error_type="E")]),
            )

    await asyncio.gather(*(drain(s, q) for s in (a, b) for q in ("x", "y")))
    totals = {t.queue: (t.completed + t.dead, t.reclaimed) for t in await b.totals()}
    assert totals == {"x": (60, 0), "y": (60, 0)}
    rows = await a.throughput(since=time.time() - 120)
    assert sum(r.completed + r.dead for r in rows) == 120
    dead = await a.list_jobs(JobFilter(state=JobState.DEAD), limit=200)
    assert sum(r.dead for r in rows) == len(dead)


async def test_pruning_without_a_cut_keeps_the_minutes(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "prune.db")
    await store.open()
    try:
        await store.enqueue([NewJob.create("q", {})])
        [job] = await store.lease(queue="q", limit=1, worker_id="w", lease_s=30.0)
        await store.complete([job.lease])
        cut = time.time() + 1
        await store.prune(PruneSpec(completed_before=cut, dead_before=cut, cancelled_before=cut))
        assert await store.list_jobs(JobFilter(queue="q")) == []  # the job went
        [row] = await store.throughput(since=time.time() - 120)
        assert row.completed == 1  # its minute stayed
    finally:
        await store.close()


async def test_results_and_dead_letters_count_once_and_stale_leases_not_at_all(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    await a.enqueue([NewJob.create("q", {"i": i}) for i in range(4)])
    first = await a.lease(queue="q", limit=4, worker_id="dying", lease_s=1.0)
    at = time.time() + 60
    assert await b.reclaim_expired(now=at) == 4
    again = await b.lease(queue="q", limit=4, worker_id="w", lease_s=30.0, now=at)
    stale = [j.lease for j in first]
    # The dead worker's late outcomes are refused, through either store, and count nothing.
    refused = await asyncio.gather(
        a.complete([Completion(stale[0], '{"late": true}')]),
        b.dead_letter([Failure(stale[1], error="late", error_type="E")]),
        a.complete(stale[2:]),
    )
    assert sorted(i for ids in refused for i in ids) == sorted(j.id for j in first)
    [total] = await a.totals()
    assert (total.completed, total.dead, total.reclaimed) == (0, 0, 4)
    # The live worker's outcomes count, each once, however they were given.
    await asyncio.gather(
        b.complete([Completion(again[0].lease, '{"rows": 1}'), again[1].lease]),
        a.dead_letter([Failure(j.lease, error="boom", error_type="E") for j in again[2:]]),
    )
    [total] = await b.totals()
    assert (total.completed, total.dead, total.reclaimed) == (2, 2, 4)
    [minute] = await a.throughput(since=at)
    assert (minute.completed, minute.dead, minute.reclaimed) == (0, 0, 4)
