"""The HTTP service in-process (httpx over ASGI), on every backend the ``app`` fixture gives.

Each error case checks the status, the JSON error body, and that nothing was enqueued.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from forebay import Forebay, HmacSignature, InvalidPayload, Job, PermanentError, SharedSecret
from forebay.http import ServiceSettings, create_app
from forebay.http.settings import parse_api_tokens
from forebay.logs import JsonFormatter
from forebay.metrics import count_sink_writes_skipped
from forebay.testing import Settled
from tests.servers import PG_URL

BASE = "http://127.0.0.1:8000"  # the token-less service answers loopback names only
LOCAL = ServiceSettings(workers=False)


@asynccontextmanager
async def serving(
    app: Forebay,
    settings: ServiceSettings = LOCAL,
    *,
    lifespan: bool = True,
    mount: Callable[[FastAPI], None] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app(app, settings)``, with its lifespan running by default
    (``mount``: adds routes to the app first)."""
    api = create_app(app, settings)
    if mount is not None:
        mount(api)
    transport = httpx.ASGITransport(api)
    # A JSON client, as the token-less service asks of requests to its JSON routes.
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as client:
        if not lifespan:
            yield client
            return
        async with api.router.lifespan_context(api):
            yield client
        # The service closes the app on shutdown; reopen it so the fixture can drop its store.
        await app.open()


async def total_jobs(app: Forebay) -> int:
    return sum(
        c.queued + c.running + c.completed + c.dead + c.cancelled for c in await app.counts()
    )


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert error["message"]
    return dict(error)


def declare(app: Forebay, **options: Any) -> None:
    @app.handler("documents", **options)
    async def ingest(job: Job) -> None:
        await job.progress(50, "halfway")


# -- the happy path -----------------------------------------------------------------------------
async def test_a_job_posted_over_http_is_stored_then_completes(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        response = await client.post("/v1/queues/documents/jobs", json={"payload": {"n": 1}})
        assert response.status_code == 201
        accepted = response.json()
        assert accepted["created"] is True and accepted["state"] == "queued"
        stored = await app.get_job(accepted["id"])  # durable before the answer
        assert stored.payload == {"n": 1}

        await app.run_worker(burst=True)
        job = (await client.get(f"/v1/jobs/{accepted['id']}")).json()
        assert job["state"] == "completed"
        assert job["attempt"] == 1
        assert job["progress_message"] == "halfway"
        assert job["payload"] == {"n": 1}
        assert job["finished_at"] is not None


async def test_in_process_workers_run_the_jobs_and_report_ready(app: Forebay) -> None:
    declare(app)
    settled = Settled()
    app.observers.append(settled)
    async with serving(app, ServiceSettings(workers=True)) as client:
        job_id = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        assert await settled.outcome_of(job_id) == "completed"
        assert (await client.get(f"/v1/jobs/{job_id}")).json()["state"] == "completed"

        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True
        assert body["workers"]["running"] is True and body["workers"]["fresh"] is True
        assert body["workers"]["queues"] == ["documents"]
        assert [q["queue"] for q in body["queues"]] == ["documents"]

        api_service = client._transport.app.state.service  # type: ignore[attr-defined]
        await api_service.workers.stop()  # a worker that is gone makes the node unready
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["workers"]["running"] is False


async def test_a_list_is_stored_in_one_request_and_answered_in_order(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        items = [{"payload": i, "key": f"k{i}", "priority": i} for i in range(5)]
        response = await client.post("/v1/queues/documents/jobs", json=items)
        assert response.status_code == 201
        answered = response.json()
        assert [a["key"] for a in answered] == [f"k{i}" for i in range(5)]
        assert len({a["id"] for a in answered}) == 5
        assert await total_jobs(app) == 5


async def test_a_duplicate_key_answers_200_with_the_first_job(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        first = await client.post("/v1/queues/documents/jobs", json={"payload": 1, "key": "a"})
        again = await client.post("/v1/queues/documents/jobs", json={"payload": 2, "key": "a"})
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["created"] is False
        assert await total_jobs(app) == 1


async def test_scheduling_fields_are_applied(app: Forebay) -> None:
    declare(app)
    at = datetime.now(UTC) + timedelta(hours=1)
    async with serving(app) as client:
        delayed = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 1, "delay_s": 600}
        )
        scheduled = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 2, "run_at": at.isoformat()}
        )
        assert delayed.status_code == scheduled.status_code == 201
        run_at = datetime.fromisoformat(scheduled.json()["run_at"])
        assert abs((run_at - at).total_seconds()) < 0.01
        queues = (await client.get("/v1/queues")).json()["queues"]
        assert queues[0]["scheduled"] == 2


