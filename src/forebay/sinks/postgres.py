"""A PostgreSQL sink: batched, version-guarded UPSERTs in one transaction per batch.

The sink runs the statements of a batch — named queries from the caller's ``.sql`` file, with
column arrays as arguments (``unnest($1::bigint[], ...)``) — in one transaction, and counts
what each applied. It knows nothing about tables: the guard lives in each statement, by
convention:

* an UPSERT applies a row only when its version (``updated_at``) is **not older** than the
  stored one, and does nothing when the stored row is the same version with the same content;
* a statement that returns rows with an ``outcome`` column (``applied``, ``older``,
  ``duplicate``, ``deleted``) is counted per ``(table, outcome)`` in the :class:`WriteResult`.

One UPSERT may not touch the same row twice, so keep one row per key in a batch:
:func:`newest_per_key` does that (the others count as ``older`` or ``duplicate``).

The schema comes from the caller's numbered migrations (``<package>/migrations/0001_*.sql``),
applied once by :meth:`PostgresSink.open` under an advisory lock, into a schema of its own
(``search_path`` is set on every connection, so the SQL names tables without a schema).

Errors are translated at this boundary: the server unreachable, restarting, out of
connections, a lost connection, a serialization failure or deadlock → :class:`SinkUnavailable`;
a constraint or data error, or a bad argument → :class:`SinkRejected`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from forebay.errors import ConfigError, MissingExtra, SinkError, SinkRejected, SinkUnavailable
from forebay.sinks.base import WRITE_OUTCOMES, WriteOutcome, WriteResult
from forebay.sqlfiles import load_queries, migration_files

__all__ = ["PostgresSink", "Statement", "newest_per_key"]

log = logging.getLogger("forebay.sinks.postgres")

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
_REJECTED_SQLSTATE_CLASSES = ("22", "23", "42", "2B", "2D", "P0")

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a batch: its SQL, its arguments, and the table its counts belong to."""

    table: str
    sql: str
    args: tuple[object, ...] = ()


class PostgresSink:
    """Writes batches of :class:`Statement` in one transaction each. See the module docstring.

    ``dsn``: a ``postgresql://`` URL. ``schema``: where the tables live (created if missing).
    ``migrations``: the package whose ``migrations/`` folder creates them.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        migrations: str | None = None,
        max_connections: int = 4,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 60.0,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"schema name {schema!r} must be letters, digits and underscores (at most 63)"
            )
        self.dsn = dsn
        self.schema = schema
        self.migrations = migrations
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self._pool: Any = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresSink(schema={self.schema!r})"

    async def open(self) -> None:
        """Connect and apply pending migrations. Idempotent; retried by the next write."""
        async with self._open_lock:
            if self._pool is not None:
                return
            asyncpg = _asyncpg()
            try:
                pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.max_connections,
                    timeout=self.connect_timeout_s,
                    command_timeout=self.statement_timeout_s,
                    server_settings={"search_path": self.schema},
                )
            except Exception as exc:
                raise _translate(exc, "connect") from exc
            try:
                await self._migrate(pool)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, Exception):
                    raise _translate(exc, "migrate") from exc
                raise
            self._pool = pool

    async def _migrate(self, pool: Any) -> None:
        sql = load_queries("forebay.sinks", "postgres.sql")
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql["lock"], f"forebay-sink:{self.schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(sql["create_migrations_table"])
            if self.migrations is None:
                return
            done = {r["version"] for r in await conn.fetch(sql["applied"], self.migrations)}
            for version, name, body in migration_files(self.migrations):
                if version in done:
                    continue
                log.info(
                    "applying %s migration %s to schema %s", self.migrations, name, self.schema
                )
                await conn.execute(body)
                await conn.execute(sql["record"], self.migrations, version, name)

    async def write(self, batch: Sequence[Statement]) -> WriteResult:
        """Run ``batch`` in one transaction; count the outcomes its statements return."""
        if not batch:
            return WriteResult()
        await self.open()
        counts: dict[tuple[str, WriteOutcome], int] = {}
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for statement in batch:
                    rows = await conn.fetch(statement.sql, *statement.args)
                    _count(counts, statement.table, rows)
        except SinkError:
            raise
        except Exception as exc:
            raise _translate(exc, "write") from exc
        return WriteResult(counts)

    async def fetch(self, sql: str, *args: object) -> list[dict[str, object]]:
        """Run one query outside a batch (for inspection and tests); rows as dicts."""
        await self.open()
        try:
            rows = await self._pool.fetch(sql, *args)
        except Exception as exc:
            raise _translate(exc, "read") from exc
        return [dict(r) for r in rows]

    async def close(self) -> None:
        async with self._open_lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()


def newest_per_key(
    rows: Iterable[R], key: Callable[[R], Hashable], version: Callable[[R], Any]
) -> tuple[list[R], int, int]:
    """Keep the newest row per key (the first of equal versions).

    Returns ``(kept, older, duplicates)``: the rows dropped because a newer version of the
    same key is in the batch, and those that repeat a kept version.
    """
    best: dict[Hashable, R] = {}
    older = duplicates = 0
    for row in rows:
        k = key(row)
        current = best.get(k)
        if current is None:
            best[k] = row
            continue
        new_v, old_v = version(row), version(current)
        if _newer(new_v, old_v):
            best[k] = row
            older += 1
        elif _newer(old_v, new_v):
            older += 1
        else:
            duplicates += 1
    return list(best.values()), older, duplicates


def _newer(a: Any, b: Any) -> bool:
    if a is None:
        return False
    if b is None:
        return True
    return bool(a > b)


def _count(counts: dict[tuple[str, WriteOutcome], int], table: str, rows: Sequence[Any]) -> None:
    for row in rows:
        if "outcome" not in row:
            return
        outcome = row["outcome"]
        n = row.get("n", 1)
        if outcome in WRITE_OUTCOMES:
            key = (table, cast(WriteOutcome, outcome))
            counts[key] = counts.get(key, 0) + int(n)


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("postgres", "asyncpg") from None
    return asyncpg


def _translate(exc: BaseException, doing: str) -> SinkError:
    """A driver error as SinkUnavailable (transient) or SinkRejected (permanent)."""
    what = f"PostgreSQL sink could not {doing}: {type(exc).__name__}: {exc}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES):
            return SinkUnavailable(f"{what} (retrying later)")
        if sqlstate.startswith(_REJECTED_SQLSTATE_CLASSES):
            return SinkRejected(what)
        return SinkError(what)
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return SinkRejected(what)  # a bad argument for a query, refused before sending
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return SinkUnavailable(f"{what} (retrying later)")
    if type(exc).__name__ in ("InterfaceError", "ConnectionDoesNotExistError"):
        return SinkUnavailable(f"{what} (retrying later)")  # e.g. the connection was closed
    return SinkError(what)
