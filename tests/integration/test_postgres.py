"""What only the PostgreSQL backend does: transactional enqueue, group commit, SKIP LOCKED
leasing across processes, LISTEN/NOTIFY wake-ups, error translation, migrations, pruning, and
the locking behind runs and dependencies (a parent finishing while a child is enqueued).

Runs against the real server (``FOREBAY_TEST_PG``, default 127.0.0.1:5432), each test in its
own schema. No sleeps: tests wait on events, results, or drain with burst workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from forebay import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    Forebay,
    InvalidPayload,
    Job,
    JobState,
    NewJob,
    QueueFull,
)
from forebay.backends import PruneSpec, backend_from_url
from forebay.backends.postgres import PostgresBackend, PostgresSettings, migration_sql
from forebay.backends.postgres import backend as backend_module
from forebay.backends.postgres.schema import finish_channel, migrations, queries
from forebay.errors import RunSealed, UnknownParent, UnknownRun
from forebay.job import Failure, JobFilter, Lease, Retry
from forebay.runs import NewRun, RunState
from forebay.testing import isolated_store, until
from tests.servers import PG_URL, backend_url, unique_name

WORKER = "pg-test"


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return backend_url("postgres", tmp_path)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresBackend]:
    async with isolated_store(pg_url) as backend:
        assert isinstance(backend, PostgresBackend)
        yield backend


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    """A plain asyncpg connection to the test database (the caller's own connection)."""
    conn = await asyncpg.connect(PG_URL)
    try:
        yield conn
    finally:
        await conn.close()


def new(queue: str = "q", payload: object = None, **kw: Any) -> NewJob:
    return NewJob.create(queue, {"n": 0} if payload is None else payload, **kw)


async def _lease_all(backend: PostgresBackend, queue: str = "q", limit: int = 100) -> list[Job]:
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30)


# -- URL and settings ------------------------------------------------------------------------
def test_url_options_are_forebay_s_and_the_rest_goes_to_asyncpg() -> None:
    settings = PostgresSettings.from_url(
        "postgresql://u@h1:5432,h2:5433/db?schema=jobs_x&pool_size=3&reconnect_s=2.5"
        "&poll_ms=250&sslmode=prefer"
    )
    assert settings.schema == "jobs_x"
    assert settings.pool_size == 3 and settings.reconnect_s == 2.5 and settings.poll_s == 0.25
    assert settings.dsn == "postgresql://u@h1:5432,h2:5433/db?sslmode=prefer"
    assert settings.server_settings == {"application_name": "forebay", "jit": "off"}
    own = PostgresSettings.from_url("postgres://u@h/db?application_name=intake")
    assert own.schema == "forebay" and "application_name" not in own.server_settings


@pytest.mark.parametrize(
    "query", ["schema=Bad", "schema=x;drop", "schema=pg_x", "pool_size=0", "reconnect_s=soon"]
)
def test_bad_url_options_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        PostgresSettings.from_url(f"postgresql://u@h/db?{query}")


def test_backend_from_url_picks_postgres() -> None:
    backend = backend_from_url("postgresql://u@h/db?schema=abc")
    assert isinstance(backend, PostgresBackend)
    assert backend.capabilities.name == "postgres"
    assert backend.capabilities.transactional_enqueue and backend.capabilities.cross_process_wakeup


# -- transactional enqueue ---------------------------------------------------------------------
async def test_transactional_enqueue_exists_iff_the_callers_transaction_commits(
    pg_url: str, raw: Any
) -> None:
    app = Forebay(pg_url)
    try:
        async with raw.transaction():
            kept = await app.enqueue("tx", {"v": "commit"}, connection=raw)
            assert await app.backend.get_job(kept.id) is None  # not visible before commit
        assert (await app.get_job(kept.id)).payload == {"v": "commit"}

        with pytest.raises(RuntimeError):
            async with raw.transaction():
                lost = await app.enqueue("tx", {"v": "rollback"}, connection=raw)
                raise RuntimeError("the caller's own work failed")
        assert await app.backend.get_job(lost.id) is None
        assert [j.id for j in await app.list_jobs()] == [kept.id]
    finally:
        await _drop(app)


