"""Web pages attacking a token-less ``forebay serve``, in a real headless Chromium.

* cross-site requests: a page on another origin posts a plain-text form and ``no-cors``
  fetches (the requests a page may send without a CORS preflight) to enqueue jobs and purge
  the dead letters: nothing changes;
* DNS rebinding: the browser resolves a foreign name to 127.0.0.1 (as a rebinding page makes
  it do); what it asks under that name, the service refuses, so no payload is read.

The dashboard's own same-origin requests keep working (tests/acceptance/test_dashboard.py).
"""

from __future__ import annotations

import http.server
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.acceptance.test_dashboard import CHROMIUM, CHROMIUM_ARGS, browser  # noqa: F401
from tests.acceptance.test_serve import Server, serve, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

APP = textwrap.dedent(
    """
    from forebay import Forebay, PermanentError

    app = Forebay()

    @app.handler("documents", lease_s=5.0)
    async def ingest(job):
        if job.payload == "poison":
            raise PermanentError("never works")
    """
)

ATTACK = """<!doctype html>
<form id="form" method="POST" action="{base}/v1/queues/documents/jobs" enctype="text/plain"
      target="sink">
  <input name='{{"payload": {{"from": "form' value='"}}}}'>
</form>
<iframe name="sink"></iframe>
<script>
  const plain = {{"Content-Type": "text/plain"}};
  fetch("{base}/v1/queues/documents/jobs", {{method: "POST", mode: "no-cors", headers: plain,
        body: '{{"payload": {{"from": "fetch"}}}}'}});
  fetch("{base}/v1/dead/purge", {{method: "POST", mode: "no-cors"}});
  fetch("{base}/v1/dead/purge", {{method: "POST", mode: "no-cors", headers: plain, body: "{{}}"}});
  document.getElementById("form").submit();
</script>
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path, "--log-format", "json", app=APP) as server:
        yield server


@pytest.fixture
def attacker(service: Server) -> Iterator[str]:
    """An origin of its own (another port) serving the attacking page at ``/``."""
    page = ATTACK.format(base=service.base).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as site:
        thread = threading.Thread(target=site.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{site.server_address[1]}/"
        finally:
            site.shutdown()
            thread.join()


def jobs(server: Server, state: str) -> list[object]:
    answer = httpx.get(f"{server.base}/v1/jobs", params={"state": state}, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["jobs"])


def test_a_cross_site_page_cannot_enqueue_or_purge(
    browser: Browser,  # noqa: F811
    service: Server,
    attacker: str,
) -> None:
    poison = httpx.post(f"{service.base}/v1/queues/documents/jobs", json={"payload": "poison"})
    assert poison.status_code == 201, poison.text
    wait_until(lambda: len(jobs(service, "dead")) == 1, 30, "the poison job to die", service)

    context = browser.new_context()
    try:
        page = context.new_page()
        answered: list[str] = []
        page.on(
            "response",
            lambda r: answered.append(r.url) if r.url.startswith(service.base) else None,
        )
        page.goto(attacker)
        wait_for(page, lambda: len(answered) >= 4, "the page's four requests to be answered")
    finally:
        context.close()
    assert len(jobs(service, "dead")) == 1
    assert len(jobs(service, "completed")) + len(jobs(service, "queued")) == 0


def test_a_rebound_name_reads_nothing(browser: Browser, service: Server) -> None:  # noqa: F811
    secret = httpx.post(
        f"{service.base}/v1/queues/documents/jobs", json={"payload": {"secret": "s3cr3t"}}
    )
    assert secret.status_code == 201
    port = service.base.rsplit(":", 1)[1]
    rules = "--host-resolver-rules=MAP rebound.example 127.0.0.1"
    # A browser of its own: the name's resolution is set when a browser starts.
    chromium = browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rules])
    try:
        page = chromium.new_page()
        for path in ("/v1/jobs", f"/v1/jobs/{secret.json()['id']}", "/"):
            answer = page.goto(f"http://rebound.example:{port}{path}")
            assert answer is not None and answer.status == 403, path
            assert "s3cr3t" not in page.content()
    finally:
        chromium.close()


def wait_for(page: Page, condition: object, what: str, timeout_s: float = 10) -> None:
    """Let the page's events arrive until ``condition()`` holds (bounded)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)  # hands control to Playwright, which delivers the events
