"""Deletes and reused ids, in every order: the same events processed in each of their orders
end in the same staging tables and the same current view of the dataset.

Label Studio sends a delete with ids only, so forebay dates it by when it received it. A
version created after that (Label Studio on SQLite gives a new task the id of a deleted one)
is a new object and revives the key; a later delete deletes it again. Each order here is
forced with priorities (one job per handler call, one call at a time), after every event was
received in the order Label Studio sent it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from forebay import Forebay
from forebay.contrib.labelstudio.events import change_key, split_event
from forebay.contrib.labelstudio.pipeline import LabelStudioPipeline
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.job import NewJob
from tests.integration.test_labelstudio_helpers import (  # noqa: F401 (fixture)
    annotation_created,
    current_view,
    liveness,
    ls_annotation,
    ls_task,
    stage_fixture,
    staging_view,
    tasks_deleted,
)
from tests.servers import unique_name

PID = 9
Event = Callable[[], dict[str, Any]]
"""Makes a body when it is sent (a version's created_at is the time it is made)."""


def old_task() -> dict[str, Any]:
    return annotation_created(ls_task(4, PID, data={"doc_id": "old"}), ls_annotation(40, 4, PID))


def new_task() -> dict[str, Any]:
    now = datetime.now(UTC)
    task = ls_task(4, PID, created_at=now, data={"doc_id": "new"})
    return annotation_created(task, ls_annotation(41, 4, PID, created_at=now))


def delete_task() -> dict[str, Any]:
    return tasks_deleted(PID, [4])


async def run(
    settings: LabelStudioSettings, folder: Path, events: list[Event], order: tuple[int, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Receive ``events`` in their order, process them in ``order``; both views after."""
    assert settings.stage_url is not None
    folder.mkdir()
    schema = unique_name("stage_test")
    settings = replace(
        settings, dataset=str(folder / "dataset"), stage_schema=schema, batch_size=1, concurrency=1
    )
    app = Forebay(f"sqlite:///{folder / 'forebay.db'}")
    pipeline = LabelStudioPipeline.from_settings(settings)
    pipeline.install(app, settings)
    try:
        for position, event in enumerate(events):
            changes = split_event(event())
            priority = len(events) - order.index(position)  # the first to run: the highest
            await app.enqueue_many(
                [
                    NewJob.create("labelstudio", c, key=change_key(c), priority=priority)
                    for c in changes
                ]
            )
        await app.run_worker(burst=True)
        assert all(c.dead == 0 for c in await app.counts())
        return current_view(folder / "dataset"), await staging_view(settings.stage_url, schema)
    finally:
        await pipeline.close()
        await app.close()
        conn = await asyncpg.connect(settings.stage_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def settings(stage: tuple[str, str]) -> LabelStudioSettings:
    return LabelStudioSettings(secret="s", stage_url=stage[0], flush_interval_s=0.0)


@pytest.mark.parametrize(
    ("events", "alive"),
    [
        ([old_task, delete_task, new_task], {"documents": {4}, "annotations": {41}}),
        (
            [old_task, delete_task, new_task, delete_task],
            {"documents": set(), "annotations": set()},
        ),
    ],
    ids=["deleted-then-reused", "reused-then-deleted-again"],
)
async def test_a_reused_id_ends_the_same_in_every_order(
    settings: LabelStudioSettings,
    tmp_path: Path,
    events: list[Event],
    alive: dict[str, set[int]],
) -> None:
    outcomes = []
    for n, order in enumerate(itertools.permutations(range(len(events)))):
        dataset, staging = await run(settings, tmp_path / str(n), events, order)
        for view in (staging, dataset):
            for table, keys in alive.items():
                found = {k for k, row in view[table].items() if row["deleted_at"] is None}
                assert found == keys, (order, table)
            if alive["documents"]:
                assert view["documents"][4]["doc_id"] == "new"
        assert liveness(dataset) == liveness(staging), order
        outcomes.append(liveness(staging))
    assert all(outcome == outcomes[0] for outcome in outcomes)


async def test_a_store_staged_before_takes_the_rule_on_upgrade(stage: tuple[str, str]) -> None:
    """Migration 0003 keeps the deletes a store holds, as tombstones, and corrects the rows the
    earlier rule got wrong: a reused id stored deleted comes back, a region a racing create
    left alive under a deleted annotation goes."""
    from forebay.contrib.labelstudio.stage import MIGRATIONS, make_stage_sink
    from forebay.sqlfiles import load_queries, migration_files

    dsn, schema = stage
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}"; SET timezone = UTC'
        )
        await conn.execute(load_queries("forebay.sinks", "postgres.sql")["create_migrations_table"])
        for version, name, body in migration_files(MIGRATIONS)[:2]:
            await conn.execute(body)
            await conn.execute(
                load_queries("forebay.sinks", "postgres.sql")["record"], MIGRATIONS, version, name
            )
        await conn.execute(
            """
            INSERT INTO projects (project_id, created_at, updated_at)
                VALUES (1, '2026-01-01', '2026-01-01');
            -- task 4 deleted on March 1st; the task 4 imported on April 1st was stored deleted
            INSERT INTO documents (task_id, project_id, created_at, updated_at, deleted_at)
                VALUES (4, 1, '2026-04-01', '2026-04-01', '2026-03-01'),
                       (5, 1, '2026-01-01', '2026-01-01', '2026-03-01');
            INSERT INTO annotations (annotation_id, project_id, task_id, created_at, updated_at,
                                     deleted_at)
                VALUES (40, 1, 4, '2026-04-02', '2026-04-02', '2026-03-01'),
                       (50, 1, 5, '2026-01-02', '2026-01-02', '2026-03-01');
            INSERT INTO extractions (annotation_id, region_id, project_id, task_id, updated_at,
                                     deleted_at)
                VALUES (40, 'r', 1, 4, '2026-04-02', '2026-03-01'),
                       (50, 'r', 1, 5, '2026-01-02', NULL);
            """
        )
    finally:
        await conn.close()

    sink = make_stage_sink(dsn, schema)
    try:
        await sink.open()
        documents = await sink.fetch("SELECT task_id, deleted_at FROM documents ORDER BY 1")
        regions = await sink.fetch("SELECT annotation_id, deleted_at FROM extractions ORDER BY 1")
        tombstones = await sink.fetch("SELECT kind, id FROM tombstones ORDER BY 1, 2")
    finally:
        await sink.close()
    march = datetime(2026, 3, 1, tzinfo=UTC)
    assert [(r["task_id"], r["deleted_at"]) for r in documents] == [(4, None), (5, march)]
    assert [(r["annotation_id"], r["deleted_at"]) for r in regions] == [(40, None), (50, march)]
    assert [(r["kind"], r["id"]) for r in tombstones] == [
        ("annotation", 40),
        ("annotation", 50),
        ("task", 4),
        ("task", 5),
    ]