async def test_transactional_enqueue_on_a_pool_connection_and_a_full_queue(
    pg_url: str,
) -> None:
    app = Forebay(pg_url)
    app.queue("capped", max_depth=2)
    pool = await asyncpg.create_pool(PG_URL, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await app.enqueue_many([new("capped"), new("capped")], connection=conn)
            with pytest.raises(QueueFull):
                await app.enqueue("capped", {}, connection=conn)
            # the refusal rolled back only its own savepoint: the caller's transaction goes on
            assert await conn.fetchval("SELECT 1") == 1
        assert (await app.counts())[0].queued == 2
    finally:
        await pool.close()
        await _drop(app)


async def test_transactional_enqueue_wakes_workers_only_at_commit(
    pg: PostgresBackend, raw: Any
) -> None:
    await _lease_all(pg, "woken")  # a leasing backend listens
    for outcome in ("rollback", "commit"):
        tx = raw.transaction()
        await tx.start()
        await pg.enqueue([new("woken")], connection=raw)
        started = time.monotonic()
        await pg.wait_for_work(["woken"], timeout_s=0.1)  # nothing committed: no wake-up
        assert time.monotonic() - started >= 0.09
        await (tx.rollback() if outcome == "rollback" else tx.commit())
    started = time.monotonic()
    await pg.wait_for_work(["woken"], timeout_s=30)  # the commit's notification ends it
    assert time.monotonic() - started < 10
    assert len(await _lease_all(pg, "woken")) == 1  # the rolled-back job never existed


async def test_connection_must_be_an_asyncpg_connection(pg: PostgresBackend) -> None:
    with pytest.raises(ConfigError, match="asyncpg connection"):
        await pg.enqueue([new()], connection=object())


# -- group commit ------------------------------------------------------------------------------
async def test_concurrent_enqueues_share_statements_and_each_gets_its_own_job(
    pg: PostgresBackend,
) -> None:
    flushes: list[int] = []
    flush = pg._enqueuer._flush

    async def counting(requests: list[Any]) -> Any:
        flushes.append(len(requests))
        return await flush(requests)

    pg._enqueuer._flush = counting  # observe the group sizes; the writes are real
    jobs = await asyncio.gather(*(pg.enqueue([new(payload={"i": i})]) for i in range(200)))
    assert [j[0].payload for j in jobs] == [{"i": i} for i in range(200)]
    assert len({j[0].id for j in jobs}) == 200
    assert sum(flushes) == 200 and len(flushes) < 20, flushes
    stored = await pg.get_job(jobs[123][0].id)
    assert stored is not None and stored.payload == {"i": 123}


async def test_one_callers_bad_value_fails_only_that_caller(pg: PostgresBackend) -> None:
    good = [pg.enqueue([new(payload={"i": i})]) for i in range(5)]
    # PostgreSQL text cannot hold NUL; NewJob.create refuses it, so build the job around it, as
    # a caller of the backend API could: the group commit still fails that caller alone.
    bad = pg.enqueue([NewJob("q", "{}", {}, key="nul\x00key")])
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], InvalidPayload)
    assert all(isinstance(r, list) and r[0].state is JobState.QUEUED for r in results[:-1])
    assert (await pg.counts())[0].queued == 5


async def test_group_commit_mixes_keyed_duplicates_and_new_jobs(pg: PostgresBackend) -> None:
    [first] = await pg.enqueue([new(payload={"v": 1}, key="k")])
    results = await asyncio.gather(
        pg.enqueue([new(payload={"v": 2}, key="k"), new(payload={"v": 3})]),
        pg.enqueue([new(payload={"v": 4}, key="fresh"), new(payload={"v": 5}, key="fresh")]),
    )
    (dup, plain), (fresh, fresh_again) = results
    assert dup.id == first.id and not dup.created and dup.payload == {"v": 1}
    assert plain.created and plain.payload == {"v": 3}
    assert fresh.created and not fresh_again.created and fresh_again.id == fresh.id


