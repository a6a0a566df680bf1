"""Reconciliation against a local HTTP server that answers like Label Studio's API, with the
tasks and annotations of the sample payloads (Label Studio itself cannot run here)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest

from forebay import Forebay, JobFilter
from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.events import change_key, normalise_time, split_event
from forebay.contrib.labelstudio.pipeline import LabelStudioPipeline
from forebay.contrib.labelstudio.reconcile import (
    RECONCILE_QUEUE,
    Reconciler,
    install_reconcile,
    schedule_reconcile,
)
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.job import NewJob
from forebay.worker.scheduler import Scheduler

TOKEN = "ls-api-token"


class FakeLabelStudio:
    """Label Studio's API answers for project 1: its tasks (with annotations) and webhooks."""

    def __init__(self) -> None:
        updated = samples.load("real_annotation_updated.json")
        created = samples.load("real_tasks_created_single.json")
        assert isinstance(updated, dict) and isinstance(created, dict)
        task1 = dict(updated["task"])  # type: ignore[arg-type]
        task1["annotations"] = [updated["annotation"]]
        task3 = dict(created["tasks"][0])  # type: ignore[index]
        task3["annotations"] = []
        self.project = updated["project"]
        self.tasks = [task3, task1]
        self.webhooks = [
            {
                "id": 7,
                "url": "http://forebay/v1/sources/labelstudio",
                "is_active": False,
                "headers": {"X-Forebay-Secret": "s"},
            },
            {"id": 8, "url": "http://elsewhere/hook", "is_active": False, "headers": {}},
        ]
        self.patched: list[tuple[str, Any]] = []
        self.queries: list[dict[str, Any]] = []

    def answer(self, method: str, path: str, params: dict[str, list[str]], body: Any) -> Any:
        if method == "PATCH" and path.startswith("/api/webhooks/"):
            self.patched.append((path, body))
            return {"ok": True}
        if path == "/api/projects":
            return {"results": [self.project], "next": None}
        if path == "/api/webhooks/":
            return self.webhooks
        if path == "/api/tasks":
            assert params["project"] == ["1"] and params["fields"] == ["all"]
            query = json.loads(params["query"][0])
            self.queries.append(query)
            tasks = sorted(self.tasks, key=lambda t: t["updated_at"])
            for item in query.get("filters", {}).get("items", []):
                assert (item["filter"], item["operator"]) == ("filter:tasks:updated_at", "greater")
                tasks = [t for t in tasks if normalise_time(t["updated_at"]) > item["value"]]
            page, size = int(params["page"][0]), int(params["page_size"][0])
            return {"tasks": tasks[(page - 1) * size : page * size], "total": len(tasks)}
        return None


