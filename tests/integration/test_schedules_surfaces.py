"""Schedules through the CLI (``forebay schedules``), HTTP (``GET /v1/schedules``) and the
service's own workers (``forebay serve`` fires them), on every backend."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from forebay import Forebay, Job, JobFilter
from forebay.cli import cli
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from forebay.testing import until
from tests.integration.test_http import serving


def declare(app: Forebay) -> None:
    app.schedule("poll", every=timedelta(seconds=1), payload={"source": "feed"})
    app.schedule("reports", cron="0 3 * * *", tz="Europe/Berlin", name="nightly", catch_up=2)


async def _save(url: str) -> None:
    app = Forebay(url)
    declare(app)
    async with app:
        await app.save_schedules()


def test_the_cli_lists_and_deletes_schedules(url: str) -> None:
    runner = CliRunner()
    empty = runner.invoke(cli, ["schedules", "--url", url])
    assert empty.exit_code == 0 and "no schedules yet" in empty.output

    asyncio.run(_save(url))
    table = runner.invoke(cli, ["schedules", "--url", url], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == [
        "name",
        "queue",
        "cron",
        "/",
        "every",
        "tz",
        "next",
        "run",
        "last",
        "run",
    ]
    assert lines[1].split()[:8] == ["nightly", "reports", "0", "3", "*", "*", "*", "Europe/Berlin"]
    assert lines[2].split()[:5] == ["poll", "poll", "every", "1s", "UTC"]
    assert lines[1].rstrip().endswith("never")

    listed = runner.invoke(cli, ["schedules", "--url", url, "--json"])
    assert listed.exit_code == 0, listed.output
    nightly, poll = json.loads(listed.output)
    assert nightly["cron"] == "0 3 * * *" and nightly["every_s"] is None
    assert nightly["tz"] == "Europe/Berlin" and nightly["catch_up"] == 2
    assert nightly["next_tick"].endswith(":00:00Z")  # 03:00 in Berlin, in UTC
    assert poll["every_s"] == 1.0 and poll["payload"] == {"source": "feed"}
    assert poll["last_tick"] is None

    deleted = runner.invoke(cli, ["schedules", "delete", "poll", "--url", url])
    assert deleted.exit_code == 0 and "deleted 1 schedule(s): poll" in deleted.output
    missing = runner.invoke(cli, ["schedules", "delete", "poll", "--url", url])
    assert missing.exit_code == 1 and "no schedule named poll" in missing.output
    left = json.loads(runner.invoke(cli, ["schedules", "--url", url, "--json"]).output)
    assert [s["name"] for s in left] == ["nightly"]


async def test_http_lists_schedules_for_readers(app: Forebay) -> None:
    declare(app)
    await app.save_schedules()
    tokens = parse_api_tokens("reader:read,producer:enqueue")
    async with serving(app, ServiceSettings(workers=False, api_tokens=tokens)) as client:
        refused = await client.get("/v1/schedules")
        assert refused.status_code == 401
        wrong = await client.get("/v1/schedules", headers={"Authorization": "Bearer producer"})
        assert wrong.status_code == 403
        answer = await client.get("/v1/schedules", headers={"Authorization": "Bearer reader"})
        assert answer.status_code == 200, answer.text
        by_name = {s["name"]: s for s in answer.json()["schedules"]}
        assert sorted(by_name) == ["nightly", "poll"]
        assert by_name["poll"]["every_s"] == 1.0 and by_name["poll"]["queue"] == "poll"
        assert by_name["nightly"]["tz"] == "Europe/Berlin"
        next_tick = datetime.fromisoformat(by_name["poll"]["next_tick"])
        assert next_tick - datetime.now(UTC) <= timedelta(seconds=1)
        docs = (await client.get("/openapi.json")).json()
        assert "/v1/schedules" in docs["paths"]


async def test_the_service_workers_fire_the_apps_schedules(app: Forebay) -> None:
    """``forebay serve`` runs the app's workers, and with them the scheduler."""
    declare(app)
    handled: list[Job] = []

    @app.handler("poll")
    async def poll(job: Job) -> None:
        handled.append(job)

    async with serving(app, ServiceSettings(workers=True)):
        await until(lambda: len(handled) >= 2, timeout_s=15, what="two ticks handled")
    keys = [j.key or "" for j in handled]
    assert all(k.startswith("schedule:poll:") for k in keys) and len(set(keys)) == len(keys)
    assert all(j.payload == {"source": "feed"} for j in handled)
    stored = {s.name: s for s in await app.list_schedules()}
    assert stored["poll"].last_tick is not None
    assert stored["nightly"].last_tick is not None  # armed: fires from its next tick on
    assert len(await app.list_jobs(JobFilter(queue="reports"))) == 0
