"""Over HTTP, on every backend: long-polling a job (``?wait=``), finding a job by its key, and
unknown query parameters refused on every route of the app."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from fastapi.routing import APIRoute

from forebay import Forebay, Job, PermanentError, SharedSecret
from forebay.http import ServiceSettings, create_app
from tests.integration.test_http import BASE, assert_error, serving

BOUND_S = 10.0


def declare(app: Forebay) -> asyncio.Event:
    """A queue whose jobs run until the returned event is set; payload "fail" dead-letters."""
    release = asyncio.Event()

    @app.handler("documents")
    async def ingest(job: Job) -> None:
        if job.payload == "fail":
            raise PermanentError("refused")
        await release.wait()

    return release


# -- ?wait= ------------------------------------------------------------------------------------
async def test_a_long_poll_answers_when_the_job_finishes(app: Forebay) -> None:
    release = declare(app)
    async with serving(app, ServiceSettings(workers=True)) as client:
        ok = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        bad = (await client.post("/v1/queues/documents/jobs", json={"payload": "fail"})).json()
        polls = [
            asyncio.create_task(client.get(f"/v1/jobs/{job_id}", params={"wait": 50}))
            for job_id in (ok, ok, bad["id"])
        ]
        async with asyncio.timeout(BOUND_S):
            dead = await polls[2]  # while the other job still runs
        assert dead.status_code == 200 and dead.json()["state"] == "dead"
        assert not polls[0].done() and not polls[1].done()
        release.set()
        async with asyncio.timeout(BOUND_S):
            answers = await asyncio.gather(polls[0], polls[1])
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.json()["state"] == "completed" and answer.json()["id"] == ok


async def test_a_long_poll_that_times_out_answers_202_with_the_job(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:  # no workers: the job stays queued
        job_id = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        answer = await client.get(f"/v1/jobs/{job_id}?wait=0.3")
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "queued" and answer.json()["id"] == job_id
        assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 200  # no wait: as before


async def test_a_long_poll_on_a_finished_job_answers_at_once(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        job_id = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        await app.cancel(job_id)
        async with asyncio.timeout(BOUND_S):
            answer = await client.get(f"/v1/jobs/{job_id}?wait=60")
        assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
        assert_error(await client.get("/v1/jobs/987654?wait=1"), 404, "job_not_found")


@pytest.mark.parametrize("wait", ["61", "-1", "nan", "inf", "soon"])
async def test_a_wait_out_of_bounds_is_a_400(app: Forebay, wait: str) -> None:
    declare(app)
    async with serving(app) as client:
        job_id = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        error = assert_error(
            await client.get(f"/v1/jobs/{job_id}", params={"wait": wait}), 400, "invalid_request"
        )
        assert error["message"].startswith("wait:"), error


# -- ?queue=&key= ------------------------------------------------------------------------------
async def test_a_job_is_found_by_its_queue_and_key(app: Forebay) -> None:
    declare(app)
    app.queue("archive")
    async with serving(app) as client:
        posted = {}
        for queue in ("documents", "archive"):
            answer = await client.post(f"/v1/queues/{queue}/jobs", json={"payload": 1, "key": "h1"})
            posted[queue] = answer.json()["id"]
        await client.post("/v1/queues/documents/jobs", json={"payload": 2, "key": "h2"})
        for queue, job_id in posted.items():
            page = (await client.get("/v1/jobs", params={"queue": queue, "key": "h1"})).json()
            assert [(j["id"], j["queue"], j["key"]) for j in page["jobs"]] == [
                (job_id, queue, "h1")
            ]
            assert page["next_before_id"] is None
        missing = await client.get("/v1/jobs", params={"queue": "documents", "key": "h3"})
        assert missing.status_code == 200 and missing.json()["jobs"] == []
        other_state = await client.get("/v1/jobs?queue=documents&key=h1&state=completed")
        assert other_state.json()["jobs"] == []
        queued = await client.get("/v1/jobs?queue=documents&key=h1&state=queued")
        assert [j["id"] for j in queued.json()["jobs"]] == [posted["documents"]]


async def test_a_key_without_its_queue_is_a_400(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        await client.post("/v1/queues/documents/jobs", json={"payload": 1, "key": "h1"})
        error = assert_error(await client.get("/v1/jobs?key=h1"), 400, "invalid_request")
        assert "queue" in error["message"]
        error = assert_error(
            await client.get("/v1/jobs?queue=no%20such&key=h1"), 400, "invalid_payload"
        )


# -- unknown query parameters ------------------------------------------------------------------
FASTAPI_PAGES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""Not API routes: FastAPI's own pages, which keep FastAPI's behaviour."""


def _path(route: APIRoute) -> str:
    values = {"queue": "documents", "source": "hook", "job_id": "1", "name": "app.js"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m[1], "x"), route.path)


async def test_every_route_refuses_an_unknown_query_parameter(app: Forebay) -> None:
    declare(app)
    app.source("hook", queue="documents", auth=SharedSecret("X-Secret", "s3cret"))
    api = create_app(app, ServiceSettings(workers=False))
    checked = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url=BASE) as client:
        for route in api.routes:
            if not isinstance(route, APIRoute):
                assert getattr(route, "path", None) in FASTAPI_PAGES, route
                continue
            for method in sorted(route.methods):
                answer = await client.request(method, _path(route) + "?bogus=1")
                assert answer.status_code == 400, (method, route.path, answer.text)
                if method != "HEAD":
                    error = answer.json()["error"]
                    assert error["type"] == "invalid_request"
                    assert "unknown query parameter bogus" in error["message"], error
                    assert route.path in error["message"]
                checked.append((method, route.path))
    assert ("GET", "/v1/jobs") in checked and ("POST", "/v1/sources/{source}") in checked
    assert ("GET", "/healthz") in checked and ("GET", "/") in checked


async def test_known_query_parameters_still_work(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        error = assert_error(
            await client.get("/v1/jobs?state=queued&kee=h1"), 400, "invalid_request"
        )
        assert error["message"] == (
            "unknown query parameter kee: /v1/jobs takes before_id, key, limit, queue, run_id, state"
        )
        assert (await client.get("/v1/jobs?state=queued&limit=3")).status_code == 200
        asset = await client.get("/dashboard/app.js?v=0123abcd")
        assert asset.status_code == 200 and asset.text
        error = assert_error(await client.get("/healthz?verbose=1&x=2"), 400, "invalid_request")
        assert error["message"] == "unknown query parameters verbose, x: /healthz takes none"
