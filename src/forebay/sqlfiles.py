"""Named SQL sections loaded once from ``.sql`` files shipped in the package, and their templates.

A file holds sections introduced by ``-- name: <section>`` lines; everything up to the next such
line is that section's SQL. Backends keep all their SQL in such files, never in f-strings.

A section may hold placeholders, ``{name}``, for what is fixed once per store rather than per
call (a schema name, the list of a job's columns, a shared ``WHERE`` clause):
:func:`render_queries` fills them when the file is loaded, :func:`render` one text (a
migration). A placeholder with no value is an error at load, so a misspelt one never reaches
the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources

__all__ = ["load_queries", "migration_files", "render", "render_queries"]

_SECTION = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@cache
def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Return ``{section name: sql}`` for one ``.sql`` file of ``package``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    queries: dict[str, str] = {}
    for name, sql in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"{package}/{filename}: section {name!r} is defined twice")
        queries[name] = sql.strip()
    return queries


@cache
def migration_files(package: str) -> tuple[tuple[int, str, str], ...]:
    """Numbered migrations of ``package``'s ``migrations`` folder as (version, name, sql).

    Versions are applied by set (each one not yet recorded, in order), so a gap in the
    numbering is harmless; two files with one number are refused."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] < 1):
        raise RuntimeError(f"{package}: migrations must be numbered 0001, 0002, ..., once each")
    return tuple(found)


def render(sql: str, values: Mapping[str, str], *, where: str = "SQL") -> str:
    """``sql`` with each ``{name}`` replaced by ``values[name]`` (in one pass: a value is not
    searched for placeholders). ``where`` names the text in the error about a missing value."""

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise RuntimeError(f"{where}: no value for the placeholder {{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(fill, sql)


def render_queries(
    package: str,
    values: Mapping[str, str],
    *,
    inline: Iterable[str] = (),
    filename: str = "queries.sql",
) -> dict[str, str]:
    """Every section of ``package``'s ``filename`` with its placeholders filled (:func:`render`).

    A section named in ``inline`` is a fragment that others embed: its own placeholder (e.g.
    ``{filter}`` for the section ``filter``) becomes its SQL, comment lines dropped, in
    parentheses.
    """
    raw = load_queries(package, filename)
    filled = dict(values)
    for name in inline:
        fragment = "\n".join(
            line for line in raw[name].splitlines() if not line.lstrip().startswith("--")
        )
        filled[name] = "(" + render(fragment, values, where=f"{package}/{filename}: {name}") + ")"
    return {
        name: render(sql, filled, where=f"{package}/{filename}: {name}")
        for name, sql in raw.items()
    }
