"""Operator controls over HTTP (httpx over ASGI), on every backend: pause and resume a queue,
``GET /v1/queues`` showing it, a max_depth stored by the app holding for every producer,
cancel by filter with ``dry_run``, cancel of a running job and re-cancel (200, as the CLI's
exit 0), run-now and its 409, and the admin scope on every one of them."""

from __future__ import annotations

import time
from datetime import timedelta

from forebay import Forebay, JobState
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from tests.integration.test_http import assert_error, declare, serving


async def test_pause_and_resume_a_queue(url: str, app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        await client.post("/v1/queues/documents/jobs", json={"payload": 1})
        paused = await client.post("/v1/queues/documents/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True and paused.json()["queue"] == "documents"
        # enqueues are still accepted; no worker leases the queue
        created = await client.post("/v1/queues/documents/jobs", json={"payload": 2})
        assert created.status_code == 201
        queues = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        assert queues["documents"]["paused"] is True and queues["documents"]["queued"] == 2
        # a queue that holds no job yet can be paused too, and is listed
        assert (await client.post("/v1/queues/later/pause")).json()["paused"] is True
        queues = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        assert queues["later"]["paused"] is True and queues["later"]["declared"] is False
        other = Forebay(url)  # what every worker reads: the store
        try:
            assert (await other.queue_settings())["documents"].paused
            backend = await other.open()
            assert await backend.lease(queue="documents", limit=5, worker_id="w", lease_s=30) == []
            resumed = await client.post("/v1/queues/documents/resume")
            assert resumed.json()["paused"] is False
            leased = await backend.lease(queue="documents", limit=5, worker_id="w", lease_s=30)
            assert len(leased) == 2
        finally:
            await other.close()
        bad = await client.post("/v1/queues/no%20such!/pause")
        assert bad.status_code in (400, 422)


async def test_the_stored_max_depth_holds_for_a_bare_app_behind_http(
    url: str, app: Forebay
) -> None:
    declare(app, max_depth=2)
    await app.open()  # stores the declared max_depth
    bare = Forebay(url)  # a service that declares no limit: the store's still holds
    bare.queue("documents")
    try:
        async with serving(bare) as client:
            for _ in range(2):
                ok = await client.post("/v1/queues/documents/jobs", json={"payload": 1})
                assert ok.status_code == 201, ok.text
            full = await client.post("/v1/queues/documents/jobs", json={"payload": 1})
            assert_error(full, 429, "queue_full")
            assert full.headers["retry-after"]
            queues = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
            assert queues["documents"]["max_depth"] == 2
    finally:
        await bare.close()


async def test_cancel_by_filter_a_running_job_and_again(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        ids = []
        for i in range(4):
            made = await client.post("/v1/queues/documents/jobs", json={"payload": i})
            ids.append(made.json()["id"])
        backend = await app.open()
        [running] = await backend.lease(queue="documents", limit=1, worker_id="w", lease_s=30)
        dry = await client.post(
            "/v1/jobs/cancel", json={"queue": "documents", "state": "queued", "dry_run": True}
        )
        assert dry.status_code == 200, dry.text
        assert dry.json() == {"cancelled": 3, "dry_run": True}
        assert (await app.get_job(ids[-1])).state is JobState.QUEUED
        done = await client.post("/v1/jobs/cancel", json={"queue": "documents", "state": "queued"})
        assert done.json() == {"cancelled": 3, "dry_run": False}
        # a running job is cancelled at once (its worker stops the handler at its heartbeat)
        one = await client.post(f"/v1/jobs/{running.id}/cancel")
        assert one.status_code == 200 and one.json()["state"] == "cancelled"
        assert await backend.complete([running.lease]) == [running.id]  # the late outcome
        # re-cancelling answers 200 with the job, as `forebay cancel` exits 0
        again = await client.post(f"/v1/jobs/{running.id}/cancel")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
        assert_error(await client.post("/v1/jobs/cancel", json={}), 400, "invalid_payload")
        assert_error(
            await client.post("/v1/jobs/cancel", json={"state": "dead"}), 400, "invalid_payload"
        )
        assert_error(
            await client.post("/v1/jobs/cancel", json={"queue": "x", "bogus": 1}),
            400,
            "invalid_payload",
        )


async def test_run_now_moves_a_scheduled_job_and_refuses_a_finished_one(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        job = await app.enqueue("documents", {}, delay=timedelta(hours=1))
        moved = await client.post(f"/v1/jobs/{job.id}/run-now")
        assert moved.status_code == 200, moved.text
        stored = await app.get_job(job.id)
        assert stored.run_at is not None and stored.run_at.timestamp() <= time.time()
        await app.cancel(job.id)
        refused = await client.post(f"/v1/jobs/{job.id}/run-now")
        assert "cancelled" in assert_error(refused, 409, "job_not_queued")["message"]
        assert_error(await client.post("/v1/jobs/999999/run-now"), 404, "job_not_found")


async def test_the_controls_need_the_admin_scope(app: Forebay) -> None:
    declare(app)
    tokens = parse_api_tokens("reader-secret:read,ops-secret:admin")
    settings = ServiceSettings(workers=False, api_tokens=tokens)
    reader = {"Authorization": "Bearer reader-secret"}
    ops = {"Authorization": "Bearer ops-secret"}
    job = await app.enqueue("documents", {}, delay=timedelta(hours=1))
    async with serving(app, settings) as client:
        for path, body in (
            ("/v1/queues/documents/pause", None),
            ("/v1/queues/documents/resume", None),
            (f"/v1/jobs/{job.id}/run-now", None),
            ("/v1/jobs/cancel", {"queue": "documents", "dry_run": True}),
        ):
            assert_error(await client.post(path, json=body, headers=reader), 403, "forbidden")
            answer = await client.post(path, json=body, headers=ops)
            assert answer.status_code == 200, (path, answer.text)
        assert not (await app.queue_settings())["documents"].paused
        schema = (await client.get("/openapi.json")).json()
        assert {
            "/v1/queues/{queue}/pause",
            "/v1/queues/{queue}/resume",
            "/v1/jobs/{job_id}/run-now",
            "/v1/jobs/cancel",
        } <= set(schema["paths"])