async def test_max_depth_holds_under_concurrent_enqueues_from_two_backends(
    pg_url: str, pg: PostgresBackend
) -> None:
    other = PostgresBackend.from_url(pg_url)
    await other.open()
    try:
        calls = [
            (pg if i % 2 else other).enqueue([new("capped")], max_depth={"capped": 10})
            for i in range(30)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await other.close()
    assert sum(isinstance(r, list) for r in results) == 10
    assert sum(isinstance(r, QueueFull) for r in results) == 20
    assert (await pg.counts())[0].queued == 10


async def test_concurrent_outcomes_are_settled_together(pg: PostgresBackend) -> None:
    await pg.enqueue([new(payload={"i": i}) for i in range(6)])
    jobs = await _lease_all(pg)
    stale = Lease(jobs[5].id, "not-the-token")
    refused = await asyncio.gather(
        pg.complete([jobs[0].lease, jobs[1].lease]),
        pg.release([jobs[2].lease]),
        pg.complete([jobs[3].lease, jobs[3].lease]),  # the same job twice: settled once
        pg.complete([stale]),
    )
    assert refused == [[], [], [jobs[3].id], [jobs[5].id]]
    states = {j.id: (await pg.get_job(j.id)).state for j in jobs}  # type: ignore[union-attr]
    assert [states[j.id] for j in jobs] == [
        JobState.COMPLETED,
        JobState.COMPLETED,
        JobState.QUEUED,
        JobState.COMPLETED,
        JobState.RUNNING,
        JobState.RUNNING,
    ]


async def test_settling_finds_jobs_by_id_even_when_statistics_are_stale(
    pg: PostgresBackend, raw: Any
) -> None:
    # Statistics taken while nothing ran, then many jobs running: settling must find jobs by
    # id (or one scan), never walk the running jobs once per settled job (that made a worker's
    # acks slower the more it had leased, until it fell behind for good).
    await pg.enqueue([new(payload={"i": i}) for i in range(3000)])
    await raw.execute(f'ANALYZE "{pg.settings.schema}".jobs')
    for _ in range(20):
        leased = await _lease_all(pg)
    sql = queries(pg.settings.schema)["settle"]
    ids = [j.id for j in leased]
    tokens = [j.lease_token for j in leased]
    args = (ids, tokens, None, None, None, None, "complete", None, None, False)
    for mode in ("force_custom_plan", "force_generic_plan"):
        async with raw.transaction():
            await raw.execute(f"SET LOCAL plan_cache_mode = {mode}")
            plan = "\n".join(r[0] for r in await raw.fetch(f"EXPLAIN {sql}", *args))
        assert "jobs_leases" not in plan, plan


# -- runs, dependencies and webhooks ----------------------------------------------------------
async def test_transactional_enqueue_joins_a_run_iff_the_callers_transaction_commits(
    pg: PostgresBackend, raw: Any
) -> None:
    run = await pg.start_run(NewRun.create())
    [parent] = await pg.enqueue([new()])
    for outcome in ("rollback", "commit"):
        tx = raw.transaction()
        await tx.start()
        jobs = [new("tx", run=run.id), new("tx", run=run.id, after=[parent.id])]
        await pg.enqueue(jobs, connection=raw)
        with pytest.raises(UnknownRun):  # refused in its own savepoint: the caller goes on
            await pg.enqueue([new(run="no-such-run")], connection=raw)
        assert await raw.fetchval("SELECT 1") == 1
        await (tx.rollback() if outcome == "rollback" else tx.commit())
        got = await pg.get_run(run.id)
        assert got is not None
        counted = (got.total, got.queued, got.waiting)
        assert counted == ((0, 0, 0) if outcome == "rollback" else (2, 1, 1))
    [leased] = await _lease_all(pg)
    assert leased.id == parent.id
    await pg.complete([leased.lease])  # the committed child is released, the other never was
    got = await pg.get_run(run.id)
    assert got is not None and (got.total, got.queued, got.waiting) == (2, 2, 0)


async def test_a_refused_linked_request_fails_only_its_caller_in_a_group(
    pg: PostgresBackend,
) -> None:
    run = await pg.start_run(NewRun.create())
    sealed = await pg.start_run(NewRun.create())
    await pg.seal_run(sealed.id)
    [parent] = await pg.enqueue([new()])
    results = await asyncio.gather(
        pg.enqueue([new(run=run.id)]),
        pg.enqueue([new(run="no-such-run")]),
        pg.enqueue([new(after=[parent.id])]),
        pg.enqueue([new(after=[parent.id + 1000])]),
        pg.enqueue([new(run=sealed.id)]),
        pg.enqueue([new(payload={"plain": True})]),
        pg.enqueue([new(run=run.id, webhook="https://h.test/x")]),
        return_exceptions=True,
    )
    assert isinstance(results[1], UnknownRun)
    assert isinstance(results[3], UnknownParent)
    assert isinstance(results[4], RunSealed)
    kept = [r[0] for r in results if isinstance(r, list)]
    assert [j.state for j in kept] == [JobState.QUEUED, JobState.WAITING] + [JobState.QUEUED] * 2
    got = await pg.get_run(run.id)
    assert got is not None and got.total == got.queued == 2
    [counts] = await pg.counts()
    assert (counts.queued, counts.waiting) == (4, 1)


async def test_only_jobs_with_links_take_the_transaction_of_a_finish(
    pg: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    settle_linked = backend_module._settle_linked

    async def counting(conn: Any, q: Any, items: list[Any]) -> set[int]:
        calls.append(len(items))
        return await settle_linked(conn, q, items)

    monkeypatch.setattr(backend_module, "_settle_linked", counting)
    run = await pg.start_run(NewRun.create())
    await pg.enqueue([new(payload={"i": i}) for i in range(4)])
    await pg.enqueue([new(run=run.id), new(webhook="https://h.test/x")])
    plain = await _lease_all(pg, limit=4)
    assert await pg.complete([j.lease for j in plain[:2]]) == []
    assert await pg.retry([Retry(j.lease, time.time(), "again", "E") for j in plain[2:]]) == []
    assert calls == []  # plain jobs: the one statement, as before
    linked = await _lease_all(pg, limit=2)
    assert {j.id for j in linked}.isdisjoint(j.id for j in plain)
    assert await pg.complete([j.lease for j in linked]) == []
    assert calls == [2]
    got = await pg.get_run(run.id)
    assert got is not None and got.completed == 1


async def test_a_released_child_wakes_the_workers_of_its_queue(pg: PostgresBackend) -> None:
    [parent] = await pg.enqueue([new()])
    [child] = await pg.enqueue([new("children", after=[parent.id])])
    assert await _lease_all(pg, "children") == []  # a leasing backend listens
    [held] = await _lease_all(pg)
    started = time.monotonic()
    await pg.wait_for_work(["children"], timeout_s=0.1)  # still waiting: no wake-up
    assert time.monotonic() - started >= 0.09
    assert await pg.complete([held.lease]) == []
    started = time.monotonic()
    await pg.wait_for_work(["children"], timeout_s=30)  # the release's notification ends it
    assert time.monotonic() - started < 10
    assert [j.id for j in await _lease_all(pg, "children")] == [child.id]


@pytest.mark.parametrize("how", ["completed", "dead"])
async def test_a_child_enqueued_while_its_parent_finishes_is_never_left_waiting(
    pg_url: str, pg: PostgresBackend, how: str
) -> None:
    other = PostgresBackend.from_url(pg_url)
    await other.open()
    try:
        for i in range(8):
            [parent] = await pg.enqueue([new()])
            [held] = await _lease_all(pg)
            if how == "completed":
                finish = pg.complete([held.lease])
            else:
                finish = pg.dead_letter([Failure(held.lease, "bad", "ValueError")])
            enqueue = other.enqueue([new("children", after=[parent.id])])
            calls = (finish, enqueue) if i % 2 else (enqueue, finish)
            await asyncio.gather(*calls)
            [child] = await other.list_jobs(JobFilter(queue="children"), limit=1)
            want = JobState.QUEUED if how == "completed" else JobState.CANCELLED
            assert child.state is want, (i, child)
            await pg.cancel([child.id])
    finally:
        await other.close()


async def test_sealing_while_the_last_job_finishes_completes_the_run_once(
    pg_url: str, pg: PostgresBackend
) -> None:
    other = PostgresBackend.from_url(pg_url)
    await other.open()
    try:
        for i in range(8):
            run = await pg.start_run(NewRun.create(on_complete="done"))
            await pg.enqueue([new(run=run.id)])
            [held] = await _lease_all(pg)
            calls = (pg.complete([held.lease]), other.seal_run(run.id))
            await asyncio.gather(*(calls if i % 2 else reversed(calls)))
            got = await pg.get_run(run.id)
            assert got is not None and got.state is RunState.COMPLETED
            found = await pg.list_jobs(JobFilter(queue="done"), limit=100)
            assert [j.key for j in found].count(f"run:{run.id}:complete") == 1
    finally:
        await other.close()


# -- leasing -----------------------------------------------------------------------------------
async def test_two_backends_leasing_at_once_never_share_a_job(
    pg_url: str, pg: PostgresBackend
) -> None:
    await pg.enqueue([new(payload={"i": i}) for i in range(2000)])
    other = PostgresBackend.from_url(pg_url)
    await other.open()
    taken: dict[int, str] = {}

    async def drain(backend: PostgresBackend, name: str) -> None:
        while jobs := await backend.lease(queue="q", limit=25, worker_id=name, lease_s=30):
            for job in jobs:
                assert job.id not in taken, f"job {job.id} leased by {taken[job.id]} and {name}"
                taken[job.id] = name
            assert not await backend.complete([j.lease for j in jobs])

    try:
        await asyncio.gather(
            *(drain(b, f"{n}-{i}") for n, b in (("a", pg), ("b", other)) for i in range(3))
        )
    finally:
        await other.close()
    assert len(taken) == 2000
    assert {name[0] for name in taken.values()} == {"a", "b"}


TWO_WORKERS_APP = textwrap.dedent(
    """
    import asyncio, os, sys
    from forebay import Forebay, WorkerSettings

    app = Forebay()

    @app.handler("shared", concurrency=16)
    async def handle(job):
        fd = os.open(os.environ["RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"%d %d\\n" % (job.id, os.getpid()))
        os.close(fd)

    if __name__ == "__main__":
        asyncio.run(app.run_worker(burst=True, settings=WorkerSettings(handle_signals=False)))
    """
)


async def test_two_worker_processes_run_every_job_exactly_once(
    pg_url: str, pg: PostgresBackend, tmp_path: Path
) -> None:
    jobs = await pg.enqueue([new("shared", payload={"i": i}) for i in range(3000)])
    script = tmp_path / "two_workers.py"
    script.write_text(TWO_WORKERS_APP)
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "FOREBAY_URL": pg_url, "RUNS_FILE": str(runs)}
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, str(script), env=env) for _ in range(2)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 120)
    assert codes == [0, 0]
    lines = [line.split() for line in runs.read_text().splitlines()]
    ids = [int(job_id) for job_id, _ in lines]
    assert sorted(ids) == sorted(j.id for j in jobs)  # each job ran once: none twice, none lost
    assert len({pid for _, pid in lines}) == 2, "one process did all the work"
    assert (await pg.counts())[0].completed == 3000