async def test_concurrent_requests_reach_the_backend_together(app: Forebay) -> None:
    """Nothing in the HTTP layer serialises requests: their enqueues overlap in the backend,
    which can then group-commit them."""
    declare(app)
    store = await app.open()
    original = store.enqueue
    in_flight = peak = 0

    async def counting(*args: Any, **kwargs: Any) -> list[Job]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(*args, **kwargs)
        finally:
            in_flight -= 1

    store.enqueue = counting  # type: ignore[method-assign]
    try:
        async with serving(app) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/queues/documents/jobs", json={"payload": i}) for i in range(100))
            )
    finally:
        store.enqueue = original  # type: ignore[method-assign]
    assert all(r.status_code == 201 for r in responses)
    assert len({r.json()["id"] for r in responses}) == 100
    assert peak > 1
    assert await total_jobs(app) == 100


# -- bad input: an answer that says what is wrong, and nothing stored ---------------------------
@pytest.mark.parametrize(
    ("content", "kind", "words"),
    [
        (b'{"payload": ', "malformed_json", "not valid JSON"),
        (b"", "malformed_json", "empty"),
        (b'{"payload": NaN}', "malformed_json", "NaN"),
        (b'{"payload": [1e400]}', "malformed_json", "too large"),
        (b'{"payload": {"text": "\\ud800"}}', "invalid_payload", "surrogates"),
        (b"\xff\xfe\xfa", "malformed_json", ""),
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json", "nested"),
        (b'{"payload": 1, "delay": 5}', "invalid_payload", "delay"),
        (b'{"key": "k"}', "invalid_payload", "payload"),
        (b'{"payload": 1, "priority": "high"}', "invalid_payload", "priority"),
        (b'{"payload": 1, "priority": 4294967296}', "invalid_payload", "priority"),
        (b'{"payload": 1, "delay_s": -1}', "invalid_payload", "delay_s"),
        (b'{"payload": 1, "run_at": "2030-01-01T00:00:00"}', "invalid_payload", "timezone"),
        (b'{"payload": 1, "run_at": "2030-01-01T00:00:00Z", "delay_s": 1}', "invalid_payload", ""),
        (b'{"payload": 1, "run_at": "0001-01-01T00:00:00+14:00"}', "invalid_payload", "1970"),
        (b'{"payload": 1, "key": ""}', "invalid_payload", "key"),
        (b"[]", "invalid_payload", "empty"),
        (b'[{"payload": 1}, {"payload": 2, "oops": 1}]', "invalid_payload", "oops"),
        (b"42", "invalid_payload", ""),
    ],
)
async def test_bad_bodies_answer_400_and_store_nothing(
    app: Forebay, content: bytes, kind: str, words: str
) -> None:
    declare(app)
    async with serving(app) as client:
        response = await client.post("/v1/queues/documents/jobs", content=content)
        error = assert_error(response, 400, kind)
        assert words.lower() in error["message"].lower()
        assert await total_jobs(app) == 0


async def test_an_undeclared_queue_answers_404(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        response = await client.post("/v1/queues/elsewhere/jobs", json={"payload": 1})
        error = assert_error(response, 404, "unknown_queue")
        assert "documents" in error["message"]  # says which queues exist
        assert await total_jobs(app) == 0


async def test_a_body_over_the_limit_answers_413_before_it_is_read(app: Forebay) -> None:
    declare(app)
    settings = ServiceSettings(workers=False, max_body_bytes=1000)
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"payload": "'
        for _ in range(1000):
            chunks_sent += 1
            yield b"x" * 100
        yield b'"}'

    async with serving(app, settings) as client:
        declared = await client.post(
            "/v1/queues/documents/jobs", json={"payload": "x" * 2000}
        )  # Content-Length says it all: refused without reading
        assert_error(declared, 413, "body_too_large")
        streamed = await client.post("/v1/queues/documents/jobs", content=stream())
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "body_too_large")
        assert chunks_sent < 20  # stopped at the limit, not at the end of the body
        fits = await client.post("/v1/queues/documents/jobs", json={"payload": "x" * 900})
        assert fits.status_code == 201
        assert await total_jobs(app) == 1


