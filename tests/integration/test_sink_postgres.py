"""The PostgreSQL sink and the staging schema on the real server, one schema per test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
import pytest

from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.events import split_event
from forebay.contrib.labelstudio.pages import PageSource
from forebay.contrib.labelstudio.records import Received, Records, build_records
from forebay.contrib.labelstudio.stage import make_stage_sink, stage_statements
from forebay.errors import ConfigError, SinkRejected, SinkUnavailable
from forebay.sinks.base import WriteResult
from forebay.sinks.postgres import PostgresSink, Statement
from tests.integration.test_labelstudio_helpers import fetch, stage_fixture  # noqa: F401

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def records(*names: str) -> Records:
    changes = [Received(c, NOW) for name in names for c in split_event(samples.load(name))]
    built, _ = build_records(changes, PageSource())
    return built


async def write(sink: PostgresSink, built: Records) -> WriteResult:
    statements, dropped = stage_statements(built)
    return WriteResult.merge([dropped, await sink.write(statements)])


async def test_open_creates_the_schema_once(stage: tuple[str, str]) -> None:
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    await sink.open()
    await sink.open()
    await sink.close()
    again = make_stage_sink(dsn, schema)
    await again.open()  # nothing left to apply
    await again.close()
    applied = await fetch(dsn, schema, "SELECT package, version FROM forebay_sink_migrations")
    assert applied == [
        {"package": "forebay.contrib.labelstudio.sql", "version": 1},
        {"package": "forebay.contrib.labelstudio.sql", "version": 2},
        {"package": "forebay.contrib.labelstudio.sql", "version": 3},
    ]
    tables = await fetch(
        dsn,
        schema,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
        " ORDER BY 1",
    )
    assert [t["table_name"] for t in tables] == [
        "annotations",
        "documents",
        "extractions",
        "forebay_sink_migrations",
        "pdf_boxes",
        "projects",
        "tombstones",
    ]


async def test_a_batch_is_written_once_and_counted(stage: tuple[str, str]) -> None:
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    built = records("real_annotation_created_rectanglelabels_multipage.json")
    first = await write(sink, built)
    assert first.applied() == 4  # project, document, annotation, one extraction
    second = await write(sink, built)
    assert (second.applied(), second.skipped("duplicate")) == (0, 4)
    rows = await fetch(dsn, schema, "SELECT * FROM extractions")
    assert [(r["region_id"], r["labels"], r["text"]) for r in rows] == [
        ("r1", ["InvoiceNumber"], "INV-0042")
    ]
    await sink.close()


async def test_an_older_version_never_overwrites_a_newer_one(stage: tuple[str, str]) -> None:
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    await write(sink, records("real_annotation_updated.json"))
    late = await write(sink, records("real_annotation_created_rectanglelabels_multipage.json"))
    assert late.applied() == 0
    assert late.skipped("older", "annotations") == 1
    assert late.skipped("older", "documents") == 1
    assert late.skipped("older", "extractions") == 1
    (annotation,) = await fetch(dsn, schema, "SELECT updated_at FROM annotations")
    assert annotation["updated_at"] == datetime(2026, 11, 22, 5, 18, 9, 561966, tzinfo=UTC)
    await sink.close()


async def test_a_tombstone_first_then_the_data_ends_deleted(stage: tuple[str, str]) -> None:
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    await write(sink, records("real_annotations_deleted_single.json"))
    await write(sink, records("real_annotation_created_rectanglelabels_multipage.json"))
    (annotation,) = await fetch(dsn, schema, "SELECT deleted_at, result FROM annotations")
    assert annotation["deleted_at"] == NOW and annotation["result"] is not None
    (extraction,) = await fetch(dsn, schema, "SELECT deleted_at FROM extractions")
    assert extraction["deleted_at"] == NOW
    again = await write(sink, records("real_annotations_deleted_single.json"))
    assert again.skipped("duplicate", "annotations") == 1
    await sink.close()


async def test_the_database_down_is_unavailable() -> None:
    sink = PostgresSink("postgresql://postgres@127.0.0.1:1/test", schema="x", connect_timeout_s=2)
    with pytest.raises(SinkUnavailable):
        await sink.write([Statement("t", "SELECT 1")])
    await sink.close()


async def test_a_refused_row_is_rejected_and_nothing_is_kept(stage: tuple[str, str]) -> None:
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    built = records("real_annotation_created_rectanglelabels_multipage.json")
    statements, _ = stage_statements(built)
    bad = Statement("pdf_boxes", "INSERT INTO pdf_boxes (annotation_id, region_id) VALUES (1, 'x')")
    with pytest.raises(SinkRejected):
        await sink.write([*statements, bad])
    assert await fetch(dsn, schema, "SELECT * FROM annotations") == []  # one transaction
    await sink.close()


def annotation_of_task(n: int) -> Records:
    """The multipage sample as annotation ``n`` of its own task ``n`` (same project)."""
    body = samples.load("real_annotation_created_rectanglelabels_multipage.json")
    assert isinstance(body, dict)
    body["annotation"]["id"] = body["annotation"]["task"] = body["task"]["id"] = n  # type: ignore[index]
    built, _ = build_records([Received(c, NOW) for c in split_event(body)], PageSource())
    return built


async def test_batches_of_one_project_do_not_wait_for_each_other(stage: tuple[str, str]) -> None:
    """Every batch carries its project; a batch in flight must not hold up the others (the
    project's stored version is left alone, its row not locked)."""
    dsn, schema = stage
    sink = make_stage_sink(dsn, schema)
    await write(sink, annotation_of_task(1))
    busy = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        in_flight = busy.transaction()
        await in_flight.start()
        for statement in stage_statements(annotation_of_task(2))[0]:
            await busy.fetch(statement.sql, *statement.args)
        # ... and before that transaction commits, another batch of the same project:
        result = await asyncio.wait_for(write(sink, annotation_of_task(3)), 10)
        assert result.skipped("duplicate", "projects") == 1
        assert result.applied("annotations") == 1
        await in_flight.commit()
    finally:
        await busy.close()
    rows = await fetch(dsn, schema, "SELECT annotation_id FROM annotations ORDER BY 1")
    assert [r["annotation_id"] for r in rows] == [1, 2, 3]
    await sink.close()


def test_a_schema_name_is_checked() -> None:
    with pytest.raises(ConfigError):
        PostgresSink("postgresql://x/y", schema='stage"; DROP TABLE x; --')
