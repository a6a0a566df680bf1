"""Changes → records: regions merged, boxes in points, deletes as tombstones, stable ids."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.events import SCRUB_RULE, split_event
from forebay.contrib.labelstudio.pages import PageSource
from forebay.contrib.labelstudio.records import COLUMNS, Received, Records, build_records
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.contrib.labelstudio.stage import stage_statements
from forebay.errors import ConfigError

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def records_of(
    name: str, pages: PageSource | None = None, task_data: dict | None = None
) -> Records:
    body = samples.load(name)
    if task_data and isinstance(body, dict) and isinstance(body.get("task"), dict):
        body["task"]["data"].update(task_data)
    changes = [Received(c, NOW) for c in split_event(body)]
    records, _ = build_records(changes, pages or PageSource())
    return records


def test_every_record_has_exactly_its_table_columns() -> None:
    for name in samples.ORDER:
        for table, rows in records_of(name).items():
            for row in rows:
                assert list(row) == [c.name for c in COLUMNS[table]], (name, table)


def test_an_annotation_becomes_a_document_an_annotation_and_merged_regions() -> None:
    records = records_of("real_annotation_created_rectanglelabels_multipage.json")
    assert [r["task_id"] for r in records["documents"]] == [1]
    assert records["documents"][0]["page_count"] == 2
    (annotation,) = records["annotations"]
    assert (annotation["annotation_id"], annotation["op"]) == (1, "upsert")
    (extraction,) = records["extractions"]  # the box and its transcription share region r1
    assert extraction["region_id"] == "r1"
    assert extraction["labels"] == ["InvoiceNumber"]
    assert extraction["text"] == "INV-0042"
    assert extraction["result_types"] == ["rectanglelabels", "textarea"]
    assert extraction["page_index"] == 1
    assert records["pdf_boxes"] == []  # no page geometry known


def test_boxes_in_points_from_page_geometry_in_the_task() -> None:
    geometry = samples.page_geometry()["doc1"]
    records = records_of(
        "real_annotation_created_rectanglelabels_multipage.json",
        task_data={"page_geometry": geometry},
    )
    (box,) = records["pdf_boxes"]
    assert box["page_index"] == 1 and box["label"] == "InvoiceNumber"
    assert (box["x0"], box["y0"], box["x1"], box["y1"]) == pytest.approx(
        (76.5, 594.0, 229.5, 633.6)
    )
    assert (box["page_box"], box["page_rotate"], box["geometry_source"]) == ("MediaBox", 0, "task")


def test_a_rotated_box_on_the_update() -> None:
    geometry = samples.page_geometry()["doc1"]
    records = records_of("real_annotation_updated.json", task_data={"page_geometry": geometry})
    (box,) = records["pdf_boxes"]
    assert box["rotation"] == 90
    polygon = box["polygon"]
    assert isinstance(polygon, list) and len(polygon) == 8
    # Turned 90° clockwise about its top-left (76.5, 633.6): 153 pt wide along -y, 39.6 pt deep.
    assert polygon[:4] == pytest.approx([76.5, 633.6, 76.5, 633.6 - 153.0])
    assert (box["x0"], box["x1"]) == pytest.approx((76.5 - 39.6, 76.5))


def test_deletes_are_tombstones_at_the_time_received() -> None:
    records = records_of("real_annotations_deleted_single.json")
    (tombstone,) = records["annotations"]
    assert tombstone["op"] == "delete" and tombstone["annotation_id"] == 1
    assert tombstone["deleted_at"] == NOW
    records = records_of("real_tasks_deleted_single.json")
    (task,) = records["documents"]
    assert (task["op"], task["task_id"]) == ("delete", 3)


def test_every_delete_has_its_own_change_id() -> None:
    """A delete is identified by its key and when it was received: the same delete delivered
    again is the same record, another delete of the same key (a reused id) another one."""
    body = {"action": "TASKS_DELETED", "tasks": [{"id": 3}, {"id": 4}], "project": {"id": 1}}
    later = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    ids = {
        (at, row["task_id"]): row["change_id"]
        for at in (NOW, NOW, later)
        for row in build_records([Received(c, at) for c in split_event(body)], PageSource())[0][
            "documents"
        ]
    }
    assert all(isinstance(i, str) and len(i) == 32 for i in ids.values())
    assert len(ids) == 4 and len(set(ids.values())) == 4


def test_change_ids_are_stable_and_versioned() -> None:
    first = records_of("real_annotation_created_rectanglelabels_multipage.json")
    again = records_of("real_annotation_created_rectanglelabels_multipage.json")
    updated = records_of("real_annotation_updated.json")
    assert first["annotations"][0]["change_id"] == again["annotations"][0]["change_id"]
    assert first["annotations"][0]["change_id"] != updated["annotations"][0]["change_id"]
    ids = [r["change_id"] for rows in first.values() for r in rows]
    assert len(ids) == len(set(ids))


def test_unknown_and_payloadless_events_are_recorded() -> None:
    changes = [
        Received(c, NOW)
        for body in ({"action": "NEW_THING", "x": 1}, {"action": "ANNOTATION_CREATED"})
        for c in split_event(body)
    ]
    records, report = build_records(changes, PageSource())
    assert [r["kind"] for r in records["events"]] == ["unknown", "empty"]
    assert report.unknown_actions == ["NEW_THING"]
    assert report.empty_actions == ["ANNOTATION_CREATED"]


def test_a_project_row_never_holds_its_token() -> None:
    records = records_of("real_project_updated.json")
    (project,) = records["projects"]
    assert project["title"] == "forebay-probe-renamed"
    assert "g9G32LF90qab" not in repr(records)


def test_staging_statements_keep_one_row_per_key() -> None:
    records = records_of("real_annotation_created_rectanglelabels_multipage.json")
    newer = records_of("real_annotation_updated.json")
    merged = {t: records[t] + newer[t] for t in records}
    statements, dropped = stage_statements(merged)
    isolation, lock, *writes = statements
    assert "READ COMMITTED" in isolation.sql and "pg_advisory_xact_lock" in lock.sql
    assert lock.args == (["*", "1"], [False, False])  # project 1, shared: no deletes
    tables = [s.table for s in writes]
    assert tables == ["projects", "documents", "annotations", "annotations", "extractions"]
    # The two versions of the annotation, task and region: the older of each is dropped.
    assert dropped.skipped("older") == 3
    assert dropped.skipped("duplicate") == 1  # the project, sent twice unchanged


def test_batch_size_and_concurrency_come_from_the_environment() -> None:
    env = {
        "FOREBAY_LABELSTUDIO_SECRET": "s",
        "FOREBAY_LABELSTUDIO_BATCH_SIZE": "50",
        "FOREBAY_LABELSTUDIO_CONCURRENCY": "4",
    }
    settings = LabelStudioSettings.from_env(env)
    assert (settings.batch_size, settings.concurrency) == (50, 4)
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="FOREBAY_LABELSTUDIO_BATCH_SIZE"):
            LabelStudioSettings.from_env({**env, "FOREBAY_LABELSTUDIO_BATCH_SIZE": bad})


def test_change_ids_hash_the_table_key_and_version_as_json() -> None:
    # The spelling is fixed: a dataset written by an earlier forebay must see a redelivered
    # change as the same change.
    records = records_of("real_annotation_created_rectanglelabels_multipage.json")
    (annotation,) = records["annotations"]
    material = json.dumps(
        ["annotations", ["1", "1"], "2026-11-22T05:18:08.980576+00:00"], separators=(",", ":")
    )
    assert annotation["change_id"] == hashlib.sha256(material.encode()).hexdigest()[:32]


def test_a_batch_deleting_in_a_project_locks_it_exclusively() -> None:
    created = records_of("real_annotation_created_rectanglelabels_multipage.json")
    deleted = records_of("real_tasks_deleted_single.json")
    other = {"action": "TASKS_DELETED", "tasks": [{"id": 9, "project": 7}]}
    far = build_records([Received(c, NOW) for c in split_event(other)], PageSource())[0]
    merged = {t: created[t] + deleted[t] + far[t] for t in created}
    _, lock, *_ = stage_statements(merged)[0]
    assert lock.args == (["*", "1", "7"], [False, True, True])
    unknown = {"action": "TASKS_DELETED", "tasks": [{"id": 9}]}  # no project: every one
    rows = build_records([Received(c, NOW) for c in split_event(unknown)], PageSource())[0]
    _, lock, *_ = stage_statements(rows)[0]
    assert lock.args == (["*"], [True])


def test_the_secret_is_needed_to_serve_webhooks_only() -> None:
    settings = LabelStudioSettings.from_env({"FOREBAY_LABELSTUDIO_URL": "http://ls:8080"})
    assert settings.labelstudio_url == "http://ls:8080"  # enough to reconcile
    with pytest.raises(ConfigError, match="FOREBAY_LABELSTUDIO_SECRET"):
        settings.webhook_secret()
    from forebay.contrib.labelstudio.pipeline import build_app

    with pytest.raises(ConfigError, match="FOREBAY_LABELSTUDIO_SECRET"):
        build_app(settings, url="sqlite:///unused.db")


def test_a_change_not_scrubbed_when_stored_is_scrubbed_before_the_sinks() -> None:
    """A job stored by an earlier forebay (or enqueued from code) reaches no sink with a
    credential; one the intake scrubbed by the current rule is not walked again."""
    task = {"id": 3, "data": {"doc_id": "d", "storage": {"aws_secret_access_key": "leak"}}}
    (change,) = split_event({"action": "TASKS_CREATED", "tasks": [{"id": 3, "data": {}}]})
    assert isinstance(change, dict) and change["scrubbed"] == SCRUB_RULE
    for marker in (None, SCRUB_RULE - 1):  # none: stored by an earlier forebay
        stored = {k: v for k, v in change.items() if k != "scrubbed"}
        stored["task"] = task
        if marker is not None:
            stored["scrubbed"] = marker
        records, _ = build_records([Received(stored, NOW)], PageSource())
        assert "leak" not in repr(records)
        assert '"doc_id":"d"' in str(records["documents"][0]["data"])
