"""The PostgreSQL schema: its name, its SQL, and its numbered forward-only migrations.

Everything forebay stores lives in one PostgreSQL schema (``forebay`` unless configured), so
several forebay installations can share a database and a DBA can see at a glance what is
forebay's. The schema name is configuration, not input: it is validated as a plain lowercase
identifier and written into the SQL text once, when the queries are loaded.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

from forebay.backends.rows import COLUMNS as _FIELDS
from forebay.errors import ConfigError
from forebay.sqlfiles import migration_files, render, render_queries

__all__ = [
    "COLUMNS",
    "DEFAULT_SCHEMA",
    "finish_channel",
    "migration_sql",
    "migrations",
    "queries",
    "validate_schema",
]

DEFAULT_SCHEMA = "forebay"
COLUMNS = ", ".join(_FIELDS)
"""A job's columns, in the order :func:`forebay.backends.rows.job_from_row` reads them."""
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


def finish_channel(schema: str) -> str:
    """The channel of a schema's finish notifications: never a schema's name (no ``:`` in
    those), so never another installation's work channel; at most 63 bytes, as channels are."""
    name = f"{schema}:finished"
    if len(name) <= 63:
        return name
    digest = hashlib.blake2b(schema.encode(), digest_size=6).hexdigest()
    return f"{schema[:50]}:{digest}"


def _names(schema: str) -> dict[str, str]:
    return {
        "schema": f'"{validate_schema(schema)}"',
        "channel": schema,
        "finish_channel": finish_channel(schema),
    }


@cache
def queries(schema: str) -> dict[str, str]:
    """The named queries of ``queries.sql`` for one schema."""
    values = _names(schema) | {"columns": COLUMNS, "relaxed_commit": _RELAXED_COMMIT}
    return render_queries(_PACKAGE, values, inline=("filter", "run_counted", "counter_slot"))


@cache
def migrations(schema: str) -> tuple[tuple[int, str, str], ...]:
    """The numbered migrations as (version, file name, SQL) for one schema."""
    names = _names(schema)
    return tuple(
        (version, name, render(sql, names, where=f"{_PACKAGE}: {name}"))
        for version, name, sql in migration_files(_PACKAGE)
    )


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
