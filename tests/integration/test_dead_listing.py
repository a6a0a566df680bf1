"""``GET /v1/dead`` and ``forebay dead ls`` list dead letters by time of death, the latest
first, on every backend, and ``before_id`` pages through them without skipping or repeating."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from forebay import Forebay, JobFilter
from forebay.cli import cli
from forebay.job import Failure
from forebay.testing import isolated_store
from tests.contract.test_backend import lease, new
from tests.integration.test_http import serving

ORDER = [3, 0, 5, 1, 4, 2]
"""The order the jobs die in, by their position in enqueue order."""


async def _die_out_of_order(app: Forebay) -> list[int]:
    backend = await app.open()
    await backend.enqueue([new("docs", {"i": i}) for i in range(len(ORDER))])
    leased = sorted(await lease(backend, "docs", limit=len(ORDER)), key=lambda j: j.id)
    died = []
    for position in ORDER:
        await backend.dead_letter([Failure(leased[position].lease, "E: x", "E")])
        died.append(leased[position].id)
    return died


async def test_http_lists_dead_by_death_and_pages(app: Forebay) -> None:
    died = await _die_out_of_order(app)
    async with serving(app) as client:
        seen: list[int] = []
        params: dict[str, int] = {"limit": 4}
        while True:
            page = (await client.get("/v1/dead", params=params)).json()
            seen += [j["id"] for j in page["jobs"]]
            if page["next_before_id"] is None:
                break
            params["before_id"] = page["next_before_id"]
        assert seen == died[::-1]
        # A cursor that is no longer a dead job (replayed since) says so.
        await app.replay(JobFilter(ids=(died[-1],)))
        gone = await client.get("/v1/dead", params={"before_id": died[-1]})
        assert gone.status_code == 400, gone.text
        assert gone.json()["error"]["type"] == "invalid_cursor"


def test_cli_dead_ls_lists_latest_death_first(url: str) -> None:
    async def setup() -> list[int]:
        async with Forebay(url) as app:
            return await _die_out_of_order(app)

    died = asyncio.run(setup())
    try:
        done = CliRunner().invoke(cli, ["dead", "ls", "--url", url, "--json"])
        assert done.exit_code == 0, done.output
        assert [j["id"] for j in json.loads(done.stdout)] == died[::-1]
        table = CliRunner().invoke(cli, ["dead", "ls", "--url", url, "-n", "2"])
        rows = [line.split()[0] for line in table.stdout.splitlines()[1:]]
        assert rows == [str(i) for i in died[::-1][:2]]
    finally:

        async def drop() -> None:
            async with isolated_store(url):
                pass  # dropped on the way out

        asyncio.run(drop())
