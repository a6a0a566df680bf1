"""The dashboard's queue controls in a real headless Chromium, against ``forebay serve``: a
paused queue shows a badge and a Resume button, its jobs wait (enqueues are accepted), and
resuming it from the page lets the service's workers run them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.test_dashboard import (  # noqa: F401
    browser,
    enqueue,
    expect,
    page,
    queue_counts,
    serve,
    wait_for_counts,
)
from tests.acceptance.test_serve import Server

try:
    from playwright.sync_api import Page
except ImportError:  # the browser fixture says what is missing
    Page = object  # type: ignore[assignment,misc]


@pytest.fixture
def server(browser: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    with serve(tmp_path_factory.mktemp("dashboard-controls")) as running:
        yield running


def test_pause_and_resume_a_queue_from_the_page(server: Server, page: Page) -> None:  # noqa: F811
    row = page.locator('#queues-body tr[data-queue="markup"]')
    enqueue(server, "markup", [{"payload": 1}])
    wait_for_counts(server, "markup", completed=1)

    page.goto(server.base + "/")
    expect(row.locator(".badge.paused")).to_have_count(0)
    row.locator("button.pause-toggle").click()
    expect(row.locator(".badge.paused")).to_have_text("paused")
    expect(row.locator("button.pause-toggle")).to_have_text("Resume")
    assert queue_counts(server, "markup")["paused"] is True

    ids = enqueue(server, "markup", [{"payload": n} for n in range(3)])  # still accepted
    expect(row.locator('[data-col="queued"]')).to_have_text("3")
    assert len(ids) == 3

    row.locator("button.pause-toggle").click()
    expect(row.locator(".badge.paused")).to_have_count(0)
    expect(row.locator("button.pause-toggle")).to_have_text("Pause")
    wait_for_counts(server, "markup", completed=4, queued=0)
    expect(row.locator('[data-col="completed"]')).to_have_text("4")
