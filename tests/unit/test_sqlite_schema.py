"""The SQLite schema: a job store written by an earlier version upgrades in place, and the
payloads that live apart from their jobs come and go with them."""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from forebay.backends.base import PruneSpec
from forebay.backends.sqlite import SQLiteBackend
from forebay.job import DeadCursor, Failure, JobFilter, Lease, NewJob
from forebay.sqlfiles import migration_files
from tests.old_stores import sqlite_add_jobs, sqlite_store_at


def _version_1_store(path: Path, payloads: list[str]) -> None:
    """A job store as version 1 of the schema left it, holding one queued job per payload."""
    conn = sqlite_store_at(path, 2)
    try:
        now = time.time()
        conn.executemany(
            "INSERT INTO forebay_jobs (queue, payload, key, run_at, created_at, updated_at)"
            " VALUES ('old', ?, ?, ?, ?, ?)",
            [(p, f"k{i}", now, now, now) for i, p in enumerate(payloads)],
        )
    finally:
        conn.close()


async def test_a_version_1_store_keeps_its_jobs_and_payloads_when_upgraded(
    tmp_path: Path,
) -> None:
    payloads = ['{"n":1,"text":"caf\\u00e9"}', "[1,2,3]", '"just a string"', "null"]
    _version_1_store(tmp_path / "jobs.db", payloads)
    store = SQLiteBackend(tmp_path / "jobs.db")
    await store.open()
    try:
        later = [name for _, name, _ in migration_files("forebay.backends.sqlite")[1:]]
        assert store.applied_on_open == later and later[0] == "0002_payloads.sql"
        listed = await store.list_jobs(JobFilter(queue="old"))
        assert all(j.max_attempts is None and j.timeout_s is None for j in listed)
        assert sorted((j.key, j.payload) for j in listed) == [
            ("k0", {"n": 1, "text": "café"}),
            ("k1", [1, 2, 3]),
            ("k2", "just a string"),
            ("k3", None),
        ]
        leased = await store.lease(queue="old", limit=10, worker_id="w", lease_s=30)
        assert [j.key for j in leased] == ["k0", "k1", "k2", "k3"]
        assert [j.payload for j in leased] == [
            j.payload for j in sorted(listed, key=lambda j: j.id)
        ]
        # A key stored before the upgrade still deduplicates.
        (again,) = await store.enqueue([NewJob.create("old", {"other": 1}, key="k0")])
        assert not again.created and again.payload == {"n": 1, "text": "café"}
    finally:
        await store.close()


async def test_a_pruned_or_purged_job_takes_its_payload_with_it(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "jobs.db")
    await store.open()
    try:
        jobs = await store.enqueue([NewJob.create("q", {"i": i}) for i in range(4)])
        leased = await store.lease(queue="q", limit=4, worker_id="w", lease_s=30)
        assert await store.complete([Lease(j.id, j.lease_token or "") for j in leased[:2]]) == []
        await store.dead_letter(
            [Failure(Lease(j.id, j.lease_token or ""), "boom", "Boom") for j in leased[2:]]
        )
        assert await store.purge(JobFilter(queue="q")) == 2
        later = time.time() + 1
        assert await store.prune(PruneSpec(later, later, later)) == 2
        assert [await store.get_job(job.id) for job in jobs] == [None] * 4
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM forebay_payloads").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM forebay_jobs").fetchone() == (0,)
    finally:
        conn.close()


async def test_dead_pages_cross_an_instant_whose_microseconds_round_two_ways(
    tmp_path: Path,
) -> None:
    """A death time that ``round(finished_at * 1e6)`` (a product a quarter of a microsecond
    coarse) rounds to another microsecond than Python's datetime does: SQL must round the way
    Python does, or a page starts past its cursor."""

    def python_us(t: float) -> int:
        return DeadCursor(datetime.fromtimestamp(t, UTC), 0).micros

    tricky = next(
        t
        for k in range(1, 100_000)
        if math.floor((t := 1_765_000_000 + k * 0.000123457) * 1_000_000 + 0.5) != python_us(t)
    )
    store = SQLiteBackend(tmp_path / "jobs.db")
    await store.open()
    try:
        await store.enqueue([NewJob.create("a", {"i": i}) for i in range(4)])
        leased = await store.lease(queue="a", limit=4, worker_id="w", lease_s=60)
        await store.dead_letter([Failure(j.lease, "E: x", "E") for j in leased])

        def stamp(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE forebay_jobs SET finished_at = ?", (tricky,))

        await store._write(stamp)
        seen: list[int] = []
        cursor: DeadCursor | None = None
        while page := await store.list_dead(JobFilter(queue="a"), limit=1, before=cursor):
            seen += [j.id for j in page]
            cursor = DeadCursor.after(page[-1])
        assert seen == sorted((j.id for j in leased), reverse=True)
    finally:
        await store.close()


def _schema(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'forebay_jobs'"
        ).fetchall()
    finally:
        conn.close()
    return {name: sql for name, sql in rows}


async def test_the_jobs_table_rebuilt_for_the_waiting_state_keeps_jobs_ids_and_indexes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    sqlite_store_at(path, 8).close()
    before = _schema(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        now = time.time()
        for i, state in enumerate(["queued", "completed", "dead", "queued"], start=1):
            finished = None if state == "queued" else now
            columns = {"state": state, "finished_at": finished, "run_id": "free text"}
            sqlite_add_jobs(conn, "old", [f"k{i}"], now, **columns)
        conn.execute("DELETE FROM forebay_jobs WHERE id = 4")  # the counter stays at 4
    finally:
        conn.close()

    store = SQLiteBackend(path)
    await store.open()
    try:
        assert store.applied_on_open == ["0008_runs.sql", "0009_flow.sql", "0010_fleet.sql"]
        old = sorted(await store.list_jobs(JobFilter(queue="old")), key=lambda j: j.id)
        assert [(j.id, j.state.value, j.key, j.payload) for j in old] == [
            (1, "queued", "k1", {"i": 1}),
            (2, "completed", "k2", {"i": 2}),
            (3, "dead", "k3", {"i": 3}),
        ]
        assert old[0].run_id == "free text"
        [parent] = await store.enqueue([NewJob.create("new", {})])
        assert parent.id == 5  # never an id a deleted job had
        [child] = await store.enqueue([NewJob.create("new", {}, after=[parent.id])])
        assert child.state.value == "waiting"
        # every index and the payload trigger are there again, and those of later versions
        after = _schema(path)
        later = {"forebay_jobs_running_key", "forebay_jobs_fair", "forebay_jobs_tenant"}
        assert set(after) == set(before) | {"forebay_jobs_run_state"} | later
        for name in set(before) - {"forebay_jobs", "forebay_jobs_due"}:  # 0009 adds fair_key
            assert after[name] == before[name], name
        await store.prune(PruneSpec(now + 1, now + 1, now + 1, queue="old"))
        conn = sqlite3.connect(path)
        try:
            payloads = conn.execute("SELECT job_id FROM forebay_payloads ORDER BY 1").fetchall()
        finally:
            conn.close()
        assert payloads == [(1,), (5,), (6,)]
    finally:
        await store.close()