# -- wake-ups ----------------------------------------------------------------------------------
async def test_enqueue_from_another_backend_wakes_an_idle_waiter(
    pg_url: str, pg: PostgresBackend
) -> None:
    await _lease_all(pg, "idle")  # listening from here on
    producer = PostgresBackend.from_url(pg_url)
    await producer.open()
    try:
        waiting = asyncio.create_task(pg.wait_for_work(["idle"], timeout_s=60))
        await asyncio.sleep(0)  # let the waiter register before the enqueue
        await producer.enqueue([new("idle")])
        started = time.monotonic()
        await asyncio.wait_for(waiting, 30)
        assert time.monotonic() - started < 10  # woken, not timed out
    finally:
        await producer.close()
    assert len(await _lease_all(pg, "idle")) == 1


async def test_a_notification_while_busy_is_not_lost(pg: PostgresBackend) -> None:
    await _lease_all(pg, "busy")
    await pg.enqueue([new("busy")])  # nobody waits right now
    started = time.monotonic()
    await pg.wait_for_work(["busy"], timeout_s=60)  # returns at once: it was remembered
    assert time.monotonic() - started < 10


async def test_listener_reconnects_after_its_connection_is_killed(
    pg: PostgresBackend, raw: Any
) -> None:
    await _lease_all(pg, "again")
    killed = await raw.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
        f'LISTEN "{pg.settings.schema}"',
    )
    assert killed == 1
    # While it reconnects, waits fall back to short polls; once back, notifications flow again.
    await until(lambda: _listening_again(pg), timeout_s=30, what="LISTEN again")
    await pg.enqueue([new("again")])
    started = time.monotonic()
    await pg.wait_for_work(["again"], timeout_s=60)
    assert time.monotonic() - started < 10