@pytest.fixture
def labelstudio() -> Iterator[tuple[str, FakeLabelStudio]]:
    fake = FakeLabelStudio()

    class Handler(BaseHTTPRequestHandler):
        def _respond(self, method: str) -> None:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            answer = fake.answer(method, parts.path, parse_qs(parts.query), body)
            data = json.dumps(answer).encode()
            self.send_response(404 if answer is None else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._respond("GET")

        def do_PATCH(self) -> None:
            self._respond("PATCH")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rows(dataset: Path, table: str) -> list[dict[str, Any]]:
    return [
        r
        for p in sorted(dataset.glob(f"data/{table}/*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]


async def test_missed_events_are_recovered_with_the_same_keys(
    tmp_path: Path, labelstudio: tuple[str, FakeLabelStudio]
) -> None:
    url, fake = labelstudio
    settings = LabelStudioSettings(
        secret="s",
        dataset=str(tmp_path / "dataset"),
        labelstudio_url=url,
        labelstudio_token=TOKEN,
        flush_interval_s=0,
    )
    app = Forebay(f"sqlite:///{tmp_path / 'forebay.db'}")
    pipeline = LabelStudioPipeline.from_settings(settings)
    pipeline.install(app, settings)
    install_reconcile(app, settings)
    try:
        # Only the first webhook arrived; the update and the new task were missed.
        created = split_event(
            samples.load("real_annotation_created_rectanglelabels_multipage.json")
        )
        await app.enqueue_many(
            [NewJob.create("labelstudio", c, key=change_key(c)) for c in created]
        )

        reconciler = Reconciler(app, settings)
        result = await reconciler.run_once()
        assert (result.projects, result.tasks, result.enqueued, result.already_known) == (
            1,
            2,
            3,
            0,
        )
        assert result.webhooks_enabled == [7]  # ours (by its header), not the other one
        assert fake.patched == [("/api/webhooks/7/", {"is_active": True})]
        assert result.watermarks == {"1": "2026-11-22T05:18:09.585349Z"}
        assert "filters" not in fake.queries[0]  # the first pass reads everything

        await app.run_worker(burst=True)
        dataset = Path(settings.dataset)
        versions = sorted(str(r["updated_at"]) for r in rows(dataset, "annotations"))
        assert versions == ["2026-11-22 05:18:08.980576+00:00", "2026-11-22 05:18:09.561966+00:00"]
        # Task 1 as the first webhook saw it, and as it is now (once, though two changes
        # carried it); task 3, whose webhook was missed.
        assert sorted(r["task_id"] for r in rows(dataset, "documents")) == [1, 1, 3]

        # The same event arriving late by webhook is the same job.
        late = split_event(samples.load("real_annotation_updated.json"))
        (job,) = await app.enqueue_many(
            [NewJob.create("labelstudio", c, key=change_key(c)) for c in late]
        )
        assert not job.created

        # The next pass asks only for what changed since the watermark (less a second).
        again = await Reconciler(app, settings).run_once()
        assert fake.queries[-1]["filters"]["items"][0]["value"] == "2026-11-22T05:18:08.585349Z"
        assert (again.tasks, again.enqueued, again.already_known) == (1, 0, 2)
    finally:
        await pipeline.close()
        await app.close()


async def test_periodic_reconciliation_is_a_schedule_fired_once_per_tick(
    tmp_path: Path, labelstudio: tuple[str, FakeLabelStudio]
) -> None:
    """``--every N`` stores a schedule; the workers' schedulers fire each tick once, and a
    worker runs the pass. The pipeline's own setting declares the same schedule."""
    url, fake = labelstudio
    settings = LabelStudioSettings(
        secret="s", dataset=str(tmp_path / "dataset"), labelstudio_url=url, labelstudio_token=TOKEN
    )
    app = Forebay(f"sqlite:///{tmp_path / 'forebay.db'}")
    install_reconcile(app, settings)
    assert app.schedules == {}  # no period set: nothing declared
    try:
        await schedule_reconcile(app, 600)
        stored = await schedule_reconcile(app, 300)  # a new period replaces the stored one
        assert [s.name for s in await app.list_schedules()] == [RECONCILE_QUEUE]
        assert stored.every == timedelta(seconds=300) and stored.queue == RECONCILE_QUEUE

        backend = await app.open()
        t0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        schedulers = [Scheduler(backend) for _ in range(3)]
        for now in (t0, t0 + timedelta(seconds=301), t0 + timedelta(seconds=302)):
            await asyncio.gather(*(s.run_once(now) for s in schedulers))
        [job] = await app.list_jobs(JobFilter(queue=RECONCILE_QUEUE))
        assert job.key == "schedule:labelstudio.reconcile:2026-12-07T12:05:00Z"

        await app.run_worker([RECONCILE_QUEUE], burst=True)
        assert (await app.get_job(job.id)).state == "completed"
        assert fake.queries  # the pass read Label Studio's tasks
        # No pass enqueues a successor: every job is a tick (the burst worker's own scheduler
        # fired the newest one, today's).
        jobs = await app.list_jobs(JobFilter(queue=RECONCILE_QUEUE))
        assert all((j.key or "").startswith("schedule:labelstudio.reconcile:") for j in jobs)
        assert len({j.key for j in jobs}) == len(jobs) <= 2
    finally:
        await app.close()

    declaring = Forebay(f"sqlite:///{tmp_path / 'other.db'}")
    install_reconcile(declaring, replace(settings, reconcile_every_s=120))
    assert declaring.schedules[RECONCILE_QUEUE].every == timedelta(seconds=120)


def test_reconcile_every_stores_the_schedule(
    tmp_path: Path, labelstudio: tuple[str, FakeLabelStudio]
) -> None:
    url, fake = labelstudio
    env = os.environ | {"FOREBAY_LABELSTUDIO_URL": url, "FOREBAY_LABELSTUDIO_TOKEN": TOKEN}
    store = f"sqlite:///{tmp_path / 'forebay.db'}"
    argv = ["-m", "forebay", "labelstudio", "reconcile", "--every", "300", "--json"]
    done = subprocess.run(
        [sys.executable, *argv, "--url", store], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["schedule"] == RECONCILE_QUEUE and answer["every_s"] == 300
    assert answer["next_tick"].endswith(("0:00Z", "5:00Z"))  # a multiple of 5 minutes
    assert not fake.queries  # no pass now: the service's workers run them
    listed = subprocess.run(
        [sys.executable, "-m", "forebay", "schedules", "--json", "--url", store],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    [schedule] = json.loads(listed.stdout)
    assert schedule["queue"] == RECONCILE_QUEUE and schedule["every_s"] == 300


def test_reconcile_needs_the_api_settings(tmp_path: Path) -> None:
    from forebay.errors import ConfigError

    with pytest.raises(ConfigError, match="FOREBAY_LABELSTUDIO_URL"):
        Reconciler(Forebay(f"sqlite:///{tmp_path / 'f.db'}"), LabelStudioSettings(secret="s"))


def test_reconcile_from_the_command_line_needs_no_webhook_secret(
    tmp_path: Path, labelstudio: tuple[str, FakeLabelStudio]
) -> None:
    """Reconciliation reads Label Studio's API and stores jobs: the webhook's secret is the
    service's business, not this command's."""
    url, _ = labelstudio
    env = {k: v for k, v in os.environ.items() if k != "FOREBAY_LABELSTUDIO_SECRET"}
    env.update(
        {
            "FOREBAY_LABELSTUDIO_URL": url,
            "FOREBAY_LABELSTUDIO_TOKEN": TOKEN,
            "FOREBAY_DATASET": str(tmp_path / "dataset"),
        }
    )
    store = f"sqlite:///{tmp_path / 'forebay.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "forebay", "labelstudio", "reconcile", "--json", "--url", store],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["enqueued"] == 3