async def test_a_full_queue_answers_429_with_retry_after(app: Forebay) -> None:
    declare(app, max_depth=2)
    async with serving(app) as client:
        for i in range(2):
            ok = await client.post("/v1/queues/documents/jobs", json={"payload": i})
            assert ok.status_code == 201
        full = await client.post("/v1/queues/documents/jobs", json={"payload": 3})
        assert_error(full, 429, "queue_full")
        assert int(full.headers["retry-after"]) >= 1
        batch = await client.post("/v1/queues/documents/jobs", json=[{"payload": 4}])
        assert_error(batch, 429, "queue_full")
        assert await total_jobs(app) == 2


def _down_url(which: str, tmp_path: Path) -> str:
    if which == "sqlite":
        (tmp_path / "a-folder.db").mkdir()  # a folder where the database file should be
        return f"sqlite:///{tmp_path / 'a-folder.db'}"
    if importlib.util.find_spec(f"forebay.backends.{which}") is None:
        pytest.skip(f"the {which} backend is not in this checkout")
    user = PG_URL.split("//", 1)[1].split("@", 1)[0]
    return f"postgresql://{user}@127.0.0.1:1/forebay?reconnect_s=0.2"  # nothing on port 1


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
async def test_an_unreachable_backend_answers_503_with_retry_after(
    tmp_path: Path, which: str
) -> None:
    url = _down_url(which, tmp_path)
    down = Forebay(url)
    declare(down)
    settings = ServiceSettings(workers=False, retry_after_s=3)
    async with serving(down, settings, lifespan=False) as client:
        response = await client.post("/v1/queues/documents/jobs", json={"payload": 1})
        error = assert_error(response, 503, "backend_unavailable")
        assert "nothing was stored" in error["message"]
        assert response.headers["retry-after"] == "3"
        assert_error(await client.get("/v1/jobs/1"), 503, "backend_unavailable")
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["backend"]["ok"] is False
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "forebay_backend_up 0.0" in metrics.text
    await down.close()


# -- API tokens ---------------------------------------------------------------------------------
async def test_api_tokens_and_scopes(app: Forebay) -> None:
    declare(app)
    tokens = parse_api_tokens("producer-secret:enqueue,reader-secret:read,ops-secret:admin")
    settings = ServiceSettings(workers=False, api_tokens=tokens)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async with serving(app, settings) as client:
        post = "/v1/queues/documents/jobs"
        missing = await client.post(post, json={"payload": 1})
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(
            await client.post(post, json={"payload": 1}, headers={"Authorization": "Basic eA=="}),
            401,
            "unauthorized",
        )
        assert_error(
            await client.post(post, json={"payload": 1}, headers=bearer("nope")),
            401,
            "unauthorized",
        )
        # Credentials are checked before the queue name: strangers learn nothing about queues.
        assert_error(
            await client.post("/v1/queues/other/jobs", json={"payload": 1}),
            401,
            "unauthorized",
        )
        forbidden = await client.post(post, json={"payload": 1}, headers=bearer("reader-secret"))
        assert "enqueue" in assert_error(forbidden, 403, "forbidden")["message"]
        assert await total_jobs(app) == 0

        created = await client.post(post, json={"payload": 1}, headers=bearer("producer-secret"))
        assert created.status_code == 201
        job = f"/v1/jobs/{created.json()['id']}"
        assert_error(await client.get(job, headers=bearer("producer-secret")), 403, "forbidden")
        assert (await client.get(job, headers=bearer("reader-secret"))).status_code == 200
        assert (await client.get(job, headers=bearer("ops-secret"))).status_code == 200  # admin
        assert_error(
            await client.post(f"{job}/cancel", headers=bearer("reader-secret")), 403, "forbidden"
        )
        assert_error(
            await client.post("/v1/dead/purge", headers=bearer("producer-secret")),
            403,
            "forbidden",
        )
        assert (await client.post(f"{job}/cancel", headers=bearer("ops-secret"))).status_code == 200
        # Probes and metrics stay open for orchestrators and scrapers.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_no_tokens_is_refused_on_a_public_address() -> None:
    from forebay import ConfigError

    with pytest.raises(ConfigError, match="FOREBAY_API_TOKENS"):
        ServiceSettings(host="0.0.0.0")
    ServiceSettings(host="0.0.0.0", api_tokens=parse_api_tokens("t"))
    ServiceSettings(host="::1")


