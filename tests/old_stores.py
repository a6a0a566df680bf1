"""Stores as an earlier schema version left them, built by hand for the upgrade tests: the
migrations below a version applied and recorded, as the release that stopped there would have.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from forebay.backends.postgres.schema import migrations, queries
from forebay.backends.sqlite.backend import _statements
from forebay.sqlfiles import migration_files


def sqlite_store_at(path: Path, version: int) -> sqlite3.Connection:
    """An open connection (autocommit) to a SQLite job store at ``path`` as the migrations
    below ``version`` left it; the caller adds its rows and closes it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE forebay_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for number, name, sql in migration_files("forebay.backends.sqlite"):
            if number >= version:
                break
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO forebay_migrations VALUES (?, ?, ?)", (number, name, 0.0))
    except BaseException:
        conn.close()
        raise
    return conn


def sqlite_add_jobs(
    conn: sqlite3.Connection, queue: str, keys: list[str], now: float, **columns: object
) -> None:
    """A job of ``queue`` for each of ``keys``, written at ``now`` (queued unless ``columns``,
    the same for every job, say otherwise), each with its payload ``{"i": <its id>}`` in
    ``forebay_payloads`` (the table version 2 of the schema added)."""
    names = ["queue", "key", "run_at", "created_at", "updated_at", *columns]
    sql = f"INSERT INTO forebay_jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    for key in keys:
        job_id = conn.execute(sql, (queue, key, now, now, now, *columns.values())).lastrowid
        conn.execute("INSERT INTO forebay_payloads VALUES (?, ?)", (job_id, f'{{"i":{job_id}}}'))


async def postgres_schema_at(raw: Any, schema: str, version: int) -> None:
    """Schema ``schema``, through the asyncpg connection ``raw``, as the migrations below
    ``version`` left it; the caller adds its rows and drops the schema."""
    q = queries(schema)
    await raw.execute(q["create_schema"])
    await raw.execute(q["create_migrations_table"])
    for number, name, sql in migrations(schema):
        if number >= version:
            break
        await raw.execute(sql)
        await raw.execute(q["record_migration"], number, name)
