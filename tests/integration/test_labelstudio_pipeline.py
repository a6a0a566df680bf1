"""The Label Studio pipeline end to end through HTTP: the sample webhook bodies posted to the
service, a worker draining them into a real dataset folder and real PostgreSQL tables.

* rows and boxes are right (boxes in PDF points, from PDFs read with pypdf);
* replaying every event twice, in reverse order, changes nothing — through the same queue
  (keys deduplicate) and through a fresh queue store (the sinks' own guards);
* a PostgreSQL outage in the middle delays jobs but loses nothing;
* no Label Studio secret reaches the job store, the dataset or the tables.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from forebay import Forebay
from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.pipeline import LabelStudioPipeline
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.http import ServiceSettings, create_app
from forebay.testing import Settled
from forebay.worker import WorkerSettings
from tests.integration.test_labelstudio_helpers import (  # noqa: F401 (fixture)
    Outage,
    current_view,
    fetch,
    stage_fixture,
)
from tests.servers import PG_URL

SECRET = "s3cr3t-value"
TOKENS = (b"g9G32LF90qabHUKtgjC4roHcZVfZDAnNQu6hQhRF", b"846c4da585704dd4")
BASE = "http://127.0.0.1:8000"  # the token-less service answers loopback names only


def write_pdfs(folder: Path) -> None:
    """doc1: two US Letter pages, the second cropped by 18 pt on every side; doc3: one page."""
    from pypdf import PdfWriter
    from pypdf.generic import RectangleObject

    folder.mkdir(parents=True, exist_ok=True)
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    cropped = writer.add_blank_page(612, 792)
    cropped.cropbox = RectangleObject((18, 18, 594, 774))
    buffer = io.BytesIO()
    writer.write(buffer)
    (folder / "doc1.pdf").write_bytes(buffer.getvalue())
    single = PdfWriter()
    single.add_blank_page(612, 792)
    buffer = io.BytesIO()
    single.write(buffer)
    (folder / "doc3.pdf").write_bytes(buffer.getvalue())


@pytest.fixture
def settings(tmp_path: Path, stage: tuple[str, str]) -> LabelStudioSettings:
    dsn, schema = stage
    write_pdfs(tmp_path / "pdfs")
    return LabelStudioSettings(
        secret=SECRET,
        dataset=str(tmp_path / "dataset"),
        stage_url=dsn,
        stage_schema=schema,
        pdf_folder=str(tmp_path / "pdfs"),
        flush_interval_s=0.0,
    )


@asynccontextmanager
async def pipeline_app(
    settings: LabelStudioSettings, db: Path, observer: Settled | None = None
) -> AsyncIterator[tuple[Forebay, LabelStudioPipeline, httpx.AsyncClient]]:
    app = Forebay(f"sqlite:///{db}", observers=[observer] if observer else [])
    pipeline = LabelStudioPipeline.from_settings(settings)
    pipeline.outage_retry_s, pipeline.max_outage_retry_s = 0.05, 0.5
    pipeline.install(app, settings)
    api = create_app(app, ServiceSettings(workers=False))
    transport = httpx.ASGITransport(api)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        try:
            yield app, pipeline, client
        finally:
            await pipeline.close()
            await app.close()


async def post(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    response = await client.post(
        "/v1/sources/labelstudio",
        content=samples.raw(name),
        headers={"X-Forebay-Secret": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code in (200, 201), response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


async def snapshot(settings: LabelStudioSettings) -> dict[str, Any]:
    """Every staging row, every dataset shard (names and rows), and the dataset's current
    view (what replaying must not change: a delete received again is logged again)."""
    assert settings.stage_url is not None
    tables: dict[str, Any] = {}
    for table, order in (
        ("projects", "project_id"),
        ("documents", "task_id"),
        ("annotations", "annotation_id"),
        ("extractions", "annotation_id, region_id"),
        ("pdf_boxes", "annotation_id, region_id"),
    ):
        tables[table] = await fetch(
            settings.stage_url, settings.stage_schema, f"SELECT * FROM {table} ORDER BY {order}"
        )
    root = Path(settings.dataset)
    tables["dataset"] = {
        str(p.relative_to(root)): pq.read_table(p).to_pylist()
        for p in sorted(root.glob("data/*/*.parquet"))
    }
    tables["current"] = current_view(root)
    return tables


def stable(state: dict[str, Any]) -> dict[str, Any]:
    """The staging tables and the dataset's current view."""
    return {k: v for k, v in state.items() if k != "dataset"}


def dataset_log(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for rows in state["dataset"].values() for r in rows]