async def _listening_again(pg: PostgresBackend) -> bool:
    await pg.wait_for_work(["again"], timeout_s=0.05)
    return pg._listener.connected


async def test_waiters_ride_out_a_killed_finish_listener(pg: PostgresBackend, raw: Any) -> None:
    first, second = await pg.enqueue([new("fin"), new("fin")])
    assert await pg.wait_for_finish(first.id, timeout_s=0) is not None  # listens from now on
    assert pg._finish_listener.connected
    killed = await raw.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
        f'LISTEN "{pg.settings.schema}:finished"',
    )
    assert killed == 1
    # While it reconnects, waiters re-read every poll_s; once back, notifications wake them.
    waiter = asyncio.create_task(pg.wait_for_finish(first.id, timeout_s=60))
    assert await pg.cancel([first.id]) == [first.id]
    async with asyncio.timeout(10):
        assert (await waiter) is not None
    await until(lambda: pg._finish_listener.connected, timeout_s=30, what="LISTEN again")
    waiter = asyncio.create_task(pg.wait_for_finish(second.id, timeout_s=600))
    assert await pg.cancel([second.id]) == [second.id]
    async with asyncio.timeout(10):
        finished = await waiter
    assert finished is not None and finished.state == "cancelled"


async def test_the_finish_channel_is_never_a_schema_and_fits() -> None:
    assert finish_channel("forebay") == "forebay:finished"
    long = "s" * 63
    assert len(finish_channel(long)) <= 63 and ":" in finish_channel(long)
    assert finish_channel(long) != finish_channel(long[:-1] + "t")


# -- errors ------------------------------------------------------------------------------------
async def test_unreachable_server_is_backend_unavailable() -> None:
    backend = PostgresBackend.from_url(
        f"postgresql://postgres@127.0.0.1:{_free_port()}/test?reconnect_s=0.2"
    )
    with pytest.raises(BackendUnavailable):
        await backend.open()
    await backend.close()


async def test_database_errors_are_backend_errors(pg_url: str) -> None:
    backend = PostgresBackend.from_url(pg_url)
    await backend.open()
    try:
        await backend.drop_everything()
        with pytest.raises(BackendError) as caught:
            await backend.get_job(1)
        assert not isinstance(caught.value, BackendUnavailable)
        assert "does not exist" in str(caught.value)
    finally:
        await backend.close()


async def test_ping_and_use_before_open(pg_url: str) -> None:
    backend = PostgresBackend.from_url(pg_url)
    with pytest.raises(BackendError, match="not open"):
        await backend.get_job(1)
    await backend.open()
    try:
        await backend.ping()
    finally:
        await backend.drop_everything()
        await backend.close()


