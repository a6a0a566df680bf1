"""Runs, dependencies and job webhooks over HTTP (``/v1/runs``, the job body's ``run``,
``after``, ``after_policy`` and ``webhook``, the ``waiting`` state), in-process on SQLite: the
contract tests hold the backends to the semantics, these hold the HTTP edge to its shapes,
statuses and scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forebay import Forebay, Job, JobFilter, JobState
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from forebay.testing import drain
from tests.integration.test_http import assert_error, sample, serving
from tests.servers import backend_url

JOBS = "/v1/queues/documents/jobs"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Forebay]:
    """An app on a fresh SQLite store, with a ``documents`` queue whose jobs fan out: a
    payload ``{"fan": n}`` enqueues n children into the job's own run."""
    forebay = Forebay(backend_url("sqlite", tmp_path))

    @forebay.handler("documents")
    async def ingest(job: Job) -> None:
        assert isinstance(job.payload, dict)
        for i in range(int(job.payload.get("fan", 0))):
            await job.enqueue("documents", {"child": i})

    forebay.queue("reports")  # on_complete: its jobs stay queued here
    try:
        yield forebay
    finally:
        await forebay.close()


async def test_a_run_started_joined_sealed_and_completed_over_http(app: Forebay) -> None:
    async with serving(app) as client:
        started = await client.post(
            "/v1/runs",
            json={"name": "crawl 7", "key": "crawl-7", "meta": {"n": 7}, "on_complete": "reports"},
        )
        assert started.status_code == 201, started.text
        run = started.json()
        assert run["state"] == "open" and run["total"] == 0 and run["name"] == "crawl 7"
        assert run["meta"] == {"n": 7} and run["on_complete"] == "reports"
        again = await client.post("/v1/runs", json={"key": "crawl-7", "name": "other"})
        assert again.status_code == 200 and again.json()["id"] == run["id"]

        body = [{"payload": {"fan": 2}, "run": run["id"]}, {"payload": {}, "run": run["id"]}]
        assert (await client.post(JOBS, json=body)).status_code == 201
        counted = (await client.get(f"/v1/runs/{run['id']}")).json()
        assert (counted["total"], counted["queued"], counted["state"]) == (2, 2, "open")

        sealed = await client.post(f"/v1/runs/{run['id']}/seal")
        assert sealed.status_code == 200, sealed.text
        assert sealed.json()["state"] == "sealed" and sealed.json()["sealed_at"] is not None
        late = await client.post(JOBS, json={"payload": {}, "run": run["id"]})
        assert_error(late, 409, "run_sealed")

        await drain(app, ["documents"])
        done = (await client.get(f"/v1/runs/{run['id']}")).json()
        assert done["state"] == "completed" and done["completed_at"] is not None
        assert (done["total"], done["completed"], done["queued"], done["running"]) == (4, 4, 0, 0)
        resealed = await client.post(f"/v1/runs/{run['id']}/seal")
        assert resealed.status_code == 200 and resealed.json()["state"] == "completed"

        of_run = (await client.get(f"/v1/jobs?run_id={run['id']}")).json()["jobs"]
        assert len(of_run) == 4 and {j["run_id"] for j in of_run} == {run["id"]}
        children = [j for j in of_run if j["parent_id"] is not None]
        assert len(children) == 2
        summary = (await client.get("/v1/jobs?queue=reports")).json()["jobs"]
        assert [j["key"] for j in summary] == [f"run:{run['id']}:complete"]
        assert summary[0]["payload"]["total"] == 4 and summary[0]["run_id"] is None


async def test_runs_are_listed_newest_first_by_state_and_paged(app: Forebay) -> None:
    async with serving(app) as client:
        ids = [
            (await client.post("/v1/runs", json={"name": f"r{i}"})).json()["id"] for i in range(3)
        ]
        await client.post(f"/v1/runs/{ids[0]}/seal")  # empty: it completes at once

        first = (await client.get("/v1/runs?limit=2")).json()
        assert [r["id"] for r in first["runs"]] == [ids[2], ids[1]]
        assert first["next_before_id"] == ids[1]
        rest = (await client.get(f"/v1/runs?limit=2&before_id={ids[1]}")).json()
        assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_before_id"] is None

        completed = (await client.get("/v1/runs?state=completed")).json()["runs"]
        assert [r["id"] for r in completed] == [ids[0]]
        open_ = (await client.get("/v1/runs?state=open")).json()["runs"]
        assert [r["id"] for r in open_] == [ids[2], ids[1]]

        assert_error(await client.get("/v1/runs?state=done"), 400, "invalid_request")
        assert_error(await client.get("/v1/runs?page=2"), 400, "invalid_request")
        assert_error(await client.get("/v1/runs/" + "0" * 32), 404, "run_not_found")
        assert_error(await client.post("/v1/runs/" + "0" * 32 + "/seal"), 404, "run_not_found")


