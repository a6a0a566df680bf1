"""The dashboard's fleet views and actions in a real headless Chromium, against ``forebay serve``
with API tokens, at a desktop size (1280×800) and a phone's (390×844):

* workers, with their queues and counts, stale and stopping badges, and each queue's consumers;
* the throughput chart of jobs completed and dead per minute, per queue or all;
* jobs filtered by queue, state, key and run (a run's "Show its jobs" too);
* a job's page: progress that moves while it runs, its result, a dead job's tracebacks, and
  "Run now" for a job scheduled later;
* dead letters purged after a dry run said how many;
* an action with a token that may only read asks for one that may act, then does it; the
  server refuses every action to a read token.

Every view is saved as a screenshot at both sizes into ``$FOREBAY_ARTIFACTS`` (default
``test-artifacts/dashboard``), and at each the page never scrolls sideways: wide tables scroll
in their own box. One service and one browser serve the whole module; each test uses queues of
its own (``-desktop`` / ``-phone``).
"""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from forebay import Forebay
from forebay.fleet import WorkerInfo
from tests.acceptance.test_dashboard import browser  # noqa: F401  (the module's browser)
from tests.acceptance.test_serve import Server, serve, wait_until

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # the browser fixture says what is missing (skip locally, fail in CI)
    Browser = Page = expect = None  # type: ignore[assignment,misc]

APP = textwrap.dedent(
    """
    import asyncio
    from pathlib import Path
    from forebay import Forebay, PermanentError

    app = Forebay()

    async def done(job):
        return {"stored": job.payload}

    def parse(payload):
        raise PermanentError(f"cannot parse {payload!r}")

    async def poison(job):
        parse(job.payload)

    async def stepped(job):
        for step in (1, 2, 3):
            await job.progress(step * 25, f"step {step}")
            while not Path(f"go-{job.id}-{step}").exists():  # the test says when to go on
                await asyncio.sleep(0.02)
        return {"steps": 3}

    app.queue("reports")
    app.schedule("reports", cron="0 3 * * *", tz="Europe/Berlin", name="nightly-report")

    for size in ("desktop", "phone"):
        app.handler(f"ok-{size}", concurrency=4)(done)
        app.handler(f"bad-{size}", max_attempts=1)(poison)
        app.handler(f"purge-{size}", max_attempts=1)(poison)
        app.handler(f"slow-{size}", lease_s=30.0)(stepped)
        app.queue(f"hold-{size}")  # handled elsewhere: its jobs stay queued here
        app.queue(f"remote-c-{size}")  # likewise, and no worker consumes it
        app.queue(f"listed-{size}")  # likewise: the jobs the filters find
    """
)