async def test_a_warning_says_when_autovacuum_is_off(
    pg_url: str, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PostgresBackend.from_url(pg_url)
    with caplog.at_level("WARNING", logger="forebay.postgres"):
        await backend.open()
    try:
        off = await raw.fetchval("SELECT current_setting('autovacuum') = 'off'")
        warned = any("autovacuum is off" in r.getMessage() for r in caplog.records)
        assert warned == off
    finally:
        await backend.drop_everything()
        await backend.close()


# -- pruning -----------------------------------------------------------------------------------
async def test_prune_deletes_in_bounded_batches(pg: PostgresBackend) -> None:
    await pg.enqueue([new(payload={"i": i}) for i in range(25)])
    assert not await pg.complete([j.lease for j in await _lease_all(pg)])
    await pg.enqueue([new()])  # unfinished: never pruned
    later = time.time() + 60
    spec = PruneSpec(completed_before=later, dead_before=later, cancelled_before=later, limit=10)
    assert [await pg.prune(spec) for _ in range(4)] == [10, 10, 5, 0]
    [counts] = await pg.counts()
    assert counts.completed == 0 and counts.queued == 1


# -- migrations --------------------------------------------------------------------------------
# The schema a fresh install must have. A new migration changes it; this test then proves
# that migrating from empty (all migrations, one by one) arrives exactly here.
EXPECTED_SCHEMA = {
    "columns": [
        "dependencies.child_id bigint not null",
        "dependencies.parent_id bigint not null",
        "flow.key text not null",
        "flow.kind text not null",
        "flow.queue text not null",
        "flow.value double precision not null",
        "jobs.after_ids text",
        "jobs.after_policy text",
        "jobs.attempt integer not null default 0",
        "jobs.concurrency_key text",
        "jobs.created_at timestamp with time zone not null default now()",
        "jobs.defers integer not null default 0",
        "jobs.deliveries integer not null default 0",
        "jobs.error text",
        "jobs.error_type text",
        "jobs.errors jsonb",
        "jobs.fair_key text",
        "jobs.finished_at timestamp with time zone",
        "jobs.has_children boolean not null default false",
        "jobs.id bigint not null identity always",
        "jobs.key text",
        "jobs.lease_expires_at timestamp with time zone",
        "jobs.lease_token text",
        "jobs.max_attempts integer",
        "jobs.parent_id bigint",
        "jobs.payload json not null",
        "jobs.priority integer not null default 0",
        "jobs.progress double precision",
        "jobs.progress_message text",
        "jobs.queue text not null",
        "jobs.rate_key text",
        "jobs.result json",
        "jobs.run_at timestamp with time zone not null default now()",
        "jobs.run_id text",
        "jobs.started_at timestamp with time zone",
        "jobs.state text not null default 'queued'::text",
        "jobs.tenant text",
        "jobs.timeout_s double precision",
        "jobs.traceparent text",
        "jobs.updated_at timestamp with time zone not null default now()",
        "jobs.webhook text",
        "jobs.worker_id text",
        "migrations.applied_at timestamp with time zone not null default now()",
        "migrations.name text not null",
        "migrations.version integer not null",
        "queues.limits jsonb",
        "queues.max_depth integer",
        "queues.name text not null",
        "queues.paused boolean not null default false",
        "queues.updated_at timestamp with time zone not null default now()",
        "runs.cancelled integer not null default 0",
        "runs.completed integer not null default 0",
        "runs.completed_at timestamp with time zone",
        "runs.created_at timestamp with time zone not null default now()",
        "runs.dead integer not null default 0",
        "runs.id text not null",
        "runs.key text",
        "runs.meta text not null default '{}'::text",
        "runs.name text",
        "runs.on_complete text",
        "runs.sealed_at timestamp with time zone",
        "runs.state text not null default 'open'::text",
        "runs.tenant text",
        "runs.total integer not null default 0",
        "runs.webhook text",
        "schedules.catch_up integer not null default 1",
        "schedules.created_at timestamp with time zone not null default now()",
        "schedules.cron text",
        "schedules.every_s double precision",
        "schedules.last_tick timestamp with time zone",
        "schedules.name text not null",
        "schedules.payload json not null",
        "schedules.priority integer not null default 0",
        "schedules.queue text not null",
        "schedules.timezone text not null default 'UTC'::text",
        "schedules.updated_at timestamp with time zone not null default now()",
        "throughput.completed bigint not null default 0",
        "throughput.dead bigint not null default 0",
        "throughput.minute timestamp with time zone not null",
        "throughput.queue text not null",
        "throughput.reclaimed bigint not null default 0",
        "throughput.slot smallint not null",
        "totals.completed bigint not null default 0",
        "totals.dead bigint not null default 0",
        "totals.queue text not null",
        "totals.reclaimed bigint not null default 0",
        "totals.slot smallint not null",
        "workers.expires_at timestamp with time zone not null",
        "workers.id text not null",
        "workers.info jsonb not null",
        "workers.started_at timestamp with time zone not null",
    ],
    "constraints": [
        "dependencies_pkey PRIMARY KEY (parent_id, child_id)",
        "flow_kind_known CHECK ((kind = ANY (ARRAY['rate'::text, 'fair'::text])))",
        "flow_pkey PRIMARY KEY (queue, kind, key)",
        "jobs_after_policy_known CHECK (((after_policy IS NULL) OR (after_policy = ANY "
        "(ARRAY['completed'::text, 'always'::text]))))",
        "jobs_counters_not_negative CHECK (((attempt >= 0) AND (deliveries >= 0) AND (defers >= "
        "0)))",
        "jobs_finished_iff_terminal CHECK (((state = ANY (ARRAY['completed'::text, "
        "'dead'::text, 'cancelled'::text])) = (finished_at IS NOT NULL)))",
        "jobs_lease_iff_running CHECK (((state = 'running'::text) = ((lease_token IS NOT NULL) "
        "AND (lease_expires_at IS NOT NULL))))",
        "jobs_max_attempts_positive CHECK (((max_attempts IS NULL) OR (max_attempts >= 1)))",
        "jobs_pkey PRIMARY KEY (id)",
        "jobs_progress_percent CHECK (((progress IS NULL) OR ((progress >= (0)::double "
        "precision) AND (progress <= (100)::double precision))))",
        "jobs_state_known CHECK ((state = ANY (ARRAY['waiting'::text, 'queued'::text, "
        "'running'::text, 'completed'::text, 'dead'::text, 'cancelled'::text])))",
        "jobs_timeout_positive CHECK (((timeout_s IS NULL) OR (timeout_s > (0)::double "
        "precision)))",
        "migrations_pkey PRIMARY KEY (version)",
        "queues_max_depth_check CHECK (((max_depth IS NULL) OR (max_depth >= 1)))",
        "queues_pkey PRIMARY KEY (name)",
        "runs_completed_iff_completed_at CHECK (((state = 'completed'::text) = (completed_at IS "
        "NOT NULL)))",
        "runs_counts_add_up CHECK (((completed >= 0) AND (dead >= 0) AND (cancelled >= 0) AND "
        "(((completed + dead) + cancelled) <= total)))",
        "runs_pkey PRIMARY KEY (id)",
        "runs_sealed_at_iff_sealed CHECK (((state = 'open'::text) = (sealed_at IS NULL)))",
        "runs_state_known CHECK ((state = ANY (ARRAY['open'::text, 'sealed'::text, "
        "'completed'::text])))",
        "schedules_catch_up_check CHECK ((catch_up >= 1))",
        "schedules_every_s_check CHECK (((every_s IS NULL) OR (every_s >= (1)::double precision)))",
        "schedules_one_timing CHECK (((cron IS NULL) <> (every_s IS NULL)))",
        "schedules_pkey PRIMARY KEY (name)",
        "throughput_pkey PRIMARY KEY (queue, minute, slot)",
        "totals_pkey PRIMARY KEY (queue, slot)",
        "workers_pkey PRIMARY KEY (id)",
    ],
    "indexes": [
        "dependencies_pkey ON dependencies USING btree (parent_id, child_id)",
        "flow_pkey ON flow USING btree (queue, kind, key)",
        "jobs_due ON jobs USING btree (queue, priority DESC, run_at, id) WHERE (state = "
        "'queued'::text)",
        "jobs_finished ON jobs USING btree (state, finished_at) WHERE (finished_at IS NOT NULL)",
        "jobs_leases ON jobs USING btree (lease_expires_at) WHERE (state = 'running'::text)",
        "jobs_pkey ON jobs USING btree (id)",
        "jobs_queue_finished ON jobs USING btree (queue, state, finished_at) WHERE (finished_at "
        "IS NOT NULL)",
        "jobs_queue_key ON jobs USING btree (queue, key) WHERE (key IS NOT NULL)",
        "jobs_queued_fair ON jobs USING btree (queue, fair_key, priority DESC, run_at, id) "
        "WHERE ((state = 'queued'::text) AND (fair_key IS NOT NULL))",
        "jobs_run_state ON jobs USING btree (run_id, state) WHERE (run_id IS NOT NULL)",
        "jobs_running_key ON jobs USING btree (queue, concurrency_key) WHERE ((state = "
        "'running'::text) AND (concurrency_key IS NOT NULL))",
        "jobs_tenant ON jobs USING btree (tenant, state) WHERE (tenant IS NOT NULL)",
        "migrations_pkey ON migrations USING btree (version)",
        "queues_pkey ON queues USING btree (name)",
        "runs_completed ON runs USING btree (completed_at) WHERE (state = 'completed'::text)",
        "runs_key ON runs USING btree (key) WHERE (key IS NOT NULL)",
        "runs_pkey ON runs USING btree (id)",
        "schedules_pkey ON schedules USING btree (name)",
        "throughput_minute ON throughput USING btree (minute)",
        "throughput_pkey ON throughput USING btree (queue, minute, slot)",
        "totals_pkey ON totals USING btree (queue, slot)",
        "workers_expires ON workers USING btree (expires_at)",
        "workers_pkey ON workers USING btree (id)",
    ],
    "options": [
        "autovacuum_analyze_scale_factor=0.02",
        "autovacuum_vacuum_insert_scale_factor=0.01",
        "autovacuum_vacuum_scale_factor=0.01",
    ],
    "tables": [
        "dependencies",
        "flow",
        "jobs",
        "migrations",
        "queues",
        "runs",
        "schedules",
        "throughput",
        "totals",
        "workers",
    ],
}


async def describe_schema(conn: Any, schema: str) -> dict[str, list[str]]:
    """The catalog of one schema as plain text lines (names made schema-independent)."""
    columns = await conn.fetch(
        """SELECT table_name || '.' || column_name, data_type, is_nullable, column_default,
                  identity_generation
           FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1""",
        schema,
    )
    constraints = await conn.fetch(
        """SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
           JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = $1 ORDER BY conname""",
        schema,
    )
    indexes = await conn.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
        schema,
    )
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", schema
    )
    options = await conn.fetchval(
        "SELECT reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = 'jobs'",
        schema,
    )

    def column(r: Any) -> str:
        parts = [r[0], r[1]]
        parts += ["not null"] if r[2] == "NO" else []
        parts += [f"default {r[3]}"] if r[3] is not None else []
        parts += [f"identity {r[4].lower()}"] if r[4] else []
        return " ".join(parts)

    prefix = "CREATE INDEX ", "CREATE UNIQUE INDEX "
    return {
        "columns": [column(r) for r in columns],
        "constraints": [f"{r[0]} {r[1]}" for r in constraints],
        "indexes": [
            r[0].removeprefix(prefix[1]).removeprefix(prefix[0]).replace(f"{schema}.", "")
            for r in indexes
        ],
        "options": sorted(options or []),
        "tables": [r[0] for r in tables],
    }


