"""``forebay migrate [--sql]``: apply the backend's pending migrations, or print their SQL.

Migrations are numbered and forward-only; opening a backend applies them too, so this command
is for doing it deliberately (before a deploy) and for reviewing the SQL (``--sql``).
"""

from __future__ import annotations

import sys
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import typer

from forebay.app import Forebay
from forebay.backends import backend_from_url
from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import EXIT_ERROR, EXIT_USAGE, fail, print_json, stdout
from forebay.cli.session import resolve_url, run
from forebay.errors import ConfigError, ForebayError
from forebay.job import JSON

__all__ = ["migrate"]


def migrate(
    sql: Annotated[
        bool,
        typer.Option(
            "--sql", help="Print the migrations' SQL instead of applying them (no connection)."
        ),
    ] = False,
    schema: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="With --sql on PostgreSQL: the schema to write into the SQL "
            "[default: the URL's ?schema=, else the backend's own].",
        ),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply pending schema migrations and print which ones were applied."""
    resolved = resolve_url(url)
    if sql:
        try:
            text = _migration_sql(resolved, schema)
        except ForebayError as exc:  # e.g. a schema name the backend refuses
            fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR)
        if as_json:
            print_json({"sql": text})
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    if schema is not None:
        fail("--schema goes with --sql; to migrate a schema put it in the URL", EXIT_USAGE)
    applied = run(_migrate(resolved))
    if as_json:
        print_json({"applied": list[JSON](applied)})
    elif applied:
        stdout().print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        stdout().print("schema is up to date: no pending migration")


async def _migrate(url: str) -> list[str]:
    async with Forebay(url) as app:
        backend = app.backend
        # Opening already applied what was pending; the backend remembers what that was.
        return backend.applied_on_open + await backend.migrate()


def _migration_sql(url: str, schema: str | None) -> str:
    """The backend's migrations as SQL, built from its URL without connecting."""
    if schema is not None:
        scheme = url.split(":", 1)[0].lower()
        if scheme == "sqlite":
            fail("--schema is for PostgreSQL; SQLite has no schemas", EXIT_USAGE)
        if scheme in ("postgres", "postgresql"):
            url = _with_schema(url, schema)
    return backend_from_url(url).migration_sql()


def _with_schema(url: str, schema: str) -> str:
    """The PostgreSQL URL with its ``?schema=`` option set to ``schema``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("schema", schema)])))
