"""The dashboard at ``/`` in a real headless Chromium, against ``forebay serve`` as a subprocess.

* the queues table shows the counts per state, and a job looked up by id shows its state;
* a queued job is cancelled from the page;
* dead letters are paged, replayed one by one, as shown, and as filtered (after a dry run);
* markup in payloads, keys and errors is shown as text;
* a job shows its result and the errors of its failed attempts, each traceback in a scrollable
  block, and a job that recovered does not show its old error as its state;
* with API tokens the page asks for one, keeps it in the tab, and shows a missing scope; when
  the service goes away the page says so.

The tests without tokens share one service; each uses its own queues.

The browser is Chromium driven by Playwright (``FOREBAY_TEST_CHROMIUM`` points to another
executable than /usr/bin/chromium). Without either, the tests skip on a laptop and fail in CI.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_serve import Server, wait_until
from tests.acceptance.test_serve import serve as serve_app

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the browser fixture says what is missing (skip locally, fail in CI)
    sync_playwright = None

CHROMIUM = os.environ.get("FOREBAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

APP = textwrap.dedent(
    """
    from pathlib import Path
    from forebay import Backoff, Forebay, PermanentError

    app = Forebay()

    def parse(payload):
        return payload["missing"]

    @app.handler("diagnosed", max_attempts=2, backoff=Backoff(base_s=0, jitter=False))
    async def diagnosed(job):
        if job.attempt == 1 or job.payload.get("always_fails"):
            parse(job.payload)
        return {"rows": job.payload["n"], "note": "<b>kept as text</b>"}

    async def ingest(job):
        payload = job.payload if isinstance(job.payload, dict) else {}
        if "poison" in payload and not Path(f"healed-{job.queue}").exists():
            raise PermanentError(str(payload["poison"]))
        await job.progress(100, "stored")

    for name in ("documents", "letters", "markup"):
        app.handler(name, lease_s=5.0, concurrency=32)(ingest)

    app.queue("intake")  # handled elsewhere: its jobs stay queued here
    """
)

READER = "reader-token-1234"
ADMIN = "admin-token-5678"


# -- fixtures -----------------------------------------------------------------------------------
def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the dashboard tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no Chromium at {CHROMIUM} (set FOREBAY_TEST_CHROMIUM)")
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def shared(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One open service (no API tokens) for the tests that do not stop it (after the browser:
    without one, nothing is started)."""
    with serve(tmp_path_factory.mktemp("dashboard")) as server:
        yield server


@contextmanager
def serve(tmp_path: Path, *, tokens: str | None = None) -> Iterator[Server]:
    env = {} if tokens is None else {"FOREBAY_API_TOKENS": tokens}
    with serve_app(tmp_path, env=env, app=APP) as server:
        yield server