async def test_migrating_from_empty_gives_the_current_schema(raw: Any) -> None:
    by_backend, by_script = unique_name("forebay_mig"), unique_name("forebay_sql")
    backend = PostgresBackend.from_url(f"{PG_URL}?schema={by_backend}")
    try:
        await backend.open()  # from empty, every migration one by one
        assert await backend.migrate() == []  # and a second run changes nothing
        await raw.execute(migration_sql(by_script))  # the DBA's route: forebay migrate --sql
        migrated = await describe_schema(raw, by_backend)
        scripted = await describe_schema(raw, by_script)
        assert migrated == EXPECTED_SCHEMA
        assert scripted == EXPECTED_SCHEMA
        versions = [v for v, _, _ in migrations(by_script)]
        recorded = await raw.fetch(f'SELECT version FROM "{by_script}".migrations ORDER BY 1')
        assert [r[0] for r in recorded] == versions
        # A schema that a DBA migrated is opened without any DDL.
        scripted_backend = PostgresBackend.from_url(f"{PG_URL}?schema={by_script}")
        await scripted_backend.open()
        assert await scripted_backend.migrate() == []
        await scripted_backend.close()
    finally:
        await backend.drop_everything()
        await backend.close()
        await raw.execute(f'DROP SCHEMA IF EXISTS "{by_script}" CASCADE')


