"""Named SQL sections loaded once from ``.sql`` files shipped in the package.

A file holds sections introduced by ``-- name: <section>`` lines; everything up to the next such
line is that section's SQL. Backends keep all their SQL in such files, never in f-strings.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["load_queries", "migration_files"]

_SECTION = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


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
    """Numbered migrations of ``package``'s ``migrations`` folder as (version, name, sql)."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{package}: migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)
