"""Flow control on PostgreSQL across many connections: a cap and a rate hold however many
backends (each its own pool, as separate worker processes would be) lease at once; two tenants
racing their quotas from two producers; and the flow migration over a database that already
holds jobs.

Runs against the real server (``FOREBAY_TEST_PG``, default 127.0.0.1:5432), each test in its
own schema. Time is a fake clock (``lease(now=...)``); no sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from forebay import JobFilter, JobState, NewJob
from forebay.backends.postgres import PostgresBackend
from forebay.backends.postgres.schema import queries
from forebay.errors import TenantQuotaFull
from forebay.flow import FlowLimits, Rate
from forebay.testing import isolated_store
from tests.integration.fleets import postgres_fleet
from tests.old_stores import postgres_schema_at
from tests.servers import PG_URL, backend_url, unique_name

WORKERS = 4


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[list[PostgresBackend]]:
    """Backends on one schema, each with its own connections (a fleet of workers)."""
    async with postgres_fleet(tmp_path, WORKERS) as backends:
        yield backends


def new(n: int = 0, **kw: Any) -> NewJob:
    return NewJob.create("q", {"n": n}, **kw)


async def lease(backend: PostgresBackend, now: float, limit: int = 3) -> list[Any]:
    return await backend.lease(queue="q", limit=limit, worker_id="w", lease_s=30.0, now=now)


async def test_a_fleet_leasing_at_once_never_passes_the_cap(
    fleet: list[PostgresBackend],
) -> None:
    first = fleet[0]
    await first.set_queue("q", limits=FlowLimits(concurrency=5))
    await first.enqueue([new(i) for i in range(60)])
    now = time.time() + 1.0
    running: list[Any] = []
    for _ in range(6):  # rounds: every backend leases twice at once, then some finish
        got = await asyncio.gather(*(lease(b, now) for b in fleet for _ in range(2)))
        running += [j for jobs in got for j in jobs]
        [c] = [c for c in await first.counts(now=now) if c.queue == "q"]
        assert c.running == len(running) <= 5
        assert len(running) == 5  # and the cap is used: the backlog fills every slot
        done, running = running[:2], running[2:]
        await fleet[-1].complete([j.lease for j in done])
    assert (await first.counts(now=now))[0].completed == 12


async def test_a_fleet_leasing_at_once_never_passes_the_rate(
    fleet: list[PostgresBackend],
) -> None:
    first = fleet[0]
    await first.set_queue("q", limits=FlowLimits(rate=Rate(10, 1.0, burst=4)))
    await first.enqueue([new(i) for i in range(200)])
    t0 = time.time() + 1.0
    started = 0
    for step in range(20):  # 2 s of fake time, every backend leasing at once each 0.1 s
        now = t0 + step * 0.1
        got = await asyncio.gather(*(lease(b, now, limit=5) for b in fleet))
        started += sum(len(jobs) for jobs in got)
        assert started <= 10 * step * 0.1 + 4 + 1e-9  # the rate plus one burst, at any time
    assert started >= 0.9 * (10 * 1.9 + 4)


async def test_a_fleet_takes_per_key_caps_and_rates_together(
    fleet: list[PostgresBackend],
) -> None:
    first = fleet[0]
    limits = FlowLimits(rate_per_key=Rate(3, 60.0), concurrency_per_key=2)
    await first.set_queue("q", limits=limits)
    await first.enqueue([new(i, rate_key="a", concurrency_key="a") for i in range(10)])
    await first.enqueue([new(i, rate_key="b", concurrency_key="b") for i in range(10)])
    now = time.time() + 1.0
    got = await asyncio.gather(*(lease(b, now) for b in fleet for _ in range(2)))
    taken = [j for jobs in got for j in jobs]
    assert sorted(j.concurrency_key for j in taken) == ["a", "a", "b", "b"]
    await first.complete([j.lease for j in taken])
    got = await asyncio.gather(*(lease(b, now) for b in fleet))
    # a slot each again, but one token each left (3 per minute)
    assert sorted(j.rate_key for jobs in got for j in jobs) == ["a", "b"]


async def test_two_tenants_racing_their_quotas_from_two_producers(
    fleet: list[PostgresBackend],
) -> None:
    quota = {"acme": 7, "*": 4}  # globex has no entry of its own: the "*" quota

    async def one(backend: PostgresBackend, tenant: str) -> bool:
        try:
            await backend.enqueue([new(tenant=tenant)], tenant_max_depth=quota)
        except TenantQuotaFull as exc:
            assert exc.tenant == tenant
            return False
        return True

    calls = [one(fleet[i % 2], t) for i in range(12) for t in ("acme", "globex")]
    results = await asyncio.gather(*calls)
    assert sum(results) == 11
    for tenant, cap in (("acme", 7), ("globex", 4)):
        assert len(await fleet[0].list_jobs(JobFilter(tenant=tenant))) == cap
    assert [c.queued for c in await fleet[0].counts(tenant="globex")] == [4]


@asynccontextmanager
async def _raw() -> AsyncIterator[Any]:
    conn = await asyncpg.connect(PG_URL)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_flow_migration_keeps_the_jobs_of_an_existing_database() -> None:
    schema = unique_name("forebay_flowmig")
    async with _raw() as raw:
        try:
            # A database as the previous release left it: migrations up to 0007, with jobs.
            await postgres_schema_at(raw, schema, 8)
            await raw.execute(
                f'INSERT INTO "{schema}".jobs (queue, payload, priority) '
                "SELECT 'q', json_build_object('n', n), n % 3 FROM generate_series(1, 50) AS n"
            )
            await raw.execute(f"""UPDATE "{schema}".jobs SET state = 'running',
                lease_token = 't', lease_expires_at = now() + interval '1 minute' WHERE id <= 5""")
            backend = PostgresBackend.from_url(f"{PG_URL}?schema={schema}")
            await backend.open()
            try:
                assert backend.applied_on_open == ["0008_flow.sql", "0009_fleet.sql"]
                [c] = await backend.counts()
                assert (c.queued, c.running) == (45, 5)
                old = await backend.list_jobs(JobFilter(state=JobState.RUNNING))
                assert len(old) == 5 and all(j.tenant is None for j in old)
                # the old jobs lease under limits set now, counted with the old running ones
                await backend.set_queue("q", limits=FlowLimits(concurrency=8, fair=True))
                got = await backend.lease(queue="q", limit=10, worker_id="w", lease_s=30.0)
                assert len(got) == 3 and [j.priority for j in got] == [2, 2, 2]
            finally:
                await backend.close()
        finally:
            await raw.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_flow_lease_takes_its_jobs_by_id_however_deep_the_backlog(tmp_path: Path) -> None:
    """The statement that takes a plan's jobs finds them by id, not by walking the queue's whole
    backlog in ``jobs_due`` (the planner's choice on a table without statistics, which made each
    flow lease cost in proportion to the queued jobs)."""
    async with isolated_store(backend_url("postgres", tmp_path)) as backend:
        assert isinstance(backend, PostgresBackend)
        await backend.set_queue("q", limits=FlowLimits(rate_per_key=Rate.parse("1000/s")))
        await backend.enqueue([new(i, rate_key=f"k{i % 7}") for i in range(3000)])
        schema, now = backend.settings.schema, time.time()
        async with _raw() as raw:
            ids = await raw.fetch(f'SELECT id FROM "{schema}".jobs ORDER BY id DESC LIMIT 100')
            sql = queries(schema)["flow_take"]
            args = ([r[0] for r in ids], "t", 30.0, "w", now, [], [], [], "q")
            async with raw.transaction():
                plan = await raw.fetch("EXPLAIN " + sql, *args)
        text = "\n".join(r[0] for r in plan)
        assert "jobs_due" not in text, text
        # and the lease takes the best jobs, as many as asked
        got = await lease(backend, now, limit=100)
        assert [j.id for j in got] == list(range(1, 101))