READER = "reader-token-1234"
ADMIN = "admin-token-5678"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
ARTIFACTS = Path(
    os.environ.get("FOREBAY_ARTIFACTS")
    or Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    tokens = f"{READER}:read,{ADMIN}:admin"
    with serve(
        tmp_path_factory.mktemp("dashboard-fleet"), env={"FOREBAY_API_TOKENS": tokens}, app=APP
    ) as running:
        yield running


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_page(browser: Browser, size: str, token: str) -> Iterator[Page]:  # noqa: F811
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    context.add_init_script(f"sessionStorage.setItem('forebay.token', {token!r})")
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def page(browser: Browser, size: str) -> Iterator[Page]:  # noqa: F811
    """A tab of ``size`` whose token is the admin's."""
    yield from open_page(browser, size, ADMIN)


@pytest.fixture
def reader_page(browser: Browser, size: str) -> Iterator[Page]:  # noqa: F811
    """A tab of ``size`` whose token may only read."""
    yield from open_page(browser, size, READER)


# -- helpers ------------------------------------------------------------------------------------
def api(server: Server, method: str, path: str, body: Any = None, token: str = ADMIN) -> Any:
    answer = httpx.request(
        method,
        f"{server.base}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def enqueue(server: Server, queue: str, jobs: list[dict[str, Any]]) -> list[int]:
    return [j["id"] for j in api(server, "POST", f"/v1/queues/{queue}/jobs", jobs)]


def counts(server: Server, queue: str) -> dict[str, Any]:
    (row,) = [q for q in api(server, "GET", "/v1/queues")["queues"] if q["queue"] == queue]
    return dict(row)


def wait_for_counts(server: Server, queue: str, **expected: int) -> None:
    wait_until(
        lambda: expected.items() <= counts(server, queue).items(),
        30,
        f"{queue} to have {expected}",
        server,
    )


def in_store(server: Server, work: Any) -> Any:
    """Run ``work(app)`` on the service's store, from a thread (Playwright's loop runs here)."""

    async def run() -> Any:
        async with Forebay(f"sqlite:///{server.db}") as app:
            return await work(app)

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


def snap(page: Page, view: str, size: str, selector: str) -> None:
    """Save the view's screenshot, after checking the page does not scroll sideways."""
    page.evaluate("document.fonts.ready")
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"{view} at {size}: the page scrolls sideways by {wide}px"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width, height = SIZES[size]
    section = page.locator(selector)
    section.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / f"{view}-{size}-{width}x{height}-screen.png")
    # The whole section, without the sticky header drawn over it.
    page.evaluate("document.querySelector('header').style.position = 'static'")
    section.screenshot(path=ARTIFACTS / f"{view}-{size}-{width}x{height}.png")
    page.evaluate("document.querySelector('header').style.position = ''")


def columns_line_up(page: Page, table: str) -> None:
    """Every row of the table has a cell under each heading."""
    headings = page.locator(f"{table} thead th").count()
    cells = page.locator(f"{table} tbody tr").evaluate_all("rows => rows.map(r => r.cells.length)")
    assert cells and set(cells) == {headings}, (table, headings, cells)


def fits_or_scrolls_inside(page: Page, table: str) -> None:
    """A table wider than its box scrolls inside the box (never the page)."""
    box = page.locator(f"{table}").locator("xpath=..")
    overflow = box.evaluate("node => getComputedStyle(node).overflowX")
    assert overflow == "auto"
    inner = box.evaluate("node => node.scrollWidth - node.clientWidth")
    page_width = page.evaluate("window.innerWidth")
    assert box.evaluate("node => node.getBoundingClientRect().right") <= page_width
    assert inner >= 0


# -- tests --------------------------------------------------------------------------------------
def test_workers_show_their_queues_counts_and_badges(server: Server, page: Page, size: str) -> None:
    now = time.time()

    def record(name: str, queues: tuple[str, ...], **fields: Any) -> WorkerInfo:
        values: dict[str, Any] = {
            "id": f"{name}-{size}",
            "host": f"host-{name}",
            "pid": 4000 + len(name),
            "queues": queues,
            "concurrency": 8,
            "version": "9.9.9",
            "started_at": datetime.fromtimestamp(now - 600, UTC),
            "last_seen": datetime.fromtimestamp(now, UTC),
            "ttl_s": 3600.0,
        }
        values.update(fields)
        return WorkerInfo(**values)

    fresh = record("fresh", (f"remote-a-{size}", f"remote-b-{size}"), running=3, completed=120)
    stale = record(
        "stale",
        (f"remote-b-{size}",),
        concurrency=2,
        last_seen=datetime.fromtimestamp(now - 2400, UTC),  # past half its hour: stale
        failed=4,
    )
    stopping = record("stopping", (f"remote-a-{size}",), concurrency=1, stopping=True)

    async def register(app: Forebay) -> None:
        await asyncio.gather(*(app.backend.save_worker(w) for w in (fresh, stale, stopping)))

    in_store(server, register)
    enqueue(server, f"remote-c-{size}", [{"payload": 1}])  # stored, and nothing consumes it

    page.goto(server.base + "/#workers")
    rows = page.locator("#workers-body tr")
    row = page.locator(f'#workers-body tr[data-worker-id="{fresh.id}"]')
    expect(row.locator(".badge")).to_have_text(["live"])
    expect(row.locator('[data-col="queues"]')).to_have_text(f"remote-a-{size}, remote-b-{size}")
    expect(row.locator('[data-col="running"]')).to_have_text("3/8")
    expect(row.locator('[data-col="completed"]')).to_have_text("120")
    expect(row.locator('[data-col="last_seen"]')).to_have_text(re.compile(r"^\d+\.\d s ago$"))
    stale_row = page.locator(f'#workers-body tr[data-worker-id="{stale.id}"]')
    expect(stale_row.locator(".badge")).to_have_text(["stale"])
    expect(stale_row.locator('[data-col="last_seen"]')).to_have_text(
        re.compile(r"^40 min \d+ s ago$")
    )
    expect(stale_row.locator('[data-col="failed"]')).to_have_text("4")
    expect(page.locator(f'#workers-body tr[data-worker-id="{stopping.id}"] .badge')).to_have_text(
        ["stopping"]
    )
    assert rows.count() >= 3
    expect(page.locator("#workers-summary")).to_contain_text("live worker")

    consumers = page.locator("#consumers-body")
    a = consumers.locator(f'tr[data-queue="remote-a-{size}"]')
    expect(a.locator('[data-col="workers"]')).to_have_text("2")
    expect(a.locator('[data-col="concurrency"]')).to_have_text("9")
    b = consumers.locator(f'tr[data-queue="remote-b-{size}"]')
    expect(b.locator('[data-col="workers"]')).to_have_text("2")
    expect(b.locator('[data-col="concurrency"]')).to_have_text("10")
    c = consumers.locator(f'tr[data-queue="remote-c-{size}"]')
    expect(c.locator('[data-col="workers"]')).to_have_text("0")
    expect(c.locator(".badge")).to_have_text("no live worker")
    fits_or_scrolls_inside(page, "#workers-table")
    columns_line_up(page, "#workers-table")
    columns_line_up(page, "#consumers-table")
    snap(page, "workers", size, "#workers")

    async def leave(app: Forebay) -> None:
        await app.backend.remove_worker(stopping.id)

    in_store(server, leave)  # a worker that stopped cleanly drops out at the next refresh
    expect(page.locator(f'#workers-body tr[data-worker-id="{stopping.id}"]')).to_have_count(0)
    expect(a.locator('[data-col="workers"]')).to_have_text("1")


def test_the_throughput_chart_counts_completed_and_dead_per_minute(
    server: Server, page: Page, size: str
) -> None:
    enqueue(server, f"ok-{size}", [{"payload": n} for n in range(3)])
    enqueue(server, f"bad-{size}", [{"payload": n} for n in range(2)])
    wait_for_counts(server, f"ok-{size}", completed=3)
    wait_for_counts(server, f"bad-{size}", dead=2)

    page.goto(server.base + "/#throughput")
    minutes = page.locator("#throughput-chart svg g.minute")
    expect(minutes).to_have_count(60)
    page.select_option("#throughput-queue", f"ok-{size}")
    expect(page.locator("#throughput-summary")).to_have_text("Last 1 hour: 3 completed, 0 dead.")
    assert chart_sum(page, "completed") == 3 and chart_sum(page, "dead") == 0
    expect(page.locator("#throughput-chart rect.completed").last).to_be_visible()
    page.select_option("#throughput-queue", f"bad-{size}")
    expect(page.locator("#throughput-summary")).to_have_text("Last 1 hour: 0 completed, 2 dead.")
    assert chart_sum(page, "completed") == 0 and chart_sum(page, "dead") == 2
    totals = page.locator(f'#throughput-totals-body tr[data-queue="bad-{size}"]')
    expect(totals.locator('[data-col="dead"]')).to_have_text("2")

    page.select_option("#throughput-window", "15")
    expect(minutes).to_have_count(15)
    page.select_option("#throughput-queue", "")
    expect(page.locator("#throughput-summary")).to_contain_text("Last 15 min:")
    page.wait_for_function(  # every queue's jobs, this test's among them
        f"""() => {{
          const minutes = [...document.querySelectorAll('#throughput-chart g.minute')];
          const sum = (name) => minutes.reduce((n, g) => n + Number(g.dataset[name]), 0);
          return sum('completed') >= 3 && sum('dead') >= 2 && {SUMMED}.test(
            document.getElementById('throughput-summary').textContent);
        }}"""
    )
    width = page.locator("#throughput-chart svg").evaluate("n => n.getBoundingClientRect().width")
    assert width <= SIZES[size][0]  # drawn to its box
    page.click("#throughput-totals-section summary")
    snap(page, "throughput", size, "#throughput")


SUMMED = r"/^Last 15 min: ([3-9]|\d\d+) completed, ([2-9]|\d\d+) dead/"


def chart_sum(page: Page, name: str) -> int:
    return int(
        page.evaluate(
            f"""[...document.querySelectorAll('#throughput-chart g.minute')]
                .reduce((n, g) => n + Number(g.dataset.{name}), 0)"""
        )
    )


def test_jobs_are_filtered_by_queue_state_key_and_run(
    server: Server, page: Page, size: str
) -> None:
    ok, hold = f"ok-{size}", f"listed-{size}"
    run = api(server, "POST", "/v1/runs", {"name": f"import {size}"})
    finished = enqueue(server, ok, [{"payload": n, "key": f"doc-{n}"} for n in range(2)])
    in_run = enqueue(server, hold, [{"payload": n, "run": run["id"]} for n in range(2)])
    alone = enqueue(server, hold, [{"payload": 9, "key": "alone"}])
    wait_until(
        lambda: all(api(server, "GET", f"/v1/jobs/{i}")["state"] == "completed" for i in finished),
        30,
        "the jobs to complete",
        server,
    )

    page.goto(server.base + "/#recent")
    rows = page.locator("#recent-body tr")
    page.select_option("#jobs-queue", hold)
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-job-id", str(alone[0]))  # newest first
    page.select_option("#jobs-state", "completed")
    expect(page.locator("#recent-empty")).to_have_text("No jobs match.")
    page.select_option("#jobs-queue", ok)
    expect(page.locator(f'#recent-body tr[data-job-id="{finished[1]}"] .state')).to_have_text(
        "completed"
    )
    page.fill("#jobs-key", "doc-1")
    page.click("#jobs-filter button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", str(finished[1]))
    expect(rows.first.locator("td.key")).to_have_text("doc-1")

    page.click("#jobs-clear")
    page.fill("#jobs-key", "doc-1")  # a key names a job of one queue: the API says so
    page.click("#jobs-filter button[type=submit]")
    expect(page.locator("#recent-error")).to_contain_text("key needs queue")
    page.fill("#jobs-key", "")
    page.fill("#jobs-run", run["id"])
    page.click("#jobs-filter button[type=submit]")
    expect(rows).to_have_count(2)
    expect(page.locator("#recent-error")).to_be_hidden()
    assert {rows.nth(i).get_attribute("data-job-id") for i in range(2)} == {str(i) for i in in_run}
    fits_or_scrolls_inside(page, "#recent-table")
    snap(page, "jobs", size, "#recent")

    # the run's page: its counts, and its jobs one click away
    page.click("#jobs-clear")
    expect(rows.first).to_be_visible()
    page.locator(f'#runs-body tr[data-run-id="{run["id"]}"] th button').click()
    expect(page.locator("#run-title")).to_have_text(f"Run import {size}")
    expect(page.locator("#run-count-queued")).to_have_text("2")
    expect(page.locator("#run-count-total")).to_have_text("2")
    run_row = page.locator(f'#runs-body tr[data-run-id="{run["id"]}"]')
    expect(run_row.locator('[data-col="queued"]')).to_have_text("2")
    expect(run_row.locator('[data-col="progress"]')).to_have_text("0/2")
    for table in ("#runs-table", "#recent-table", "#queues-table"):
        columns_line_up(page, table)
    snap(page, "runs", size, "#runs")
    page.click("#run-jobs")
    expect(page.locator("#jobs-run")).to_have_value(run["id"])
    expect(rows).to_have_count(2)


def test_a_job_page_follows_progress_and_shows_results_and_tracebacks(
    server: Server, page: Page, size: str
) -> None:
    (job,) = enqueue(server, f"slow-{size}", [{"payload": {"pages": 3}}])
    (dead,) = enqueue(server, f"bad-{size}", [{"payload": "<odd>"}])
    (later,) = enqueue(server, f"hold-{size}", [{"payload": 1, "delay_s": 3600}])
    go = server.log.parent

    page.goto(f"{server.base}/#job-{job}")  # a job's page has its own address
    expect(page.locator("#job-field-id")).to_have_text(str(job))
    expect(page.locator("#job-progress")).to_have_text("25% — step 1")
    expect(page.locator("#job-state")).to_have_text("running")
    expect(page.locator("#job-live")).to_be_visible()
    expect(page.locator("#job-progress-bar")).to_have_attribute("value", "25")
    snap(page, "job-running", size, "#job")
    for step in (1, 2):
        (go / f"go-{job}-{step}").touch()
        expected = f"{(step + 1) * 25}% — step {step + 1}"
        expect(page.locator("#job-progress")).to_have_text(expected)  # no reload: it follows
    (go / f"go-{job}-3").touch()
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#job-live")).to_be_hidden()
    expect(page.locator("#job-result")).to_contain_text('"steps": 3')
    expect(page.locator("#job-payload")).to_contain_text('"pages": 3')

    wait_until(lambda: counts(server, f"bad-{size}")["dead"] >= 1, 30, "the dead job", server)
    page.fill("#job-id", str(dead))
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-state")).to_have_text("dead")
    expect(page.locator("#job-error-text")).to_have_text("PermanentError: cannot parse '<odd>'")
    traceback = page.locator("#job-errors pre.traceback")
    expect(traceback).to_contain_text("in parse")
    expect(traceback).to_contain_text("PermanentError: cannot parse '<odd>'")
    assert traceback.evaluate("n => n.scrollWidth <= n.clientWidth + 1")  # wraps, on a phone too
    snap(page, "job-dead", size, "#job")

    page.fill("#job-id", str(later))
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-state")).to_have_text("queued")
    run_at = api(server, "GET", f"/v1/jobs/{later}")["run_at"]
    assert datetime.fromisoformat(run_at).timestamp() > time.time() + 3000
    page.click("#job-run-now")
    expect(page.locator("#job-status")).to_have_text(f"Job {later} is due now.")
    run_at = api(server, "GET", f"/v1/jobs/{later}")["run_at"]
    assert datetime.fromisoformat(run_at).timestamp() <= time.time()


def test_dead_letters_are_purged_after_a_dry_run(server: Server, page: Page, size: str) -> None:
    queue = f"purge-{size}"
    ids = enqueue(server, queue, [{"payload": n} for n in range(3)])
    wait_for_counts(server, queue, dead=3)

    page.goto(server.base + "/#dead")
    rows = page.locator("#dead-body tr")
    page.select_option("#dead-queue", queue)
    expect(rows).to_have_count(3)
    page.click("#purge-shown")
    expect(page.locator("#dead-question")).to_have_text(
        "Purge 3 dead jobs shown? They are deleted for good."
    )
    expect(page.locator("#dead-yes")).to_have_text("Purge")
    assert counts(server, queue)["dead"] == 3  # the question came from a dry run
    fits_or_scrolls_inside(page, "#dead-table")
    columns_line_up(page, "#dead-table")
    snap(page, "dead", size, "#dead")
    page.click("#dead-no")
    expect(page.locator("#dead-status")).to_have_text("Nothing purged.")
    assert counts(server, queue)["dead"] == 3

    page.click("#replay-filtered")
    expect(page.locator("#dead-question")).to_have_text("Replay 3 dead jobs matching the filter?")
    page.click("#dead-no")
    expect(page.locator("#dead-status")).to_have_text("Nothing replayed.")

    page.click("#purge-filtered")
    expect(page.locator("#dead-question")).to_have_text(
        "Purge 3 dead jobs matching the filter? They are deleted for good."
    )
    page.click("#dead-yes")
    expect(page.locator("#dead-status")).to_have_text("Purged 3 jobs.")
    expect(page.locator("#dead-empty")).to_be_visible()
    gone = httpx.get(f"{server.base}/v1/jobs/{ids[0]}", headers=ADMIN_HEADERS)
    assert gone.status_code == 404
    page.click("#purge-filtered")
    expect(page.locator("#dead-status")).to_have_text("No dead jobs match: nothing to purge.")


def test_an_action_asks_for_a_token_that_may_act(
    server: Server, reader_page: Page, size: str
) -> None:
    page = reader_page
    queue = f"hold-{size}"
    enqueue(server, queue, [{"payload": 1}])
    row = page.locator(f'#queues-body tr[data-queue="{queue}"]')

    page.goto(server.base + "/")
    expect(row.locator('[data-col="queued"]')).not_to_have_text("0")  # it may read
    row.locator("button.pause-toggle").click()
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-title")).to_have_text("A token that may act")
    expect(page.locator("#token-message")).to_have_text(
        "this API token lacks the 'admin' scope (it has: read) (HTTP 403 forbidden)"
    )
    expect(page.locator("#token-retry")).to_have_text(
        f"Give a token with the admin scope to pause queue {queue}; it is done then."
    )
    assert counts(server, queue)["paused"] is False
    snap(page, "token", size, "#token-panel")

    page.fill("#token-input", ADMIN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(row.locator(".badge.paused")).to_have_text("paused")  # done without a second click
    assert counts(server, queue)["paused"] is True
    fits_or_scrolls_inside(page, "#queues-table")
    box = page.locator("#queues-table").locator("xpath=..")
    hidden = box.evaluate("node => node.scrollWidth - node.clientWidth")
    if size == "desktop":
        assert hidden <= 0  # every column in sight on a laptop
    else:
        assert hidden > 0  # on a phone the table scrolls in its box, not the page
    snap(page, "queues", size, "#queues")
    row.locator("button.pause-toggle").click()
    expect(row.locator(".badge.paused")).to_have_count(0)
    assert counts(server, queue)["paused"] is False
    page.locator("#queues").scroll_into_view_if_needed()
    snap(page, "overview", size, "body")
    nightly = page.locator('#schedules-body tr[data-schedule="nightly-report"] td')
    expect(nightly.nth(1)).to_have_text("0 3 * * *")
    expect(nightly.nth(2)).to_have_text("Europe/Berlin")
    snap(page, "schedules", size, "#schedules")


def test_the_server_refuses_every_action_to_a_read_token(server: Server) -> None:
    (job,) = enqueue(server, "hold-desktop", [{"payload": 1, "delay_s": 3600}])
    run = api(server, "POST", "/v1/runs", {"name": "sealed by an admin only"})
    actions = [
        ("/v1/queues/hold-desktop/pause", None),
        ("/v1/queues/hold-desktop/resume", None),
        (f"/v1/jobs/{job}/cancel", None),
        (f"/v1/jobs/{job}/run-now", None),
        ("/v1/jobs/cancel", {"ids": [job]}),
        ("/v1/dead/replay", {"dry_run": True}),
        ("/v1/dead/purge", {"dry_run": True}),
        (f"/v1/runs/{run['id']}/seal", None),
    ]
    for path, body in actions:
        refused = httpx.post(
            f"{server.base}{path}", json=body, headers={"Authorization": f"Bearer {READER}"}
        )
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["type"] == "forbidden"
        anonymous = httpx.post(f"{server.base}{path}", json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)
    assert api(server, "GET", f"/v1/jobs/{job}")["state"] == "queued"
    assert api(server, "GET", f"/v1/runs/{run['id']}")["state"] == "open"
