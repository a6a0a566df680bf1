"""Records → the statements of one staging batch (PostgreSQL, schema ``stage`` by default).

The SQL is in ``sql/queries.sql``, the schema in ``sql/migrations/``. A batch runs in this
order, in one transaction:

1. locks on the projects it writes: shared, or exclusive for a project it deletes anything
   in (a batch holding a row with no project takes them all). Creates under one project run
   side by side; a delete waits for them to commit and they wait for it, so neither misses
   the other's rows (READ COMMITTED: each statement sees what committed before it started);
2. projects, documents and annotations (upserts guarded by ``updated_at``, each version
   judged deleted or alive by the tombstones stored so far), the stale regions of
   annotations that got a new version, extractions and boxes of the current versions;
3. the batch's tombstones (annotations, documents, projects), then every row under a key they
   delete judged again — so a delete in the same batch as its create wins, as it would have
   if they came apart, and a version created after a delete (a reused id) stays alive.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Hashable, Sequence
from typing import Final, cast

from forebay.contrib.labelstudio.records import Record, Records
from forebay.sinks.base import WriteOutcome, WriteResult
from forebay.sinks.postgres import PostgresSink, Statement, newest_per_key
from forebay.sqlfiles import load_queries

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "create_stage_schema",
    "make_stage_sink",
    "stage_statements",
]

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


async def create_stage_schema(dsn: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Create (or bring up to date) the staging schema now; SinkUnavailable if unreachable."""
    sink = make_stage_sink(dsn, schema)
    try:
        await sink.open()
    finally:
        await sink.close()


def stage_statements(records: Records) -> tuple[list[Statement], WriteResult]:
    """The statements that stage ``records``, and the counts of rows dropped before SQL
    (repeats of a key within the batch, rows without the ids a table is keyed on)."""
    sql = load_queries(MIGRATIONS)
    statements: list[Statement] = []
    dropped: list[WriteResult] = []
    # Each table's upserts, and those of them that have every key column (one pass).
    upserts: dict[str, list[Record]] = {}
    keyed: dict[str, list[Record]] = {}
    for table, key_columns in _KEYS.items():
        rows, with_keys = upserts[table], keyed[table] = [], []
        for row in records.get(table, ()):
            if row.get("op") != "delete":
                rows.append(row)
                if None not in map(row.get, key_columns):
                    with_keys.append(row)
    deletes = {t: _unique_deletes(t, records.get(t, [])) for t in _DELETES}
    for table in ("projects", "documents", "annotations"):
        rows, result = _unique_newest(table, keyed[table])
        dropped.append(result)
        if rows:
            statements.append(Statement(table, sql[f"upsert_{table}"], _arrays(table, rows)))
    if upserts["annotations"]:
        ids = sorted({cast(int, r["annotation_id"]) for r in keyed["annotations"]})
        statements.append(Statement("annotations", sql["prune_regions"], (ids,)))
    for table in ("extractions", "pdf_boxes"):
        rows, result = _unique_newest(table, keyed[table])
        dropped.append(result)
        if rows:
            statements.append(Statement(table, sql[f"upsert_{table}"], _arrays(table, rows)))
    statements.extend(_delete_statements(sql, deletes))
    if statements:
        statements[:0] = [
            Statement("projects", sql["read_committed"]),
            Statement("projects", sql["lock_projects"], _locks(upserts, deletes)),
        ]
    return statements, WriteResult.merge(dropped)


def _delete_statements(sql: dict[str, str], deletes: dict[str, list[Record]]) -> list[Statement]:
    """Store the tombstones, then judge again every row under a key they delete."""
    statements = []
    for table in ("annotations", "documents", "projects"):
        if deletes[table]:
            columns = _DELETES[table]
            args = tuple([row.get(c) for row in deletes[table]] for c in columns)
            statements.append(Statement(table, sql[f"delete_{table}"], args))
    if statements:
        ids = tuple(
            sorted({cast(int, row[_DELETES[t][0]]) for row in deletes[t]})
            for t in ("projects", "documents", "annotations")
        )
        # Each judges the rows under the keys of its own table and of those above it.
        statements.extend(
            Statement(table, sql[f"apply_{table}"], ids[: depth + 1])
            for depth, table in enumerate(("projects", "documents", "annotations"))
        )
    return statements


def _locks(
    upserts: dict[str, list[Record]], deletes: dict[str, list[Record]]
) -> tuple[list[str], list[bool]]:
    """The lock statement's arguments: ``*`` (every project), then each project the batch
    writes, in ascending order, and whether each is taken exclusively."""
    writing = {row.get("project_id") for rows in upserts.values() for row in rows}
    deleting = {row.get("project_id") for rows in deletes.values() for row in rows}
    known = sorted(cast(int, p) for p in writing | deleting if p is not None)
    everything = None in writing or None in deleting  # a row no project lock covers
    return ["*", *map(str, known)], [everything, *(p in deleting for p in known)]


def _key(table: str) -> Callable[[Record], Hashable]:
    return operator.itemgetter(*_KEYS[table])  # every record has all its table's columns


def _unique_newest(table: str, keyed: list[Record]) -> tuple[list[Record], WriteResult]:
    """The newest of ``keyed`` (rows with every key column) per key, and the counts of those
    dropped. Most batches repeat no key: then every row is kept as it is, in its order."""
    key = _key(table)
    if len(set(map(key, keyed))) == len(keyed):
        return keyed, WriteResult()
    kept, older, duplicates = newest_per_key(keyed, key, lambda r: r.get("updated_at"))
    counts: dict[tuple[str, WriteOutcome], int] = {
        (table, "older"): older,
        (table, "duplicate"): duplicates,
    }
    return kept, WriteResult({k: n for k, n in counts.items() if n})


def _unique_deletes(table: str, rows: Sequence[Record]) -> list[Record]:
    """The batch's deletes of ``table`` with a key, each (key, time) once."""
    unique: dict[Hashable, Record] = {}
    key_name = _DELETES[table][0]
    for row in rows:
        if row.get("op") == "delete" and row.get(key_name) is not None:
            unique.setdefault((row[key_name], row.get("deleted_at")), row)
    return list(unique.values())


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
    """A list of finite Python floats (as records hold them) as a ``float8[]`` literal:
    ``{1.5, 2.0}`` (a list's ``str`` writes each float as its ``repr``, which reads back
    exactly; PostgreSQL skips the spaces)."""
    if value is None:
        return None
    items = value if isinstance(value, list) else list(cast("list[float]", value))
    return "{" + str(items)[1:-1] + "}"