# -- sources ------------------------------------------------------------------------------------
def declare_sources(app: Forebay) -> HmacSignature:
    declare(app)
    signature = HmacSignature(header="X-Signature", secret="hmac-secret")

    def split(body: Any) -> list[Any]:
        if not isinstance(body, dict) or "events" not in body:
            raise InvalidPayload("expected an object with a list under 'events'")
        return list(body["events"])

    app.source(
        "hook",
        queue="documents",
        auth=SharedSecret(header="X-Hook-Secret", secret="s3cret"),
        key=lambda payload: f"event-{payload['id']}",  # type: ignore[index,call-overload]
        split=split,
        max_body_bytes=2000,
    )
    app.source("signed", queue="documents", auth=signature)
    return signature


async def test_a_source_authenticates_splits_and_dedupes(app: Forebay) -> None:
    declare_sources(app)
    url = "/v1/sources/hook"
    secret = {"X-Hook-Secret": "s3cret"}
    body = {"events": [{"id": 1}, {"id": 2}]}
    async with serving(app) as client:
        assert_error(await client.post(url, json=body), 401, "unauthorized")
        assert_error(
            await client.post(url, json=body, headers={"X-Hook-Secret": "s3creT"}),
            403,
            "forbidden",
        )
        first = await client.post(url, json=body, headers=secret)
        assert first.status_code == 201, first.text
        jobs = first.json()["jobs"]
        assert [j["key"] for j in jobs] == ["event-1", "event-2"]
        assert all(j["created"] for j in jobs)

        again = await client.post(url, json=body, headers=secret)  # the sender's duplicate
        assert again.status_code == 200
        assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in jobs]
        assert not any(j["created"] for j in again.json()["jobs"])

        refused = await client.post(url, json={"nope": 1}, headers=secret)
        assert "events" in assert_error(refused, 400, "invalid_payload")["message"]
        shapeless = await client.post(url, json={"events": [{"no-id": 1}]}, headers=secret)
        assert "KeyError" in assert_error(shapeless, 400, "invalid_payload")["message"]
        big = {"events": [{"id": i, "pad": "x" * 100} for i in range(50)]}
        assert_error(await client.post(url, json=big, headers=secret), 413, "body_too_large")
        assert_error(await client.post(url, content=b"{", headers=secret), 400, "malformed_json")
        empty = await client.post(url, json={"events": []}, headers=secret)
        assert empty.status_code == 200 and empty.json()["jobs"] == []
        assert_error(await client.post("/v1/sources/nope", json={}), 404, "unknown_source")
        assert await total_jobs(app) == 2


async def test_large_bodies_are_split_and_answered_like_small_ones(app: Forebay) -> None:
    # Over 256 KB and 500 jobs: parsed, split and answered off the event loop.
    declare(app)
    app.source(
        "bulk",
        queue="documents",
        key=lambda payload: f"item-{payload['id']}",  # type: ignore[index,call-overload]
        split=lambda body: list(body["items"]),  # type: ignore[index,call-overload]
        max_body_bytes=4 * 2**20,
    )
    pad = "x" * 400
    async with serving(app) as client:
        items = [{"payload": {"i": i, "pad": pad}, "key": f"k{i}"} for i in range(800)]
        response = await client.post("/v1/queues/documents/jobs", json=items)
        assert response.status_code == 201
        assert [a["key"] for a in response.json()] == [f"k{i}" for i in range(800)]

        bad = [*items[:700], {"payload": 1, "priority": "high"}]
        assert (
            "[700].priority"
            in assert_error(
                await client.post("/v1/queues/documents/jobs", json=bad), 400, "invalid_payload"
            )["message"]
        )

        bulk = {"items": [{"id": i, "pad": pad} for i in range(1000)]}
        answer = await client.post("/v1/sources/bulk", json=bulk)
        assert answer.status_code == 201
        assert [j["key"] for j in answer.json()["jobs"]] == [f"item-{i}" for i in range(1000)]
        assert await total_jobs(app) == 1800


