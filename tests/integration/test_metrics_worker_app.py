"""A standalone worker's HTTP app (:mod:`forebay.http.worker_app`), in process, on every backend.

* two running workers on one store are each ready, and each ``/metrics`` counts the outcomes of
  its own worker while both show the store's totals;
* a worker whose heartbeat went stale is not ready (503), and says so;
* a store that does not answer: alive (``/healthz`` 200), not ready (503 naming the backend),
  ``/metrics`` still answers with ``forebay_backend_up 0``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from forebay import Forebay, Job, NewJob, Worker, WorkerSettings
from forebay.http.worker_app import create_worker_app
from forebay.metrics import Metrics, PrometheusObserver
from forebay.testing import until


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@asynccontextmanager
async def client_for(
    app: Forebay, worker: Worker, metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_worker_app(app, worker, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


def declare(app: Forebay) -> None:
    @app.handler("documents", concurrency=2)
    async def ingest(job: Job) -> None:
        pass


def measured_app(url: str) -> tuple[Forebay, Metrics]:
    metrics = Metrics()
    app = Forebay(url)
    app.observers.append(PrometheusObserver(metrics))
    declare(app)
    return app, metrics


async def test_two_running_workers_are_ready_and_count_their_own_jobs(url: str) -> None:
    (a, metrics_a), (b, metrics_b) = measured_app(url), measured_app(url)
    settings = WorkerSettings(handle_signals=False)
    workers = [a.worker(["documents"], settings), b.worker(["documents"], settings)]
    async with a, b:
        await a.enqueue_many([NewJob.create("documents", {"n": n}) for n in range(20)])
        running = [asyncio.create_task(w.run()) for w in workers]
        try:
            async with (
                client_for(a, workers[0], metrics_a) as client_a,
                client_for(b, workers[1], metrics_b) as client_b,
            ):
                clients = (client_a, client_b)

                async def all_counted() -> bool:
                    texts = [(await c.get("/metrics")).text for c in clients]
                    own = [
                        value(t, "forebay_jobs_completed_total", queue="documents") for t in texts
                    ]
                    return sum(n or 0 for n in own) == 20

                await until(all_counted, timeout_s=30, what="every job counted by a worker")
                for client in clients:
                    ready = await client.get("/readyz")
                    assert ready.status_code == 200, ready.text
                    assert ready.json()["backend"] == {"ok": True}
                    assert ready.json()["workers"]["fresh"] is True
                    text = (await client.get("/metrics")).text
                    finished = "forebay_queue_finished_total"
                    assert value(text, finished, queue="documents", outcome="completed") == 20
                    assert value(text, "forebay_backend_up") == 1
                    assert value(text, "forebay_workers") == 2
                    assert value(text, "forebay_queue_workers", queue="documents") == 2
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*running)


async def test_a_stale_heartbeat_is_not_ready(url: str) -> None:
    app = Forebay(url)

    @app.handler("documents", lease_s=0.05)
    async def ingest(job: Job) -> None:
        pass

    worker = app.worker(["documents"], WorkerSettings(handle_signals=False))  # never runs
    async with app, client_for(app, worker, Metrics()) as client:

        async def stale() -> bool:
            return (await client.get("/readyz")).status_code == 503

        await until(stale, timeout_s=10, what="readyz to turn 503")
        body = (await client.get("/readyz")).json()
        assert body["ready"] is False and body["backend"] == {"ok": True}
        assert body["workers"]["fresh"] is False
        assert body["workers"]["stale_after_s"] == 0.05
        assert body["worker_id"] == worker.worker_id


async def test_a_store_that_does_not_answer_is_alive_but_not_ready(tmp_path: Path) -> None:
    app = Forebay(f"sqlite:///{tmp_path / 'missing' / 'forebay.db'}")
    declare(app)
    worker = app.worker(["documents"], WorkerSettings(handle_signals=False))
    async with client_for(app, worker, Metrics()) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["backend"]["ok"] is False
        assert "missing" in ready.json()["backend"]["error"]
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert value(metrics.text, "forebay_backend_up") == 0
