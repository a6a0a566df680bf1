"""The dashboard's Runs panel and the ``waiting`` state, in a real headless Chromium, against
``forebay serve`` (whose workers run the jobs) as a subprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.test_dashboard import browser, cell, look_up, page  # noqa: F401  (fixtures)
from tests.acceptance.test_serve import Server, serve, wait_until

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the browser fixture says what is missing (skip locally, fail in CI)
    Page = expect = None  # type: ignore[assignment,misc]

APP = textwrap.dedent(
    """
    from forebay import Forebay

    app = Forebay()

    @app.handler("documents")
    async def ingest(job):
        await job.progress(100, "stored")

    app.queue("intake")  # handled elsewhere: its jobs stay queued (or waiting) here
    """
)


def post(server: Server, path: str, body: Any = None) -> Any:
    answer = httpx.post(f"{server.base}{path}", json=body if body is not None else {})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def run_state(server: Server, run_id: str) -> str:
    return str(httpx.get(f"{server.base}/v1/runs/{run_id}").json()["state"])


def test_the_runs_panel_shows_progress_counts_and_seals(tmp_path: Path, page: Page) -> None:  # noqa: F811
    with serve(tmp_path, app=APP) as server:
        done = post(server, "/v1/runs", {"name": "nightly crawl", "meta": {"crawl": 7}})
        post(
            server,
            "/v1/queues/documents/jobs",
            [{"payload": i, "run": done["id"]} for i in range(3)],
        )
        post(server, f"/v1/runs/{done['id']}/seal")
        wait_until(lambda: run_state(server, done["id"]) == "completed", 30, "the run", server)

        going = post(server, "/v1/runs", {"name": "import"})
        [parent] = post(server, "/v1/queues/intake/jobs", [{"payload": 1, "run": going["id"]}])
        [child] = post(
            server,
            "/v1/queues/intake/jobs",
            [{"payload": 2, "run": going["id"], "after": [parent["id"]]}],
        )
        assert child["state"] == "waiting"

        page.goto(server.base + "/")
        finished = page.locator(f'#runs-body tr[data-run-id="{done["id"]}"]')
        expect(finished.locator("th")).to_have_text("nightly crawl")
        expect(finished.locator("td.state")).to_have_text("completed")
        expect(finished.locator('[data-col="progress"]')).to_have_text("3/3")
        expect(finished.locator('[data-col="progress"] progress')).to_have_attribute("value", "3")
        expect(finished.locator('[data-col="completed"]')).to_have_text("3")

        open_run = page.locator(f'#runs-body tr[data-run-id="{going["id"]}"]')
        expect(open_run.locator("td.state")).to_have_text("open")
        expect(open_run.locator('[data-col="progress"]')).to_have_text("0/2")
        expect(open_run.locator('[data-col="waiting"]')).to_have_text("1")
        expect(open_run.locator('[data-col="queued"]')).to_have_text("1")
        expect(page.locator("#runs-body tr").first).to_have_attribute("data-run-id", going["id"])

        expect(cell(page, "intake", "waiting")).to_have_text("1")
        expect(cell(page, "intake", "queued")).to_have_text("1")

        open_run.locator("th button").click()
        expect(page.locator("#run-title")).to_have_text("Run import")
        expect(page.locator("#run-id")).to_have_text(going["id"])
        expect(page.locator("#run-state")).to_have_text("open")
        expect(page.locator("#run-count-waiting")).to_have_text("1")
        expect(page.locator("#run-count-total")).to_have_text("2")
        expect(page.locator("#run-meta-section")).to_be_hidden()
        page.click("#run-seal")
        expect(page.locator("#run-status")).to_have_text("Run import sealed.")
        expect(page.locator("#run-state")).to_have_text("sealed")
        expect(page.locator("#run-seal")).to_be_hidden()
        assert run_state(server, going["id"]) == "sealed"
        expect(open_run.locator("td.state")).to_have_text("sealed")

        finished.locator("th button").click()
        expect(page.locator("#run-finished")).to_have_text("3 of 3")
        expect(page.locator("#run-meta")).to_contain_text('"crawl": 7')

        page.select_option("#runs-state", "completed")
        expect(page.locator("#runs-body tr")).to_have_count(1)
        expect(page.locator("#runs-body tr")).to_have_attribute("data-run-id", done["id"])

        look_up(page, child["id"])
        expect(page.locator("#job-state")).to_have_text("waiting")
        expect(page.locator("#job-after")).to_have_text(str(parent["id"]))
        expect(page.locator("#job-run")).to_have_text(going["id"])
        page.click("#job-cancel")
        expect(page.locator("#job-state")).to_have_text("cancelled")
        expect(cell(page, "intake", "waiting")).to_have_text("0")