async def test_an_hmac_source_checks_the_signature_of_the_raw_body(app: Forebay) -> None:
    signature = declare_sources(app)
    raw = json.dumps({"hello": "world"}).encode()
    async with serving(app) as client:
        good = await client.post(
            "/v1/sources/signed", content=raw, headers={"X-Signature": signature.sign(raw)}
        )
        assert good.status_code == 201
        job = await app.get_job(good.json()["jobs"][0]["id"])
        assert job.payload == {"hello": "world"}
        tampered = await client.post(
            "/v1/sources/signed",
            content=raw.replace(b"world", b"World"),
            headers={"X-Signature": signature.sign(raw)},
        )
        assert_error(tampered, 403, "forbidden")
        assert_error(await client.post("/v1/sources/signed", content=raw), 401, "unauthorized")
        assert await total_jobs(app) == 1


async def test_source_requests_need_no_api_token(app: Forebay) -> None:
    declare_sources(app)
    settings = ServiceSettings(workers=False, api_tokens=parse_api_tokens("t:admin"))
    async with serving(app, settings) as client:
        response = await client.post(
            "/v1/sources/hook", json={"events": [{"id": 9}]}, headers={"X-Hook-Secret": "s3cret"}
        )
        assert response.status_code == 201


# -- jobs, queues, dead letters -----------------------------------------------------------------
async def test_cancel_a_queued_job_and_not_a_finished_one(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        queued = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()
        cancelled = await client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert (await client.post(f"/v1/jobs/{queued['id']}/cancel")).status_code == 200

        done = (await client.post("/v1/queues/documents/jobs", json={"payload": 2})).json()
        await app.run_worker(burst=True)
        refused = await client.post(f"/v1/jobs/{done['id']}/cancel")
        assert "completed" in assert_error(refused, 409, "job_not_cancellable")["message"]
        assert_error(await client.post("/v1/jobs/999999/cancel"), 404, "job_not_found")
        assert_error(await client.get("/v1/jobs/999999"), 404, "job_not_found")
        assert_error(await client.get("/v1/jobs/0"), 400, "invalid_request")
        assert_error(await client.get("/v1/jobs/x"), 400, "invalid_request")


async def test_jobs_are_listed_newest_first_by_queue_and_state_and_paged(app: Forebay) -> None:
    declare(app)
    declare_failing(app)
    async with serving(app) as client:
        docs = [
            (await client.post("/v1/queues/documents/jobs", json={"payload": i})).json()["id"]
            for i in range(5)
        ]
        dead = await _make_dead(app, client, 2)
        everything = (await client.get("/v1/jobs")).json()
        assert [j["id"] for j in everything["jobs"]] == sorted(docs + dead, reverse=True)
        assert everything["next_before_id"] is None

        queued = (await client.get("/v1/jobs", params={"queue": "documents"})).json()["jobs"]
        assert [j["id"] for j in queued] == docs[::-1]
        assert {j["state"] for j in queued} == {"queued"} and queued[0]["payload"] == 4
        failed = await client.get("/v1/jobs", params={"state": "dead"})
        assert [j["id"] for j in failed.json()["jobs"]] == dead[::-1]

        first = (await client.get("/v1/jobs", params={"queue": "documents", "limit": 2})).json()
        assert [j["id"] for j in first["jobs"]] == docs[:2:-1]
        rest = await client.get(
            "/v1/jobs",
            params={"queue": "documents", "limit": 2, "before_id": first["next_before_id"]},
        )
        assert [j["id"] for j in rest.json()["jobs"]] == [docs[2], docs[1]]

        assert (
            "state"
            in assert_error(
                await client.get("/v1/jobs", params={"state": "sleeping"}), 400, "invalid_request"
            )["message"]
        )
        assert_error(await client.get("/v1/jobs", params={"limit": 0}), 400, "invalid_request")


async def test_queues_lists_declared_queues_with_their_counts(app: Forebay) -> None:
    declare(app, max_depth=50)
    app.queue("producer-only")
    async with serving(app) as client:
        await client.post("/v1/queues/documents/jobs", json=[{"payload": 1}, {"payload": 2}])
        queues = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        assert queues["documents"]["queued"] == 2
        assert queues["documents"]["max_depth"] == 50
        assert queues["documents"]["handled"] is True
        assert queues["documents"]["oldest_queued_age_s"] is not None
        assert queues["producer-only"]["queued"] == 0
        assert queues["producer-only"]["handled"] is False


async def _make_dead(app: Forebay, client: httpx.AsyncClient, n: int) -> list[int]:
    ids = [
        (await client.post("/v1/queues/failing/jobs", json={"payload": i})).json()["id"]
        for i in range(n)
    ]
    await app.run_worker(["failing"], burst=True)
    return ids


def declare_failing(app: Forebay) -> None:
    @app.handler("failing")
    async def fail(job: Job) -> None:
        raise PermanentError("cannot ever work")


async def test_dead_letters_are_listed_paged_replayed_and_purged(app: Forebay) -> None:
    declare(app)
    declare_failing(app)
    async with serving(app) as client:
        ids = await _make_dead(app, client, 5)
        page = (await client.get("/v1/dead", params={"limit": 2})).json()
        assert [j["id"] for j in page["jobs"]] == sorted(ids, reverse=True)[:2]
        assert page["jobs"][0]["error_type"] == "PermanentError"
        seen = [j["id"] for j in page["jobs"]]
        while page["next_before_id"] is not None:
            page = (
                await client.get(
                    "/v1/dead", params={"limit": 2, "before_id": page["next_before_id"]}
                )
            ).json()
            seen += [j["id"] for j in page["jobs"]]
        assert sorted(seen) == sorted(ids)

        filtered = await client.get(
            "/v1/dead", params={"queue": "failing", "error_type": "PermanentError"}
        )
        assert len(filtered.json()["jobs"]) == 5
        assert (await client.get("/v1/dead", params={"error_type": "Other"})).json()["jobs"] == []
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await client.get("/v1/dead", params={"since": future})).json()["jobs"] == []
        assert_error(
            await client.get("/v1/dead", params={"since": "2026-01-01T00:00:00"}),
            400,
            "invalid_request",
        )

        dry = await client.post("/v1/dead/replay", json={"queue": "failing", "dry_run": True})
        assert dry.json() == {"replayed": 5, "dry_run": True}
        one = await client.post("/v1/dead/replay", json={"ids": [ids[0]]})
        assert one.json() == {"replayed": 1, "dry_run": False}
        assert (await app.get_job(ids[0])).state == "queued"
        assert (await client.post("/v1/dead/purge", json={"dry_run": True})).json()["purged"] == 4
        assert (await client.post("/v1/dead/purge")).json() == {"purged": 4, "dry_run": False}
        assert (await client.get("/v1/dead")).json()["jobs"] == []
        assert_error(await client.post("/v1/dead/purge", json={"queue": 3}), 400, "invalid_payload")
        too_big = {"ids": [2**70]}
        assert_error(await client.post("/v1/dead/replay", json=too_big), 400, "invalid_payload")