async def test_a_role_without_ddl_rights_uses_a_schema_a_dba_applied(raw: Any) -> None:
    schema, role = unique_name("forebay_dba"), unique_name("forebay_app")
    await raw.execute(migration_sql(schema))
    await raw.execute(f"CREATE ROLE {role} LOGIN")
    try:
        # The grants docs/postgres.md gives; nothing more.
        await raw.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        await raw.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {role}'
        )
        await raw.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}')
        parts = urlsplit(PG_URL)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))
        backend = PostgresBackend.from_url(f"{url}?schema={schema}")
        await backend.open()
        try:
            assert backend.applied_on_open == []
            [job] = await backend.enqueue([new()])
            [leased] = await _lease_all(backend)
            assert leased.id == job.id
            assert await backend.complete([leased.lease]) == []
            later = time.time() + 60
            spec = PruneSpec(completed_before=later, dead_before=later, cancelled_before=later)
            assert await backend.prune(spec) == 1
        finally:
            await backend.close()
    finally:
        await raw.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await raw.execute(f"DROP OWNED BY {role}")
        await raw.execute(f"DROP ROLE {role}")


def test_migration_sql_needs_no_server() -> None:
    sql = migration_sql("dba_schema")
    assert sql.startswith("-- forebay") and sql.rstrip().endswith("COMMIT;")
    assert 'CREATE TABLE "dba_schema".jobs' in sql
    assert (
        "INSERT INTO \"dba_schema\".migrations (version, name) VALUES (1, '0001_initial.sql')"
        in sql
    )
    assert "0001_initial" not in migration_sql("dba_schema", after=migrations("dba_schema")[-1][0])
    with pytest.raises(ConfigError):
        migration_sql("Robert'); DROP TABLE students;--")


async def test_concurrent_opens_migrate_once(pg_url: str) -> None:
    backends = [PostgresBackend.from_url(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(b.open() for b in backends))
        assert [await b.migrate() for b in backends] == [[], [], [], []]
    finally:
        await backends[0].drop_everything()
        for b in backends:
            await b.close()


# -- helpers -----------------------------------------------------------------------------------
async def _drop(app: Forebay) -> None:
    await app.open()
    drop = app.backend.drop_everything
    await drop()
    await app.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_payload_round_trips_exactly(pg: PostgresBackend) -> None:
    # Stored as json (not jsonb): key order and NUL characters survive unchanged.
    payload = {"b": 1, "a": "\u0000 nul", "nested": [{"z": None, "y": 1.5}]}
    [job] = await pg.enqueue([new(payload=payload)])
    stored = await pg.get_job(job.id)
    assert stored is not None
    assert json.dumps(stored.payload) == json.dumps(payload)