# -- helpers ------------------------------------------------------------------------------------
def enqueue(
    server: Server, queue: str, jobs: list[dict[str, Any]], token: str = ADMIN
) -> list[int]:
    answer = httpx.post(
        f"{server.base}/v1/queues/{queue}/jobs",
        json=jobs,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    return [job["id"] for job in answer.json()]


def job_state(server: Server, job_id: int, token: str = ADMIN) -> str:
    answer = httpx.get(
        f"{server.base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["state"])


def wait_for_states(server: Server, ids: list[int], state: str) -> None:
    wait_until(
        lambda: all(job_state(server, i) == state for i in ids),
        30,
        f"jobs {ids} to be {state}",
        server,
    )


def queue_counts(server: Server, queue: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.base}/v1/queues", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    (counts,) = [q for q in answer.json()["queues"] if q["queue"] == queue]
    return dict(counts)


def wait_for_counts(server: Server, queue: str, **expected: int) -> None:
    wait_until(
        lambda: expected.items() <= queue_counts(server, queue).items(),
        30,
        f"{queue} to have {expected}",
        server,
    )


def cell(page: Page, queue: str, column: str) -> Any:
    return page.locator(f'#queues-body tr[data-queue="{queue}"] [data-col="{column}"]')


def look_up(page: Page, job_id: int) -> None:
    page.fill("#job-id", str(job_id))
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-field-id")).to_have_text(str(job_id))


# -- tests --------------------------------------------------------------------------------------
def test_queue_counts_job_lookup_and_cancel(shared: Server, page: Page) -> None:
    server = shared
    done = enqueue(server, "documents", [{"payload": {"n": 1}}, {"payload": {"n": 2}}])
    (dead,) = enqueue(server, "documents", [{"payload": {"poison": "cannot parse"}}])
    waiting = enqueue(
        server, "intake", [{"payload": 1}, {"payload": 2}, {"payload": 3, "delay_s": 3600}]
    )
    wait_for_counts(server, "documents", completed=2, dead=1)

    page.goto(server.base + "/")
    expect(page).to_have_title("forebay")
    expect(page.locator("#health")).to_have_text("ready")
    expect(page.locator("#health-detail")).to_have_text("backend reachable · workers fresh")
    expect(cell(page, "documents", "completed")).to_have_text("2")
    expect(cell(page, "documents", "dead")).to_have_text("1")
    expect(cell(page, "documents", "queued")).to_have_text("0")
    expect(cell(page, "intake", "queued")).to_have_text("3")
    expect(cell(page, "intake", "scheduled")).to_have_text("1")
    expect(cell(page, "intake", "oldest_queued_age_s")).to_have_text(re.compile(r"^\d+\.\d s$"))

    recent = page.locator("#recent-body tr")
    expect(recent.first).to_have_attribute("data-job-id", str(waiting[-1]))  # newest first
    finished = page.locator(f'#recent-body tr[data-job-id="{done[0]}"] td')
    expect(finished.nth(2)).to_have_text("completed")
    expect(finished.nth(4)).to_have_text("100% stored")
    expect(page.locator(f'#recent-body tr[data-job-id="{dead}"] td').nth(2)).to_have_text("dead")
    page.locator(f'#recent-body tr[data-job-id="{done[0]}"] button.link').click()
    expect(page.locator("#job-id")).to_have_value(str(done[0]))
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#job-progress")).to_have_text("100% — stored")

    look_up(page, done[0])
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#job-progress")).to_have_text("100% — stored")
    expect(page.locator("#job-cancel")).to_be_hidden()

    look_up(page, dead)
    expect(page.locator("#job-state")).to_have_text("dead")
    expect(page.locator("#job-error-text")).to_have_text("PermanentError: cannot parse")

    look_up(page, waiting[0])
    expect(page.locator("#job-state")).to_have_text("queued")
    page.click("#job-cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    expect(page.locator("#job-status")).to_have_text(f"Job {waiting[0]} cancelled.")
    expect(cell(page, "intake", "cancelled")).to_have_text("1")
    expect(cell(page, "intake", "queued")).to_have_text("2")
    assert job_state(server, waiting[0]) == "cancelled"

    page.fill("#job-id", "999999")
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-error")).to_have_text(
        "no job with id 999999 (it may have been pruned) (HTTP 404 job_not_found)"
    )
    expect(page.locator("#job-view")).to_be_hidden()


def test_a_job_shows_its_result_and_the_tracebacks_of_its_attempts(
    shared: Server, page: Page
) -> None:
    server = shared
    healed, dead = enqueue(
        server, "diagnosed", [{"payload": {"n": 5}}, {"payload": {"n": 1, "always_fails": True}}]
    )
    wait_for_counts(server, "diagnosed", completed=1, dead=1)
    page.goto(server.base + "/")

    look_up(page, healed)
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#job-error-text")).to_have_text("—")  # recovered: history only
    expect(page.locator("#job-started")).not_to_have_text("—")
    expect(page.locator("#job-result")).to_contain_text('"rows": 5')
    expect(page.locator("#job-result")).to_contain_text('"note": "<b>kept as text</b>"')
    attempts = page.locator("#job-errors li")
    expect(attempts).to_have_count(1)
    expect(attempts.first.locator(".attempt-head")).to_contain_text("attempt 1")
    expect(attempts.first.locator(".attempt-head")).to_contain_text("KeyError: 'missing'")
    traceback = attempts.first.locator("pre.traceback")
    expect(traceback).to_contain_text("line 8, in parse")
    expect(traceback).to_contain_text("KeyError: 'missing'")
    assert traceback.evaluate("node => getComputedStyle(node).overflowY") == "auto"

    look_up(page, dead)
    expect(page.locator("#job-state")).to_have_text("dead")
    expect(page.locator("#job-error-text")).to_have_text("KeyError: 'missing'")
    expect(page.locator("#job-result-section")).to_be_hidden()
    expect(page.locator("#job-errors li")).to_have_count(2)
    expect(page.locator("#job-errors pre.traceback")).to_have_count(2)

    look_up(page, enqueue(server, "intake", [{"payload": 9}])[0])  # no attempt yet
    expect(page.locator("#job-errors-section")).to_be_hidden()
    expect(page.locator("#job-started")).to_have_text("—")


def test_dead_letters_are_paged_and_replayed(shared: Server, page: Page) -> None:
    server = shared
    ids = enqueue(server, "letters", [{"payload": {"poison": f"bad {n}"}} for n in range(52)])
    wait_for_counts(server, "letters", dead=52)
    rows = page.locator("#dead-body tr")

    page.goto(server.base + "/")
    page.select_option("#dead-queue", "letters")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-job-id", str(ids[-1]))  # newest first
    expect(rows.first.locator(".error-text")).to_have_text("PermanentError: bad 51")
    page.click("#dead-older")
    expect(rows).to_have_count(2)
    expect(page.locator("#dead-page")).to_have_text("page 2")
    expect(page.locator("#dead-older")).to_be_disabled()
    page.click("#dead-newer")
    expect(rows).to_have_count(50)

    (server.log.parent / "healed-letters").touch()  # from now on, replayed jobs succeed
    newest = ids[-1]
    page.locator(f'#dead-body tr[data-job-id="{newest}"] button.replay').click()
    expect(page.locator("#dead-status")).to_have_text(f"Job {newest} replayed.")
    expect(page.locator(f'#dead-body tr[data-job-id="{newest}"]')).to_have_count(0)
    expect(rows).to_have_count(50)
    expect(cell(page, "letters", "dead")).to_have_text("51")
    wait_for_states(server, [newest], "completed")

    page.click("#replay-shown")
    expect(page.locator("#dead-question")).to_have_text("Replay 50 dead jobs shown?")
    assert queue_counts(server, "letters")["dead"] == 51  # the question came from a dry run
    page.click("#dead-yes")
    expect(page.locator("#dead-status")).to_have_text("Replayed 50 jobs.")
    expect(rows).to_have_count(1)

    page.click("#replay-filtered")
    expect(page.locator("#dead-question")).to_have_text("Replay 1 dead job matching the filter?")
    page.click("#dead-no")
    expect(page.locator("#dead-status")).to_have_text("Nothing replayed.")
    assert queue_counts(server, "letters")["dead"] == 1
    page.click("#replay-filtered")
    page.click("#dead-yes")
    expect(page.locator("#dead-status")).to_have_text("Replayed 1 job.")
    expect(page.locator("#dead-empty")).to_be_visible()
    expect(cell(page, "letters", "dead")).to_have_text("0")
    wait_for_counts(server, "letters", completed=52)
    expect(cell(page, "letters", "completed")).to_have_text("52")  # at the next refresh

    page.click("#replay-filtered")
    expect(page.locator("#dead-status")).to_have_text("No dead jobs match: nothing to replay.")


def test_markup_from_the_api_is_shown_as_text(shared: Server, page: Page) -> None:
    server = shared
    markup = '<img src=x onerror="window.__pwned = 1">'
    script = "<script>window.__pwned = 2</script>"
    (job,) = enqueue(server, "markup", [{"payload": {"poison": markup}, "key": script}])
    wait_for_states(server, [job], "dead")

    page.goto(server.base + "/")
    expect(page.locator(f'#dead-body tr[data-job-id="{job}"] .error-text')).to_have_text(
        f"PermanentError: {markup}"
    )
    look_up(page, job)
    expect(page.locator("#job-error-text")).to_have_text(f"PermanentError: {markup}")
    expect(page.locator("#job-payload")).to_contain_text(markup.replace('"', '\\"'))
    expect(page.locator("#job-fields")).to_contain_text(script)

    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_with_api_tokens_the_page_asks_for_one(tmp_path: Path, page: Page) -> None:
    with serve(tmp_path, tokens=f"{READER}:read,{ADMIN}:admin") as server:
        html = httpx.get(f"{server.base}/")
        assert html.status_code == 200
        assert html.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in html.headers["content-security-policy"]
        assert html.headers["cache-control"] == "no-cache"
        head = httpx.head(f"{server.base}/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(html.content))
        script = httpx.get(f"{server.base}/dashboard/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["cache-control"] == "public, max-age=86400"
        again = httpx.get(
            f"{server.base}/dashboard/app.js", headers={"If-None-Match": script.headers["etag"]}
        )
        assert again.status_code == 304
        style = httpx.get(f"{server.base}/dashboard/style.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        missing = httpx.get(f"{server.base}/dashboard/secret.py")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found"
        assert httpx.get(f"{server.base}/v1/queues").status_code == 401
        paths = httpx.get(f"{server.base}/openapi.json").json()["paths"]
        assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]

        (job,) = enqueue(server, "intake", [{"payload": {"n": 1}}])

        page.goto(server.base + "/")
        expect(page.locator("#token-panel")).to_be_visible()
        expect(page.locator("#token-message")).to_contain_text("needs an API token")
        expect(page.locator("#queues-error")).to_contain_text("HTTP 401 unauthorized")
        expect(page.locator("#health")).to_have_text("ready")  # probes need no token

        page.fill("#token-input", "not-a-token")
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-message")).to_have_text("unknown API token")

        page.fill("#token-input", READER)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-panel")).to_be_hidden()
        expect(cell(page, "intake", "queued")).to_have_text("1")
        expect(page.locator("#queues-error")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('forebay.token')") == READER

        look_up(page, job)
        page.click("#job-cancel")
        expect(page.locator("#job-error")).to_have_text(
            "this API token lacks the 'admin' scope (it has: read) (HTTP 403 forbidden)"
        )
        assert job_state(server, job) == "queued"

        page.reload()  # the token stays with the tab
        expect(cell(page, "intake", "queued")).to_have_text("1")
        expect(page.locator("#token-panel")).to_be_hidden()

        page.click("#token-change")
        page.fill("#token-input", ADMIN)
        page.click("#token-form button[type=submit]")
        look_up(page, job)
        page.click("#job-cancel")
        expect(page.locator("#job-state")).to_have_text("cancelled")
        assert job_state(server, job) == "cancelled"

        server.proc.kill()
        server.proc.wait()
        page.fill("#job-id", str(job))
        page.click("#job-form button[type=submit]")
        expect(page.locator("#job-error")).to_have_text("the forebay service did not answer")
        expect(page.locator("#offline")).to_contain_text("Cannot reach the forebay service")


def test_a_job_whose_lease_expired_shows_as_stalled(page: Page, tmp_path: Path) -> None:
    """Without workers in the service nothing reclaims it: the job stays stalled."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from forebay import Forebay

    with serve_app(tmp_path, env={"FOREBAY_WORKERS": "false"}, app=APP) as server:
        enqueue(server, "intake", [{"payload": 1}, {"payload": 2}], token=READER)

        async def lease_both() -> tuple[int, int]:
            async with Forebay(f"sqlite:///{server.db}") as app:
                lease = app.backend.lease
                [gone] = await lease(queue="intake", limit=1, worker_id="gone", lease_s=0.001)
                [alive] = await lease(queue="intake", limit=1, worker_id="alive", lease_s=3600)
                return gone.id, alive.id

        with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
            stalled, running = thread.submit(asyncio.run, lease_both()).result()
        shown = httpx.get(f"{server.base}/v1/jobs/{stalled}").json()
        assert (shown["state"], shown["stalled"]) == ("running", True)
        assert httpx.get(f"{server.base}/v1/jobs/{running}").json()["stalled"] is False
        counts = queue_counts(server, "intake")
        assert (counts["running"], counts["stalled"]) == (2, 1)

        page.goto(server.base + "/")
        expect(cell(page, "intake", "running")).to_have_text("2")
        expect(cell(page, "intake", "stalled")).to_have_text("1")
        row = page.locator(f'#recent-body tr[data-job-id="{stalled}"] .state')
        expect(row).to_have_text("stalled")
        expect(page.locator(f'#recent-body tr[data-job-id="{running}"] .state')).to_have_text(
            "running"
        )
        look_up(page, stalled)
        expect(page.locator("#job-state")).to_have_text("stalled")


def test_api_docs_render_offline(shared: Server, page: Page) -> None:
    """/docs shows the operations with every request to another host refused: its script and
    style come from the service itself."""
    local = re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?/")
    outside: list[str] = []

    def refuse_outside(route: Any) -> None:
        outside.append(route.request.url)
        route.abort()

    page.route(lambda url: not local.match(url), refuse_outside)
    page.goto(shared.base + "/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    expect(
        page.locator('.opblock-summary-path[data-path="/v1/queues/{queue}/jobs"]')
    ).to_have_count(1)
    expect(page.locator(".information-container .title")).to_contain_text("forebay")
    assert outside == [], outside  # nothing was even asked of another host
