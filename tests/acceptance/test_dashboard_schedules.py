"""The dashboard's Schedules table in a real headless Chromium, against ``forebay serve`` (whose
workers fire the schedules) as a subprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.acceptance.test_dashboard import browser, page  # noqa: F401  (fixtures)
from tests.acceptance.test_serve import serve

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the browser fixture says what is missing (skip locally, fail in CI)
    Page = expect = None  # type: ignore[assignment,misc]

APP = textwrap.dedent(
    """
    from datetime import timedelta
    from forebay import Cron, Every, Forebay

    app = Forebay()

    @app.handler("poll", schedule=Every(timedelta(seconds=1)))
    async def poll(job):
        pass

    app.schedule("reports", cron="0 3 29 2 *", tz="Europe/Berlin", name="leap-day")
    """
)


def test_the_schedules_table_shows_timing_and_runs(
    tmp_path: Path,
    page: Page,  # noqa: F811
) -> None:
    with serve(tmp_path, app=APP) as server:
        page.goto(server.base + "/")
        rows = page.locator("#schedules-body tr")
        expect(rows).to_have_count(2)
        leap = page.locator('#schedules-body tr[data-schedule="leap-day"] td')
        expect(leap.nth(0)).to_have_text("reports")
        expect(leap.nth(1)).to_have_text("0 3 29 2 *")
        expect(leap.nth(2)).to_have_text("Europe/Berlin")
        poll = page.locator('#schedules-body tr[data-schedule="poll"] td')
        expect(poll.nth(1)).to_have_text("every 1.0 s")
        # the service's workers fire it: its last run appears on a refresh
        expect(poll.nth(4)).not_to_have_text("never", timeout=15_000)
        expect(page.locator("#schedules-empty")).to_be_hidden()
