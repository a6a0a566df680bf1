"""The sink promise, on every sink: whatever a handler writes is identified, lands once, and
writing it again changes nothing (DESIGN §4, ``forebay.sinks.base``).

Checked with the records of the Label Studio pipeline, the sinks' one user in the package: the
dataset (parquet shards in a real folder) and the PostgreSQL staging tables (a schema of its
own on the real server). A sink joins by adding an entry to :data:`SINKS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.events import split_event
from forebay.contrib.labelstudio.pages import PageSource
from forebay.contrib.labelstudio.records import COLUMNS, Received, Records, build_records
from forebay.contrib.labelstudio.stage import make_stage_sink, stage_statements
from forebay.sinks.base import WriteResult
from forebay.sinks.dataset import DatasetSink
from tests.integration.test_labelstudio_helpers import (
    EPOCH,
    annotation_created,
    annotations_deleted,
    current_view,
    dataset_rows,
    fetch,
    ls_annotation,
    ls_task,
    project_deleted,
    tasks_deleted,
)
from tests.servers import PG_URL, require_server, unique_name

RECEIVED = datetime(2026, 12, 1, tzinfo=UTC)
KEYS = {"projects": "project_id", "documents": "task_id", "annotations": "annotation_id"}


def records(*bodies: Any, received_at: datetime = RECEIVED) -> Records:
    changes = [Received(c, received_at) for body in bodies for c in split_event(body)]
    built, _ = build_records(changes, PageSource())
    return built


def every_sample() -> Records:
    return records(*(samples.load(name) for name in samples.ORDER))


@dataclass
class SinkUnderTest:
    """A sink, fed the pipeline's records, and what it holds."""

    write: Callable[[Records], Awaitable[WriteResult]]
    deleted: Callable[[str], Awaitable[set[int]]]
    """The keys of a table that have a delete stored."""
    state: Callable[[], Awaitable[object]]
    current: Callable[[str], Awaitable[dict[Any, dict[str, Any]]]]
    """A table's current row per key (``deleted_at`` set when deleted), by the sink's rule."""


async def dataset_sink(tmp_path: Path) -> AsyncIterator[SinkUnderTest]:
    sink = DatasetSink(tmp_path / "dataset", tables=COLUMNS, flush_interval_s=0)

    async def deleted(table: str) -> set[int]:
        rows = dataset_rows(tmp_path / "dataset", table)
        return {r[KEYS[table]] for r in rows if r["op"] == "delete"}

    async def state() -> object:
        return {t: dataset_rows(tmp_path / "dataset", t) for t in COLUMNS}

    async def current(table: str) -> dict[Any, dict[str, Any]]:
        return current_view(tmp_path / "dataset")[table]

    try:
        yield SinkUnderTest(sink.write, deleted, state, current)
    finally:
        await sink.close()


async def stage_sink(tmp_path: Path) -> AsyncIterator[SinkUnderTest]:
    require_server("PostgreSQL", PG_URL)
    schema = unique_name("stage_test")
    sink = make_stage_sink(PG_URL, schema)

    async def write(batch: Records) -> WriteResult:
        statements, dropped = stage_statements(batch)
        return WriteResult.merge([dropped, await sink.write(statements)])

    async def deleted(table: str) -> set[int]:
        key = KEYS[table]
        rows = await fetch(
            PG_URL, schema, f"SELECT {key} FROM {table} WHERE deleted_at IS NOT NULL"
        )
        return {int(str(r[key])) for r in rows}

    async def state() -> object:
        return {
            table: await fetch(PG_URL, schema, f"SELECT * FROM {table} ORDER BY {KEYS[table]}")
            for table in KEYS
        }

    async def current(table: str) -> dict[Any, dict[str, Any]]:
        rows = await fetch(PG_URL, schema, f"SELECT * FROM {table}")
        return {row[KEYS[table]]: row for row in rows}

    try:
        yield SinkUnderTest(write, deleted, state, current)
    finally:
        await sink.close()
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


SINKS = {"dataset": dataset_sink, "postgres": stage_sink}


@pytest.fixture(params=sorted(SINKS))
async def sink(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SinkUnderTest]:
    async for under_test in SINKS[request.param](tmp_path):
        yield under_test


def test_every_record_carries_a_non_empty_id() -> None:
    """Sinks skip what they already hold by id: a record without one, or sharing one with a
    different change, would be lost."""
    batches = [
        every_sample(),
        records(tasks_deleted(1, [3, 4, 5]), annotations_deleted(1, [7, 8]), project_deleted(2)),
        records(tasks_deleted(1, [3]), received_at=RECEIVED + timedelta(hours=1)),
        records({"action": "SOMETHING_NEW", "n": 1}, {"action": "ANNOTATION_CREATED"}),
    ]
    seen: dict[str, Any] = {}
    for batch in batches:
        for table, rows in batch.items():
            for row in rows:
                change_id = row["change_id"]
                assert isinstance(change_id, str) and change_id, (table, row)
                content = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
                assert seen.setdefault(change_id, content) == content, (table, row)
    assert len(seen) > 20


async def test_two_different_deletes_both_land(sink: SinkUnderTest) -> None:
    await sink.write(records(tasks_deleted(1, [3])))
    await sink.write(records(tasks_deleted(1, [4])))
    await sink.write(records(annotations_deleted(1, [7, 8]), project_deleted(2)))
    assert await sink.deleted("documents") == {3, 4}
    assert await sink.deleted("annotations") == {7, 8}
    assert await sink.deleted("projects") == {2}


async def test_writing_the_same_batch_twice_changes_nothing(sink: SinkUnderTest) -> None:
    batch = every_sample()
    first = await sink.write(batch)
    assert first.applied() > 0
    before = await sink.state()
    again = await sink.write(batch)
    assert again.applied() == 0 and again.skipped() > 0
    assert await sink.state() == before


def _version(hours: int, label: str) -> dict[str, Any]:
    """Annotation 7 of task 3 as it stood ``hours`` after it was created."""
    task = ls_task(3, 1)
    annotation = ls_annotation(7, 3, 1, updated_at=EPOCH + timedelta(hours=hours), label=label)
    return annotation_created(task, annotation)


@pytest.mark.parametrize("order", ["newer first", "older first"])
async def test_an_older_version_never_replaces_a_newer_one(sink: SinkUnderTest, order: str) -> None:
    versions = [_version(2, "Newer"), _version(1, "Older")]
    for body in versions if order == "newer first" else versions[::-1]:
        await sink.write(records(body))
    (row,) = (await sink.current("annotations")).values()
    assert row["updated_at"] == EPOCH + timedelta(hours=2)
    assert row["deleted_at"] is None


@pytest.mark.parametrize("order", ["delete first", "delete last"])
async def test_a_delete_wins_over_every_version_older_than_it(
    sink: SinkUnderTest, order: str
) -> None:
    versions = [records(_version(1, "One")), records(_version(2, "Two"))]
    delete = records(annotations_deleted(1, [7]))  # received after both versions were made
    for batch in [delete, *versions] if order == "delete first" else [*versions, delete]:
        await sink.write(batch)
    (row,) = (await sink.current("annotations")).values()
    assert row["deleted_at"] is not None
