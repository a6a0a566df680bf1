"""The SQLite schema: a job store written by an earlier version upgrades in place, and the
payloads that live apart from their jobs come and go with them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from forebay.backends.base import PruneSpec
from forebay.backends.sqlite import SQLiteBackend
from forebay.backends.sqlite.backend import _statements
from forebay.job import Failure, JobFilter, Lease, NewJob
from forebay.sqlfiles import migration_files


def _version_1_store(path: Path, payloads: list[str]) -> None:
    """A job store as version 1 of the schema left it, holding one queued job per payload."""
    (version, name, sql) = migration_files("forebay.backends.sqlite")[0]
    assert version == 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE forebay_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO forebay_migrations VALUES (1, ?, ?)", (name, time.time()))
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
        assert store.applied_on_open[0] == "0002_payloads.sql"  # and every later one
        listed = await store.list_jobs(JobFilter(queue="old"))
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
