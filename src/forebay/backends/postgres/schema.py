"""The PostgreSQL schema: its name, its SQL, and its numbered forward-only migrations.

Everything forebay stores lives in one PostgreSQL schema (``forebay`` unless configured), so
several forebay installations can share a database and a DBA can see at a glance what is
forebay's. The schema name is configuration, not input: it is validated as a plain lowercase
identifier and written into the SQL text once, when the queries are loaded.
"""

from __future__ import annotations

import re
from functools import cache

from forebay.errors import ConfigError
from forebay.sqlfiles import load_queries, migration_files

__all__ = ["COLUMNS", "DEFAULT_SCHEMA", "migration_sql", "migrations", "queries", "validate_schema"]

DEFAULT_SCHEMA = "forebay"
COLUMNS = (
    "id, queue, payload, state, key, priority, attempt, deliveries, defers, run_at, created_at, "
    "updated_at, finished_at, lease_token, lease_expires_at, worker_id, progress, "
    "progress_message, error, error_type, run_id"
)
_PACKAGE = "forebay.backends.postgres"
# Evaluated once per statement (an InitPlan); see the head of queries.sql.
_RELAXED_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def validate_schema(name: str) -> str:
    """Return ``name`` if it can be a schema (and channel) name as is; raise ConfigError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or name.startswith("pg_"):
        raise ConfigError(
            f"PostgreSQL schema name {name!r} is not allowed: use lowercase letters, digits and "
            "underscores, at most 63 characters, not starting with a digit or pg_"
        )
    return name


def _substitute(sql: str, schema: str) -> str:
    return sql.replace("{schema}", f'"{schema}"').replace("{channel}", schema)


@cache
def queries(schema: str) -> dict[str, str]:
    """The named queries of ``queries.sql`` for one schema."""
    validate_schema(schema)
    raw = load_queries(_PACKAGE)
    where = "\n".join(ln for ln in raw["filter"].splitlines() if not ln.lstrip().startswith("--"))
    return {
        name: _substitute(
            sql.replace("{columns}", COLUMNS)
            .replace("{filter}", f"({where})")
            .replace("{relaxed_commit}", _RELAXED_COMMIT),
            schema,
        )
        for name, sql in raw.items()
    }


@cache
def migrations(schema: str) -> tuple[tuple[int, str, str], ...]:
    """The numbered migrations as (version, file name, SQL) for one schema."""
    validate_schema(schema)
    return tuple((v, name, _substitute(sql, schema)) for v, name, sql in migration_files(_PACKAGE))


def migration_sql(schema: str = DEFAULT_SCHEMA, *, after: int = 0) -> str:
    """The DDL that ``forebay migrate`` would run on an empty database, as one psql script.

    For DBAs who apply schema changes themselves: ``forebay migrate --sql | psql ...``. Made
    without connecting anywhere. ``after``: leave out migrations up to that version (the one a
    database already has, as recorded in ``<schema>.migrations``), to print only an upgrade.
    """
    q = queries(schema)
    parts = [
        f"-- forebay: schema {schema!r}, migrations after version {after}",
        "BEGIN;",
        q["create_schema"] + ";",
        q["create_migrations_table"] + ";",
    ]
    for version, name, sql in migrations(schema):
        if version <= after:
            continue
        parts.append(f"\n-- {name}\n{sql.strip()}")
        parts.append(
            f"INSERT INTO \"{schema}\".migrations (version, name) VALUES ({version}, '{name}');"
        )
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"
