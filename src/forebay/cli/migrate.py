"""``forebay migrate [--sql]``: apply the backend's pending migrations, or print their SQL.

Migrations are numbered and forward-only; opening a backend applies them too, so this command
is for doing it deliberately (before a deploy) and for reviewing the SQL (``--sql``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import typer

from forebay.app import Forebay
from forebay.backends import backend_from_url
from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import EXIT_USAGE, fail, print_json, stdout
from forebay.cli.session import resolve_url, run
from forebay.errors import ForebayError, MissingExtra
from forebay.job import JSON
from forebay.sqlfiles import migration_files

__all__ = ["migrate"]

_SQLITE_PACKAGE = "forebay.backends.sqlite"
_POSTGRES_MODULE = "forebay.backends.postgres"


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
            fail(str(exc))
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
        on_open: list[str] = list(getattr(backend, "applied_on_open", []))
        return on_open + await backend.migrate()


def _migration_sql(url: str, schema: str | None) -> str:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if schema is not None:
            fail("--schema is for PostgreSQL; SQLite has no schemas", EXIT_USAGE)
        return _sqlite_sql()
    if scheme in ("postgres", "postgresql"):
        return _postgres_sql(schema or _url_schema(url))
    if scheme in ("redis", "rediss"):
        fail("the Redis backend keeps no SQL schema: there is no SQL to print")
    backend_from_url(url)  # an unknown URL: its error names the supported ones
    fail(f"the backend of {scheme}: URLs has no SQL migrations to print")


def _sqlite_sql() -> str:
    parts = [f"-- {name}\n{text.strip()}\n" for _, name, text in migration_files(_SQLITE_PACKAGE)]
    return "\n".join(parts)


def _postgres_sql(schema: str | None) -> str:
    try:
        module = importlib.import_module(_POSTGRES_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("forebay"):
            fail("this installation of forebay has no PostgreSQL backend")
        fail(str(MissingExtra("postgres", exc.name or "asyncpg")))
    render = getattr(module, "migration_sql", None)
    if render is None:
        fail("this version of the PostgreSQL backend cannot print its migrations")
    text = render(schema) if schema else render()
    return str(text)


def _url_schema(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("schema")
    return values[0] if values else None
