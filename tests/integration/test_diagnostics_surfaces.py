"""A job's result, started_at and errors history as users see them, on every backend: the
``forebay job`` command (text and ``--json``), ``GET /v1/jobs/{id}``, and the compact listings
(``forebay jobs``, ``GET /v1/jobs``) that leave results and tracebacks out."""

from __future__ import annotations

import asyncio
import json

import httpx
from typer.testing import CliRunner

from forebay import Backoff, Forebay, Job, JobState
from forebay.cli import cli
from forebay.http import ServiceSettings, create_app
from forebay.testing import drain


def _parse(payload: dict[str, object]) -> object:
    return payload["missing"]


PARSE_LINE = _parse.__code__.co_firstlineno + 1


def _declare(app: Forebay) -> None:
    @app.handler("docs", max_attempts=2, backoff=Backoff(base_s=0, jitter=False))
    async def handle(job: Job) -> object:
        if job.payload.get("always_fails") or job.attempt == 1:  # type: ignore[union-attr]
            return _parse(job.payload)  # type: ignore[arg-type]
        return {"rows": 3, "name": "café"}


async def _two_jobs(url: str) -> tuple[int, int]:
    """One job that failed once then completed with a result, one that died twice."""
    app = Forebay(url)
    _declare(app)
    async with app:
        healed = await app.enqueue("docs", {"n": 1})
        dead = await app.enqueue("docs", {"always_fails": True})
        await drain(app)
    return healed.id, dead.id


async def _drop(url: str) -> None:
    async with Forebay(url) as app:
        await app.backend.drop_everything()


def test_forebay_job_shows_the_result_and_each_attempts_traceback(url: str) -> None:
    healed, dead = asyncio.run(_two_jobs(url))
    try:
        runner = CliRunner()
        env = {"COLUMNS": "200", "FOREBAY_URL": url}
        shown = runner.invoke(cli, ["job", str(healed)], env=env)
        assert shown.exit_code == 0, shown.output
        text = shown.output
        assert "completed" in text and '"rows": 3' in text and "café" in text
        assert "started" in text
        assert "errors of the last attempt" in text and "attempt 1" in text
        assert f"line {PARSE_LINE}, in _parse" in text
        # the error it recovered from is history, not its state
        assert "error type" not in text

        as_json = json.loads(runner.invoke(cli, ["job", str(dead), "--json"], env=env).output)
        assert as_json["state"] == "dead" and as_json["error_type"] == "KeyError"
        assert [e["attempt"] for e in as_json["errors"]] == [1, 2]
        assert all(f"line {PARSE_LINE}, in _parse" in e["traceback"] for e in as_json["errors"])
        assert as_json["result"] is None and as_json["started_at"] is not None

        listed = json.loads(runner.invoke(cli, ["jobs", "--json"], env=env).output)
        assert {j["id"] for j in listed} == {healed, dead}
        assert all("errors" not in j and "result" not in j for j in listed)
        assert all(j["started_at"] for j in listed)
        table = runner.invoke(cli, ["jobs"], env=env).output
        assert "Traceback" not in table and "KeyError: 'missing'" in table
    finally:
        asyncio.run(_drop(url))


async def test_get_job_answers_the_result_and_errors_history(app: Forebay) -> None:
    _declare(app)
    healed = await app.enqueue("docs", {"n": 1})
    dead = await app.enqueue("docs", {"always_fails": True})
    await drain(app)
    api = create_app(app, ServiceSettings(workers=False))
    transport = httpx.ASGITransport(api)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        done = (await client.get(f"/v1/jobs/{healed.id}")).json()
        assert done["state"] == "completed" and done["result"] == {"rows": 3, "name": "café"}
        assert done["error"] is None and done["error_type"] is None
        assert done["started_at"] is not None
        [entry] = done["errors"]
        assert entry["attempt"] == 1 and entry["type"] == "KeyError"
        assert entry["message"] == "KeyError: 'missing'"
        assert f"line {PARSE_LINE}, in _parse" in entry["traceback"]

        died = (await client.get(f"/v1/jobs/{dead.id}")).json()
        assert died["state"] == JobState.DEAD and died["result"] is None
        assert [e["attempt"] for e in died["errors"]] == [1, 2]

        page = (await client.get("/v1/jobs")).json()
        assert {j["id"] for j in page["jobs"]} == {healed.id, dead.id}
        assert all("errors" not in j and "result" not in j for j in page["jobs"])
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
        assert {"result", "errors", "started_at"} <= set(schema["JobDetailOut"]["properties"])
        assert "errors" not in schema["JobOut"]["properties"]
