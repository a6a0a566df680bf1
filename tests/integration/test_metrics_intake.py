"""An intake-only service (``serve --no-workers``) reports the fleet's truth at ``/metrics``, on
every backend: the workers run elsewhere, the numbers come from the store.

* two workers of other apps on the same store: the intake counts them live, per queue and in
  all, and reports the jobs they finished (while its own job counters show no run of its own);
* once they stop, the queue has due jobs and no live worker (0, not absent: the
  ``ForebayNoLiveWorker`` alert compares with 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prometheus_client.parser import text_string_to_metric_families

from forebay import Forebay, Job, WorkerSettings
from forebay.http.api import create_app
from forebay.http.settings import ServiceSettings
from forebay.testing import until

JOBS = 16


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@asynccontextmanager
async def intake_only(app: Forebay) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(app, ServiceSettings(workers=False))
    transport = httpx.ASGITransport(api)
    headers = {"Content-Type": "application/json"}
    async with (
        httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000", headers=headers
        ) as client,
        api.router.lifespan_context(api),
    ):
        yield client
    await app.open()  # the service closed it; the fixture drops the store through it


def worker_app(url: str) -> Forebay:
    app = Forebay(url)

    @app.handler("documents", concurrency=2)
    async def ingest(job: Job) -> None:
        pass

    return app


async def test_an_intake_only_node_reports_the_workers_running_elsewhere(
    app: Forebay, url: str
) -> None:
    app.queue("documents")
    elsewhere = [worker_app(url), worker_app(url)]
    settings = WorkerSettings(handle_signals=False)
    workers = [a.worker(["documents"], settings) for a in elsewhere]
    async with intake_only(app) as client:
        posted = await client.post(
            "/v1/queues/documents/jobs", json=[{"payload": n} for n in range(JOBS)]
        )
        assert posted.status_code == 201, posted.text
        for a in elsewhere:
            await a.open()
        running = [asyncio.create_task(w.run()) for w in workers]
        try:

            async def scraped() -> str:
                return (await client.get("/metrics")).text

            async def all_finished() -> bool:
                text = await scraped()
                done = value(
                    text, "forebay_queue_finished_total", queue="documents", outcome="completed"
                )
                return done == JOBS and value(text, "forebay_workers") == 2

            await until(all_finished, timeout_s=30, what="the workers' jobs in the store")
            text = await scraped()
            assert value(text, "forebay_queue_workers", queue="documents") == 2
            assert value(text, "forebay_queue_jobs", queue="documents", state="completed") == JOBS
            assert value(text, "forebay_jobs_completed_total", queue="documents") is None
            assert value(text, "forebay_jobs_enqueued_total", queue="documents") == JOBS
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*running)
            for a in elsewhere:
                await a.close()

        await client.post("/v1/queues/documents/jobs", json={"payload": "late"})
        text = await scraped()
        assert value(text, "forebay_workers") == 0  # removed when they stopped cleanly
        assert value(text, "forebay_queue_workers", queue="documents") == 0
        assert value(text, "forebay_queue_jobs", queue="documents", state="queued") == 1
