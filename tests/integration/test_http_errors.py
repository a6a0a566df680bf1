"""Errors that must not mislead: each is answered, counted and logged for what it is.

* a client that hangs up while sending its body is neither a bug (ERROR, status 500) nor a
  success: it is counted as 499 and logged at INFO, and nothing is stored;
* a value the job store cannot hold (a NUL character, which PostgreSQL refuses in text) is the
  sender's mistake, answered 400 on every backend, never 503 "retry later".
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import pytest

from forebay import Forebay, InvalidPayload, JobFilter, SharedSecret
from tests.integration.test_http import (
    _make_dead,
    assert_error,
    declare,
    declare_failing,
    sample,
    serving,
    total_jobs,
)

Message = MutableMapping[str, Any]


async def hang_up_mid_body(
    api: Any, path: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> list[Message]:
    """Call ``api`` as a server would for a client that sends part of its body, then goes."""
    arrivals: list[Message] = [
        {"type": "http.request", "body": b'{"payload": {"half": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return arrivals.pop(0) if arrivals else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await api(scope, receive, send)
    return sent


async def test_a_client_gone_mid_body_is_counted_499_and_logged_at_info(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    declare(app)
    app.source("hook", queue="documents", auth=SharedSecret(header="X-Secret", secret="s"))
    caplog.set_level(logging.DEBUG)
    async with serving(app) as client:
        caplog.clear()  # start-up may warn about the store's settings: not this test's concern
        api = client._transport.app  # type: ignore[attr-defined]
        await hang_up_mid_body(api, "/v1/queues/documents/jobs")
        await hang_up_mid_body(api, "/v1/sources/hook", ((b"x-secret", b"s"),))
        metrics = (await client.get("/metrics")).text
        assert await total_jobs(app) == 0
    assert sample(metrics, "forebay_intake_requests_total", source="api", status="499") == 1
    assert sample(metrics, "forebay_intake_requests_total", source="hook", status="499") == 1
    assert sample(metrics, "forebay_intake_requests_total", source="api", status="500") == 0
    loud = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        or (r.levelno >= logging.WARNING and r.name == "forebay.service")
    ]
    assert not loud, [r.getMessage() for r in loud]
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(gone) == 2 and all(r.levelno == logging.INFO and not r.exc_info for r in gone)


async def test_a_value_the_store_cannot_hold_is_a_400_on_every_backend(app: Forebay) -> None:
    declare(app)
    declare_failing(app)
    async with serving(app) as client:
        dead = await _make_dead(app, client, 1)
        for path in ("/v1/jobs", "/v1/dead"):
            for name in ("queue", "error_type"):
                if path == "/v1/jobs" and name == "error_type":
                    continue
                answer = await client.get(path, params={name: "a\x00b"})
                error = assert_error(answer, 400, "invalid_request")
                assert name in error["message"] and "NUL" in error["message"]
        for path in ("/v1/dead/replay", "/v1/dead/purge"):
            for name in ("queue", "error_type"):
                answer = await client.post(path, json={name: "a\x00b"})
                assert "NUL" in assert_error(answer, 400, "invalid_payload")["message"]
        assert len((await client.get("/v1/dead")).json()["jobs"]) == len(dead)


async def test_the_python_api_calls_a_refused_value_a_bad_value_not_an_outage(
    app: Forebay, backend_kind: str
) -> None:
    declare(app)
    await app.open()
    # The same on every backend (PostgreSQL text cannot even hold a NUL to compare it).
    with pytest.raises(InvalidPayload, match="NUL"):
        await app.list_jobs(JobFilter(queue="a\x00b"))
