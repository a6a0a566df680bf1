"""Several backends open on one store at once, as separate worker processes (on one host or
several) have them: each with its own connections, so only the store orders what they do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from forebay.backends.postgres import PostgresBackend
from forebay.backends.sqlite import SQLiteBackend
from forebay.testing import isolated_store
from tests.servers import PG_URL, backend_url


@asynccontextmanager
async def postgres_fleet(tmp_path: Path, size: int) -> AsyncIterator[list[PostgresBackend]]:
    """``size`` backends on one fresh schema (dropped afterwards), each with its own pool."""
    async with isolated_store(backend_url("postgres", tmp_path)) as first:
        assert isinstance(first, PostgresBackend)
        others = [
            PostgresBackend.from_url(f"{PG_URL}?schema={first.settings.schema}")
            for _ in range(size - 1)
        ]
        for other in others:
            await other.open()
        try:
            yield [first, *others]
        finally:
            for other in others:
                await other.close()


@asynccontextmanager
async def sqlite_pair(path: Path) -> AsyncIterator[tuple[SQLiteBackend, SQLiteBackend]]:
    """Two stores open on the file ``path``, as two worker processes would have (each its own
    writer thread and connections, so SQLite's file lock is all that orders them)."""
    a, b = SQLiteBackend(path), SQLiteBackend(path)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