async def test_bad_runs_and_links_are_refused_and_nothing_is_stored(app: Forebay) -> None:
    async with serving(app) as client:
        parent = (await client.post(JOBS, json={"payload": {}})).json()["id"]
        refusals = [
            ({"payload": {}, "run": "0" * 32}, "unknown_run"),
            ({"payload": {}, "after": [parent, 999_999]}, "unknown_parent"),
            ({"payload": {}, "after": ["1"]}, "invalid_payload"),
            ({"payload": {}, "after": [parent], "after_policy": "sometimes"}, "invalid_payload"),
            ({"payload": {}, "webhook": "ftp://example.com/hook"}, "invalid_payload"),
            ({"payload": {}, "run_id": "0" * 32}, "invalid_payload"),  # the field is "run"
        ]
        for body, kind in refusals:
            error = assert_error(await client.post(JOBS, json=body), 400, kind)
            if kind == "unknown_parent":
                assert "999999" in error["message"]
        # a list with one bad job stores none of them
        batch = [{"payload": {}}, {"payload": {}, "run": "0" * 32}]
        assert_error(await client.post(JOBS, json=batch), 400, "unknown_run")
        assert [j.id for j in await app.list_jobs(JobFilter())] == [parent]

        for body in ({"meta": [1]}, {"on_complete": "no such queue!"}, {"webhook": "nope"}):
            assert_error(await client.post("/v1/runs", json=body), 400, "invalid_payload")
        assert_error(await client.post("/v1/runs", json={"nme": "x"}), 400, "invalid_payload")
        assert (await client.get("/v1/runs")).json()["runs"] == []


async def test_a_waiting_job_is_shown_counted_filtered_and_cancelled(app: Forebay) -> None:
    async with serving(app) as client:
        parent = (await client.post(JOBS, json={"payload": {}})).json()["id"]
        hook = "https://example.com/hooks/forebay"
        answer = await client.post(
            JOBS,
            json=[
                {"payload": {"n": 1}, "after": [parent], "webhook": hook},
                {"payload": {"n": 2}, "after": [parent], "after_policy": "always"},
            ],
        )
        assert answer.status_code == 201, answer.text
        first, second = (j["id"] for j in answer.json())
        assert [j["state"] for j in answer.json()] == ["waiting", "waiting"]

        shown = (await client.get(f"/v1/jobs/{first}")).json()
        assert shown["state"] == "waiting" and shown["after"] == [parent]
        assert shown["after_policy"] == "completed" and shown["webhook"] == hook
        assert shown["parent_id"] is None
        assert (await client.get(f"/v1/jobs/{second}")).json()["after_policy"] == "always"

        waiting = (await client.get("/v1/jobs?state=waiting")).json()["jobs"]
        assert [j["id"] for j in waiting] == [second, first]
        queues = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        assert (queues["documents"]["waiting"], queues["documents"]["queued"]) == (2, 1)
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "forebay_queue_jobs", queue="documents", state="waiting") == 2

        cancel = {"state": "waiting", "ids": [first], "dry_run": True}
        counted = await client.post("/v1/jobs/cancel", json=cancel)
        assert counted.status_code == 200 and counted.json()["cancelled"] == 1
        one = await client.post(f"/v1/jobs/{first}/cancel")
        assert one.status_code == 200 and one.json()["state"] == "cancelled"

        await drain(app, ["documents"])
        assert (await app.get_job(second)).state is JobState.COMPLETED
        assert (await app.get_job(first)).state is JobState.CANCELLED


async def test_runs_need_read_to_look_and_enqueue_to_start_and_seal(app: Forebay) -> None:
    tokens = parse_api_tokens("reader:read,producer:enqueue")
    reader = {"Authorization": "Bearer reader"}
    producer = {"Authorization": "Bearer producer"}
    async with serving(app, ServiceSettings(workers=False, api_tokens=tokens)) as client:
        assert_error(await client.get("/v1/runs"), 401, "unauthorized")
        assert_error(await client.post("/v1/runs", json={}, headers=reader), 403, "forbidden")
        started = await client.post("/v1/runs", json={}, headers=producer)
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        assert_error(await client.get("/v1/runs", headers=producer), 403, "forbidden")
        seal = f"/v1/runs/{run_id}/seal"
        assert_error(await client.post(seal, headers=reader), 403, "forbidden")
        assert (await client.post(seal, headers=producer)).json()["state"] == "completed"
        listed = (await client.get("/v1/runs", headers=reader)).json()["runs"]
        assert [r["id"] for r in listed] == [run_id]


async def test_the_openapi_document_describes_runs_and_links(app: Forebay) -> None:
    async with serving(app) as client:
        doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert {"get", "post"} <= set(paths["/v1/runs"])
    assert "get" in paths["/v1/runs/{run_id}"] and "post" in paths["/v1/runs/{run_id}/seal"]
    job_in = paths["/v1/queues/{queue}/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    fields = job_in["oneOf"][0]["properties"]
    assert {"run", "after", "after_policy", "webhook"} <= set(fields)
    states = paths["/v1/runs"]["get"]["parameters"]
    assert any(p["name"] == "state" for p in states)