def check_final_state(state: dict[str, Any]) -> None:
    projects = {r["project_id"]: r for r in state["projects"]}
    assert projects[1]["title"] == "forebay-probe-renamed"  # the 2021 example is older
    documents = {r["task_id"]: r for r in state["documents"]}
    assert documents[1]["doc_id"] == "doc1" and documents[1]["deleted_at"] is None
    assert documents[1]["page_count"] == 2
    assert documents[3]["deleted_at"] is not None  # TASKS_DELETED
    annotations = {r["annotation_id"]: r for r in state["annotations"]}
    assert annotations[1]["deleted_at"] is not None  # ANNOTATIONS_DELETED (ids only)
    assert str(annotations[1]["updated_at"]).startswith("2026-11-22 05:18:09.561966")
    assert annotations[16]["deleted_at"] is None and annotations[16]["task_id"] == 5
    regions = {(r["annotation_id"], r["region_id"]): r for r in state["extractions"]}
    assert set(regions) == {(1, "r1"), (16, "5dC-jDgBtG"), (16, "_bJsGZ0_Cm")}
    assert regions[(1, "r1")]["text"] == "INV-0042" and regions[(1, "r1")]["deleted_at"]
    assert regions[(16, "5dC-jDgBtG")]["labels"] == ["Airplane"]
    (box,) = state["pdf_boxes"]  # the 2021 example has no PDF, so no box
    assert (box["annotation_id"], box["page_index"], box["label"]) == (1, 1, "InvoiceNumber")
    assert (box["page_box"], box["page_rotate"], box["geometry_source"]) == ("CropBox", 0, "pdf")
    # The update turned the box 90° clockwise about its top-left corner, which is at
    # 12.5 % / 20 % of the cropped page: (18 + 72, 774 - 151.2) in points.
    assert box["rotation"] == 90
    assert box["polygon"][:2] == pytest.approx([90.0, 622.8])
    assert box["polygon"][2:4] == pytest.approx([90.0, 622.8 - 0.25 * 576])
    assert (box["x0"], box["x1"]) == pytest.approx((90.0 - 0.05 * 756, 90.0))
    assert box["deleted_at"] is not None
    dataset = state["dataset"]
    annotations_log = [r for name, rows in dataset.items() if "/annotations/" in name for r in rows]
    upserts = [r["annotation_id"] for r in annotations_log if r["op"] == "upsert"]
    assert sorted(upserts) == [1, 1, 16]
    assert {r["annotation_id"] for r in annotations_log if r["op"] == "delete"} == {1}
    assert state["current"]["annotations"][1]["deleted_at"] is not None
    events = [r for name, rows in dataset.items() if "/events/" in name for r in rows]
    assert [(r["kind"], r["action"]) for r in events] == [("empty", "ANNOTATION_CREATED")]


async def test_the_samples_through_http_into_both_sinks(
    settings: LabelStudioSettings, tmp_path: Path
) -> None:
    async with pipeline_app(settings, tmp_path / "forebay.db") as (app, pipeline, client):
        for name in samples.ORDER:
            await post(client, name)
        await app.run_worker(burst=True)
        counts = {c.queue: c for c in await app.counts()}
        assert counts["labelstudio"].completed == 8 and counts["labelstudio"].dead == 0
        state = await snapshot(settings)
        check_final_state(state)
        assert pipeline.written.applied("dataset.annotations") == 4
    for path in [*Path(settings.dataset).rglob("*.parquet"), *tmp_path.glob("forebay.db*")]:
        data = path.read_bytes()
        assert not any(token in data for token in TOKENS), path
    text = repr(state)
    assert not any(token.decode() in text for token in TOKENS)


async def test_replaying_every_event_twice_in_reverse_changes_nothing(
    settings: LabelStudioSettings, tmp_path: Path
) -> None:
    async with pipeline_app(settings, tmp_path / "forebay.db") as (app, _, client):
        for name in samples.ORDER:
            await post(client, name)
        await app.run_worker(burst=True)
        before = await snapshot(settings)
        for _ in range(2):
            for name in reversed(samples.ORDER):
                jobs = await post(client, name)
                if name != "real_annotation_created_send_payload_false.json":
                    # The same keys: the same jobs. Deletes have no key (ids are reused):
                    # each is a delete again, which changes nothing already deleted.
                    assert all(j["created"] == ("deleted" in name) for j in jobs)
            await app.run_worker(burst=True)
        assert stable(await snapshot(settings)) == stable(before)

    # A fresh queue store knows none of the keys: every event runs again, in reverse order,
    # and the sinks' own guards (versions, tombstones, change ids) make it a no-op.
    async with pipeline_app(settings, tmp_path / "fresh.db") as (app, pipeline, client):
        for round_number in range(2):
            for name in reversed(samples.ORDER):
                jobs = await post(client, name)
                if round_number == 0:
                    assert all(j["created"] for j in jobs)
            await app.run_worker(burst=True)
        after = await snapshot(settings)
        assert pipeline.written.skipped("older", "postgres.annotations") >= 1
    assert stable(after) == stable(before)
    added = [r for r in dataset_log(after) if r not in dataset_log(before)]
    assert added and all(r["op"] == "delete" for r in added)  # only the deletes, logged again
    check_final_state(after)


async def test_a_stage_outage_in_the_middle_delays_but_loses_nothing(
    settings: LabelStudioSettings, tmp_path: Path
) -> None:
    outage = Outage()
    await outage.restore()
    settings = replace(settings, stage_url=outage.dsn)
    settled = Settled()
    first, second = samples.ORDER[:4], samples.ORDER[4:]
    async with pipeline_app(settings, tmp_path / "forebay.db", settled) as (app, _, client):
        worker = app.worker(
            settings=WorkerSettings(handle_signals=False, idle_poll_s=0.05, reclaim_every_s=0.2)
        )
        running = asyncio.create_task(worker.run())
        try:
            for name in first:
                await post(client, name)
            await settled.until("completed", len(first))

            await outage.cut()
            for name in second:
                await post(client, name)
            await settled.until("deferred", len(second))
            # The dataset, the system of record, already has the second half...
            root = Path(settings.dataset)
            deletes = [
                r
                for p in root.glob("data/annotations/*.parquet")
                for r in pq.read_table(p).to_pylist()
                if r["op"] == "delete"
            ]
            assert [r["annotation_id"] for r in deletes] == [1]
            # ...while the staging tables wait.
            real = replace(settings, stage_url=PG_URL)
            (annotation,) = await fetch(
                real.stage_url or "", real.stage_schema, "SELECT * FROM annotations"
            )
            assert annotation["deleted_at"] is None

            await outage.restore()
            await settled.until("completed", len(samples.ORDER))
        finally:
            worker.stop()
            await running
            await outage.cut()
        assert settled.count("dead") == 0 and settled.count("retried") == 0
        check_final_state(await snapshot(real))