# -- metrics and logs ---------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, or 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_metrics_count_jobs_intake_and_queue_depth(app: Forebay) -> None:
    declare_sources(app)  # declares "documents" too
    declare_failing(app)
    async with serving(app) as client:
        await client.post("/v1/queues/documents/jobs", json=[{"payload": 1}, {"payload": 2}])
        await client.post("/v1/queues/documents/jobs", json={"payload": 3, "key": "k"})
        await client.post("/v1/queues/documents/jobs", json={"payload": 3, "key": "k"})
        await client.post("/v1/queues/documents/jobs", content=b"{")
        await client.post("/v1/queues/nope/jobs", json={"payload": 1})
        await client.post("/v1/sources/hook", json={"events": []})
        await client.post("/v1/sources/unknown-hook", json={})
        await _make_dead(app, client, 1)
        await app.run_worker(["documents"], burst=True)
        await client.post("/v1/queues/documents/jobs", json={"payload": "waiting"})
        count_sink_writes_skipped("postgres", "older", 3)

        text = (await client.get("/metrics")).text
        assert sample(text, "forebay_jobs_enqueued_total", queue="documents") == 4
        assert sample(text, "forebay_jobs_deduplicated_total", queue="documents") == 1
        assert sample(text, "forebay_jobs_completed_total", queue="documents") == 3
        assert sample(text, "forebay_jobs_dead_total", queue="failing") == 1
        assert (
            sample(
                text,
                "forebay_job_duration_seconds_count",
                queue="documents",
                outcome="completed",
            )
            == 3
        )
        assert sample(text, "forebay_queue_jobs", queue="documents", state="completed") == 3
        assert sample(text, "forebay_queue_jobs", queue="documents", state="queued") == 1
        assert sample(text, "forebay_queue_jobs", queue="failing", state="dead") == 1
        assert "forebay_queue_oldest_queued_age_seconds{" in text
        assert sample(text, "forebay_backend_up") == 1
        assert sample(text, "forebay_intake_requests_total", source="api", status="201") == 4
        assert sample(text, "forebay_intake_requests_total", source="api", status="200") == 1
        assert sample(text, "forebay_intake_requests_total", source="api", status="400") == 1
        assert sample(text, "forebay_intake_requests_total", source="api", status="404") == 1
        assert sample(text, "forebay_intake_requests_total", source="hook", status="401") == 1
        assert sample(text, "forebay_intake_requests_total", source="unknown", status="404") == 1
        assert sample(text, "forebay_intake_latency_seconds_count", source="api") == 7
        assert (
            sample(text, "forebay_sink_writes_skipped_total", sink="postgres", reason="older") >= 3
        )


