"""A running job whose lease expired is shown as *stalled* by ``forebay jobs``, ``forebay job``,
``forebay stats`` and the HTTP routes, on every backend; its stored state stays ``running``."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from forebay import Forebay
from forebay.cli import cli
from forebay.testing import isolated_store
from tests.contract.test_backend import new
from tests.integration.test_http import serving


async def _stall_one(app: Forebay) -> tuple[int, int]:
    """Two running jobs on ``intake``: one whose lease already expired, one held for an hour."""
    backend = await app.open()
    await backend.enqueue([new("intake"), new("intake")])
    [gone] = await backend.lease(queue="intake", limit=1, worker_id="gone", lease_s=0.001)
    [alive] = await backend.lease(queue="intake", limit=1, worker_id="alive", lease_s=3600)
    return gone.id, alive.id


async def test_http_shows_stalled_jobs_and_counts(app: Forebay) -> None:
    stalled, running = await _stall_one(app)
    async with serving(app) as client:
        job = (await client.get(f"/v1/jobs/{stalled}")).json()
        assert (job["state"], job["stalled"]) == ("running", True)
        assert (await client.get(f"/v1/jobs/{running}")).json()["stalled"] is False
        listed = (await client.get("/v1/jobs", params={"queue": "intake"})).json()["jobs"]
        assert {j["id"]: j["stalled"] for j in listed} == {stalled: True, running: False}
        (queue,) = (await client.get("/v1/queues")).json()["queues"]
        assert (queue["running"], queue["stalled"]) == (2, 1)


def test_cli_shows_stalled_jobs_and_counts(url: str) -> None:
    async def setup() -> tuple[int, int]:
        async with Forebay(url) as app:
            return await _stall_one(app)

    stalled, running = asyncio.run(setup())
    run = CliRunner().invoke
    try:
        table = run(cli, ["jobs", "--url", url]).stdout.splitlines()
        states = {line.split()[0]: line.split()[2] for line in table[1:] if line.strip()}
        assert states == {str(stalled): "stalled", str(running): "running"}
        detail = run(cli, ["job", str(stalled), "--url", url]).stdout
        assert "stalled (running, but its lease expired" in detail
        assert "stalled" not in run(cli, ["job", str(running), "--url", url]).stdout
        shown = json.loads(run(cli, ["job", str(stalled), "--url", url, "--json"]).stdout)
        assert (shown["state"], shown["stalled"]) == ("running", True)
        (counts,) = json.loads(run(cli, ["stats", "--url", url, "--json"]).stdout)
        assert (counts["running"], counts["stalled"]) == (2, 1)
        header, row = run(cli, ["stats", "--url", url]).stdout.splitlines()[:2]
        assert dict(zip(header.split(), row.split(), strict=False))["stalled"] == "1"
    finally:

        async def drop() -> None:
            async with isolated_store(url):
                pass  # dropped on the way out

        asyncio.run(drop())
