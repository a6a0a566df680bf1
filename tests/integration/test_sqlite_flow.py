"""Flow control on the SQLite backend: what the shared contract (tests/contract/test_flow.py)
cannot say about one file — a store written before flow control upgrades in place, two stores
open on one file obey one set of limits, and a queue without limits leases as it always did.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forebay.backends.base import PruneSpec
from forebay.backends.sqlite import SQLiteBackend
from forebay.backends.sqlite import backend as sqlite_backend
from forebay.errors import TenantQuotaFull
from forebay.flow import NO_LIMITS, FlowLimits, Rate
from forebay.job import Failure, JobFilter, JobState, NewJob
from forebay.runs import NewRun
from tests.integration.fleets import sqlite_pair
from tests.old_stores import sqlite_add_jobs, sqlite_store_at


def _store_before_flow(path: Path) -> None:
    """A job store as version 8 of the schema left it, with jobs and a paused queue."""
    conn = sqlite_store_at(path, 9)
    try:
        now = time.time() - 1.0
        sqlite_add_jobs(conn, "old", ["k1", "k2", "k3"], now)
        conn.execute(
            "INSERT INTO forebay_queues (queue, paused, max_depth, updated_at)"
            " VALUES ('held', 1, 10, ?)",
            (now,),
        )
    finally:
        conn.close()


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBackend, SQLiteBackend]]:
    """Two stores open on one file, as two worker processes would have."""
    async with sqlite_pair(tmp_path / "flow.db") as two:
        yield two


async def test_a_store_from_before_flow_control_keeps_its_jobs_and_settings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _store_before_flow(path)
    store = SQLiteBackend(path)
    await store.open()
    try:
        assert store.applied_on_open == ["0009_flow.sql", "0010_fleet.sql"]
        old = sorted(await store.list_jobs(JobFilter(queue="old")), key=lambda j: j.id)
        assert [(j.key, j.payload, j.tenant, j.fair_key) for j in old] == [
            ("k1", {"i": 1}, None, None),
            ("k2", {"i": 2}, None, None),
            ("k3", {"i": 3}, None, None),
        ]
        [held] = await store.queue_settings()
        assert (held.queue, held.paused, held.max_depth, held.limits) == (
            "held",
            True,
            10,
            NO_LIMITS,
        )
        # the old jobs lease under limits set from now on
        await store.set_queue("old", limits=FlowLimits(concurrency=2))
        got = await store.lease(queue="old", limit=10, worker_id="w", lease_s=30.0)
        assert [j.key for j in got] == ["k1", "k2"]
        [run] = [await store.start_run(NewRun.create(name="r", tenant="acme"))]
        assert run.tenant == "acme"
    finally:
        await store.close()


async def test_two_stores_on_one_file_never_pass_the_cap_together(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    await a.set_queue("q", limits=FlowLimits(concurrency=3))
    await a.enqueue([NewJob.create("q", {"n": i}) for i in range(30)])
    done = 0
    while done < 30:
        # both stores lease at once, several times each; together they hold at most 3
        batches = await asyncio.gather(
            *(
                s.lease(queue="q", limit=2, worker_id=f"w{i}", lease_s=30.0)
                for i, s in enumerate([a, b, a, b])
            )
        )
        jobs = [j for batch in batches for j in batch]
        running = await a.list_jobs(JobFilter(queue="q", state=JobState.RUNNING))
        assert len(jobs) <= 3 and len(running) <= 3
        assert jobs, "a free slot was left unused"
        await b.complete([j.lease for j in jobs])
        done += len(jobs)
    assert done == 30


async def test_limits_set_through_one_store_hold_for_the_other(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    t0 = time.time() + 1.0
    await a.set_queue("q", limits=FlowLimits(rate=Rate(4, 1.0)))
    await b.enqueue([NewJob.create("q", {"n": i}) for i in range(10)])
    first = await a.lease(queue="q", limit=10, worker_id="a", lease_s=30.0, now=t0)
    second = await b.lease(queue="q", limit=10, worker_id="b", lease_s=30.0, now=t0)
    assert len(first) == 4 and list(second) == []  # one bucket, in the file
    assert second.throttled_until == pytest.approx(t0 + 0.25, abs=1e-3)
    await b.set_queue("q", limits=NO_LIMITS)  # removing the limit takes effect at once
    assert len(await a.lease(queue="q", limit=10, worker_id="a", lease_s=30.0, now=t0)) == 6


async def test_a_store_follows_limits_and_pauses_the_other_store_sets(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    """A store that leased a queue with or without limits does not go on assuming so."""
    a, b = two
    await b.enqueue([NewJob.create("q", {"n": i}) for i in range(10)])

    async def lease() -> int:
        return len(await a.lease(queue="q", limit=10, worker_id="a", lease_s=30.0))

    assert len(await a.lease(queue="q", limit=1, worker_id="a", lease_s=30.0)) == 1
    await b.set_queue("q", limits=FlowLimits(concurrency=3))
    assert await lease() == 2  # 1 running already: the cap set elsewhere holds at once
    await b.set_queue("q", paused=True)
    await b.set_queue("q", limits=NO_LIMITS)
    assert await lease() == 0  # paused, while a last saw limits
    await b.set_queue("q", limits=FlowLimits(concurrency=4))
    assert await lease() == 0  # still paused, now with limits
    await b.set_queue("q", paused=False)
    assert await lease() == 1  # 3 running, cap 4
    await b.set_queue("q", limits=NO_LIMITS)
    assert await lease() == 6  # the rest, with the limits gone


async def test_a_short_lease_still_reports_every_rate_key_without_a_token(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    """The key buckets are read for the candidates' keys first; a lease that comes out short
    reads them all, so it says when the dry keys free (flow.plan's throttled_until), those
    without a job among its candidates too."""
    a, b = two
    t0 = time.time() + 1.0
    await a.set_queue("q", limits=FlowLimits(rate_per_key=Rate(1, 60.0)))
    await b.enqueue([NewJob.create("q", {}, rate_key=k) for k in ("x", "y")])
    first = await a.lease(queue="q", limit=1, worker_id="a", lease_s=30.0, now=t0)
    second = await b.lease(queue="q", limit=1, worker_id="b", lease_s=30.0, now=t0 + 5.0)
    assert [j.rate_key for j in first + second] == ["x", "y"]  # each all it asked for
    assert first.throttled_until is None and second.throttled_until is None
    await b.enqueue([NewJob.create("q", {}, rate_key=k) for k in ("z", "w")])
    third = await a.lease(queue="q", limit=3, worker_id="a", lease_s=30.0, now=t0 + 10.0)
    assert sorted(j.rate_key or "" for j in third) == ["w", "z"]
    assert third.throttled_until == pytest.approx(t0 + 60.0, abs=1e-3)  # x's token, then y's


async def test_tenant_quotas_hold_across_two_stores(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    quota = {"acme": 4, "*": 2}

    async def one(store: SQLiteBackend, tenant: str) -> bool:
        try:
            await store.enqueue([NewJob.create("q", {}, tenant=tenant)], tenant_max_depth=quota)
        except TenantQuotaFull as exc:
            assert exc.tenant == tenant
            return False
        return True

    results = await asyncio.gather(
        *(one(s, t) for s in (a, b) for t in ["acme", "globex", "initech"] * 4)
    )
    assert sum(results) == 4 + 2 + 2  # globex and initech each get the "*" quota
    counts = {c.queue: c for c in await b.counts(tenant="acme")}
    assert counts["q"].queued == 4


async def test_a_queue_without_limits_takes_the_plain_path(
    two: tuple[SQLiteBackend, SQLiteBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two

    def no_flow(*args: object, **kwargs: object) -> None:
        raise AssertionError("a queue without limits took the flow path")

    monkeypatch.setattr(sqlite_backend, "_flow_pick", no_flow)
    await a.set_queue("q", limits=FlowLimits(concurrency=1))
    await a.set_queue("q", limits=NO_LIMITS)  # cleared: stored as no limits at all
    await a.enqueue([NewJob.create("q", {"n": i}) for i in range(5)])
    got = await a.lease(queue="q", limit=10, worker_id="w", lease_s=30.0)
    assert len(got) == 5 and got.throttled_until is None
    assert list(await a.lease(queue="q", limit=10, worker_id="w", lease_s=30.0)) == []
    [c] = await a.counts()
    assert c.running == 5 and c.throttled == 0


async def test_pruning_drops_spent_rate_buckets(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, _ = two
    await a.set_queue("q", limits=FlowLimits(rate=Rate(1, 60.0), rate_per_key=Rate(1, 60.0)))
    await a.enqueue([NewJob.create("q", {}, rate_key=k) for k in ("x", "y")])
    await a.lease(queue="q", limit=10, worker_id="w", lease_s=30.0)

    def buckets(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM forebay_flow").fetchone()[0])

    assert await a._read(buckets) == 2  # the queue's and x's
    await a.prune(PruneSpec(0.0, 0.0, 0.0))
    assert await a._read(buckets) == 2  # still in the future
    past = time.time() - 1.0
    await a._write(lambda c: c.execute("UPDATE forebay_flow SET value = ?", (past,)))
    await a.prune(PruneSpec(0.0, 0.0, 0.0))
    assert await a._read(buckets) == 0


async def test_every_filter_narrows_to_a_tenant(
    two: tuple[SQLiteBackend, SQLiteBackend],
) -> None:
    a, b = two
    await a.enqueue([NewJob.create("q", {"n": i}, tenant=t) for i in range(2) for t in ("x", "y")])
    got = await a.lease(queue="q", limit=10, worker_id="w", lease_s=30.0)
    await a.dead_letter([Failure(j.lease, error="boom", error_type="Boom") for j in got])
    x, y = JobFilter(tenant="x"), JobFilter(tenant="y")
    assert {j.tenant for j in await b.list_dead(x)} == {"x"}
    assert await b.replay(x) == 2  # y's dead stay dead
    assert len(await b.list_dead(y)) == 2
    assert await b.purge(y) == 2
    assert await b.cancel_where(JobFilter(tenant="y")) == 0  # nothing of y's left
    assert await b.cancel_where(x) == 2
    assert [c.cancelled for c in await a.counts(tenant="x")] == [2]
    assert await a.counts(tenant="y") == []  # purged: y has no job in any queue
