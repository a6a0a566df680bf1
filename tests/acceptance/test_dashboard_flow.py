"""The dashboard's queues panel shows each queue's flow limits, in a real headless Chromium
against ``forebay serve``: the limits in one line (as ``forebay stats`` writes them), the
running jobs against the queue's cap (``2/2``), and how many due jobs the limits hold back
(throttled); a queue without limits shows its plain running count and a dash."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.acceptance.test_dashboard import (  # noqa: F401  (fixtures)
    browser,
    cell,
    enqueue,
    expect,
    page,
    wait_for_counts,
)
from tests.acceptance.test_serve import serve as serve_app

try:
    from playwright.sync_api import Page
except ImportError:  # the browser fixture says what is missing
    Page = object  # type: ignore[assignment,misc]

APP = textwrap.dedent(
    """
    import asyncio
    from pathlib import Path
    from forebay import Forebay

    app = Forebay()

    async def hold(job):
        # Runs until the test creates the file "release" (or the service stops).
        while not Path("release").exists():
            await asyncio.sleep(0.02)

    app.handler(
        "limited",
        concurrency=8,
        global_concurrency=2,
        rate_limit="100/m",
        fair_key="payload.customer",
        lease_s=30.0,
    )(hold)
    app.handler("plain", concurrency=8, lease_s=30.0)(hold)
    """
)


def test_the_queue_row_shows_limits_running_against_the_cap_and_throttled(
    browser: object,  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    with serve_app(tmp_path, app=APP) as server:
        customers = ["acme", "globex"]
        enqueue(server, "limited", [{"payload": {"customer": customers[n % 2]}} for n in range(5)])
        enqueue(server, "plain", [{"payload": {"n": n}} for n in range(3)])
        wait_for_counts(server, "limited", running=2, queued=3, throttled=3)
        wait_for_counts(server, "plain", running=3, throttled=0)

        page.goto(server.base + "/")
        expect(cell(page, "limited", "running")).to_have_text("2/2")
        expect(cell(page, "limited", "throttled")).to_have_text("3")
        expect(cell(page, "limited", "limits")).to_have_text("rate 100/m, cap 2, fair")
        expect(cell(page, "limited", "queued")).to_have_text("3")
        expect(cell(page, "plain", "running")).to_have_text("3")
        expect(cell(page, "plain", "throttled")).to_have_text("0")
        expect(cell(page, "plain", "limits")).to_have_text("—")

        (tmp_path / "release").touch()  # every job may finish now, two at a time
        wait_for_counts(server, "limited", completed=5)
        expect(cell(page, "limited", "running")).to_have_text("0/2")
        expect(cell(page, "limited", "throttled")).to_have_text("0")