async def test_each_state_change_has_a_structured_log_line(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    declare(app)
    declare_failing(app)
    caplog.set_level(logging.DEBUG, logger="forebay")
    async with serving(app) as client:
        job_id = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        dead_id = (await client.post("/v1/queues/failing/jobs", json={"payload": 1})).json()["id"]
        await app.run_worker(burst=True)

    def lines(job: int) -> list[dict[str, Any]]:
        formatter = JsonFormatter()
        return [
            json.loads(formatter.format(r))
            for r in caplog.records
            if getattr(r, "job_id", None) == job
        ]

    everything = lines(job_id)
    [progress] = [d for d in everything if "progress" in d]
    assert progress["message"] == f"job {job_id} progress 50%: halfway"
    done = [d for d in everything if "progress" not in d]
    changes = [(d.get("state") or d.get("outcome")) for d in done]
    assert changes == ["queued", "running", "complete"]
    assert all(d["queue"] == "documents" and "attempt" in d for d in done)
    assert done[1]["attempt"] == done[2]["attempt"] == 1 and done[1]["deliveries"] == 1
    assert done[1]["message"].startswith(f"job {job_id} leased by worker ")
    failed = lines(dead_id)
    assert [(d.get("state") or d.get("outcome")) for d in failed] == ["queued", "running", "dead"]
    assert "cannot ever work" in failed[2]["error"]
    assert failed[2]["traceback"].startswith("Traceback (most recent call last):")


async def test_the_openapi_schema_documents_every_endpoint(app: Forebay) -> None:
    declare(app)
    async with serving(app, lifespan=False) as client:
        schema = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    paths = set(schema["paths"])
    assert {
        "/v1/queues/{queue}/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/queues",
        "/v1/dead",
        "/v1/dead/replay",
        "/v1/dead/purge",
        "/v1/sources/{source}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths
    assert not any("_bare" in p for p in paths)
    body = schema["paths"]["/v1/queues/{queue}/jobs"]["post"]["requestBody"]
    assert "oneOf" in body["content"]["application/json"]["schema"]


async def test_the_bare_benchmark_endpoint_is_off_unless_asked(app: Forebay) -> None:
    from benchmarks.intake import BARE_PATH, mount_bare

    bare = BARE_PATH.format(queue="documents")
    declare(app)
    async with serving(app, lifespan=False) as client:
        off = await client.post(bare, json={"payload": 1})
        assert_error(off, 404, "not_found")
    async with serving(app, lifespan=False, mount=mount_bare) as client:
        on = await client.post(bare, json={"payload": 1})
        assert on.status_code == 200
        assert_error(
            await client.post(bare, content=b"{"),
            400,
            "malformed_json",
        )
    assert await total_jobs(app) == 0
