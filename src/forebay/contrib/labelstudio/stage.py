"""Records → the statements of one staging batch (PostgreSQL, schema ``stage`` by default).

The SQL is in ``sql/queries.sql``, the schema in ``sql/migrations/``. A batch runs in this
order, in one transaction: projects, documents and annotations (upserts guarded by
``updated_at``), the stale regions of annotations that got a new version, extractions and
boxes of the current versions, then tombstones (annotations, documents, projects), so a
delete in the same batch as its create wins, as it would have if they came apart.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Hashable, Sequence
from typing import Final, cast

from forebay.contrib.labelstudio.records import Record, Records
from forebay.sinks.base import Outcome, WriteResult
from forebay.sinks.postgres import PostgresSink, Statement, newest_per_key
from forebay.sqlfiles import load_queries

__all__ = ["DEFAULT_SCHEMA", "MIGRATIONS", "make_stage_sink", "stage_statements"]

DEFAULT_SCHEMA: Final = "stage"
MIGRATIONS: Final = "forebay.contrib.labelstudio.sql"

_UPSERTS: Final[dict[str, tuple[str, ...]]] = {
    "projects": ("project_id", "title", "description", "created_at", "updated_at"),
    "documents": (
        "task_id",
        "project_id",
        "doc_id",
        "data",
        "meta",
        "page_count",
        "created_at",
        "updated_at",
    ),
    "annotations": (
        "annotation_id",
        "project_id",
        "task_id",
        "completed_by",
        "was_cancelled",
        "ground_truth",
        "lead_time_s",
        "result",
        "created_at",
        "updated_at",
    ),
    "extractions": (
        "annotation_id",
        "region_id",
        "project_id",
        "task_id",
        "page_index",
        "labels",
        "text",
        "result_types",
        "value",
        "updated_at",
    ),
    "pdf_boxes": (
        "annotation_id",
        "region_id",
        "project_id",
        "task_id",
        "page_index",
        "label",
        "x0",
        "y0",
        "x1",
        "y1",
        "polygon",
        "rotation",
        "page_box",
        "page_rotate",
        "page_x0",
        "page_y0",
        "page_width",
        "page_height",
        "geometry_source",
        "updated_at",
    ),
}
_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "projects": ("project_id",),
    "documents": ("task_id",),
    "annotations": ("annotation_id",),
    "extractions": ("annotation_id", "region_id"),
    "pdf_boxes": ("annotation_id", "region_id"),
}
_DELETES: Final[dict[str, tuple[str, ...]]] = {
    "annotations": ("annotation_id", "project_id", "task_id", "deleted_at"),
    "documents": ("task_id", "project_id", "deleted_at"),
    "projects": ("project_id", "deleted_at"),
}
# List columns go as PostgreSQL array literals (``{"a","b"}``, cast ``::text[]`` or
# ``::float8[]`` in the SQL): a ragged list of lists cannot be one array argument, and the
# server reads a literal for less than it takes to unpack the same list sent as JSON.
_TEXT_LISTS: Final = frozenset({"labels", "result_types"})
_FLOAT_LISTS: Final = frozenset({"polygon"})


def make_stage_sink(dsn: str, schema: str = DEFAULT_SCHEMA) -> PostgresSink:
    """The PostgreSQL sink for the staging tables, migrating its own schema on open."""
    return PostgresSink(dsn, schema=schema, migrations=MIGRATIONS)


def stage_statements(records: Records) -> tuple[list[Statement], WriteResult]:
    """The statements that stage ``records``, and the counts of rows dropped before SQL
    (repeats of a key within the batch, rows without the ids a table is keyed on)."""
    sql = load_queries(MIGRATIONS)
    statements: list[Statement] = []
    dropped: list[WriteResult] = []
    upserts = {t: [r for r in records.get(t, []) if r.get("op") != "delete"] for t in _UPSERTS}
    deletes = {t: [r for r in records.get(t, []) if r.get("op") == "delete"] for t in _DELETES}
    for table in ("projects", "documents", "annotations"):
        rows, result = _unique_newest(table, upserts[table])
        dropped.append(result)
        if rows:
            statements.append(Statement(table, sql[f"upsert_{table}"], _arrays(table, rows)))
    if upserts["annotations"]:
        ids = sorted(
            {
                cast(int, r["annotation_id"])
                for r in upserts["annotations"]
                if _keyed("annotations", r)
            }
        )
        statements.append(Statement("annotations", sql["prune_regions"], (ids,)))
    for table in ("extractions", "pdf_boxes"):
        rows, result = _unique_newest(table, upserts[table])
        dropped.append(result)
        if rows:
            statements.append(Statement(table, sql[f"upsert_{table}"], _arrays(table, rows)))
    for table in ("annotations", "documents", "projects"):
        rows = _first_delete_per_key(table, deletes[table])
        if rows:
            columns = _DELETES[table]
            args = tuple([row.get(c) for row in rows] for c in columns)
            statements.append(Statement(table, sql[f"delete_{table}"], args))
    return statements, WriteResult.merge(dropped)


def _keyed(table: str, row: Record) -> bool:
    return None not in map(row.get, _KEYS[table])


def _key(table: str) -> Callable[[Record], Hashable]:
    return operator.itemgetter(*_KEYS[table])  # every record has all its table's columns


def _unique_newest(table: str, rows: Sequence[Record]) -> tuple[list[Record], WriteResult]:
    keyed = [r for r in rows if _keyed(table, r)]
    kept, older, duplicates = newest_per_key(keyed, _key(table), lambda r: r.get("updated_at"))
    counts: dict[tuple[str, Outcome], int] = {
        (table, "older"): older,
        (table, "duplicate"): duplicates,
    }
    return kept, WriteResult({k: n for k, n in counts.items() if n})


def _first_delete_per_key(table: str, rows: Sequence[Record]) -> list[Record]:
    first: dict[Hashable, Record] = {}
    key_name = _DELETES[table][0]
    for row in rows:
        key = row.get(key_name)
        if key is not None and key not in first:
            first[key] = row
    return list(first.values())


def _arrays(table: str, rows: Sequence[Record]) -> tuple[list[object], ...]:
    """One list per column of ``table`` (rows read once each, by C-level loops: a batch of
    ~50 KB annotations has thousands of rows)."""
    columns = _UPSERTS[table]
    if not rows:
        return tuple([] for _ in columns)
    by_column = zip(*[tuple(map(row.get, columns)) for row in rows], strict=True)
    return tuple(
        [_text_array(v) for v in values]
        if c in _TEXT_LISTS
        else [_float_array(v) for v in values]
        if c in _FLOAT_LISTS
        else list(values)
        for c, values in zip(columns, by_column, strict=True)
    )


def _text_array(value: object) -> str | None:
    """A list of strings as a ``text[]`` literal: each element quoted, ``"`` and ``\\``
    escaped (so no element is read as NULL, and any text survives)."""
    if value is None:
        return None
    return _text_literal(tuple(cast("list[str]", value)))


@functools.lru_cache(maxsize=4096)
def _text_literal(items: tuple[str, ...]) -> str:
    """Cached: a batch repeats the same few label sets on many rows."""
    return (
        "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"
    )


def _float_array(value: object) -> str | None:
    """A list of finite floats as a ``float8[]`` literal (``repr`` reads back exactly)."""
    if value is None:
        return None
    return "{" + ",".join(repr(float(x)) for x in cast("list[float]", value)) + "}"
