"""The fleet over HTTP (httpx over ASGI), on every backend: ``GET /v1/workers`` lists the live
workers saved in the store and, per queue, how many consume it; ``GET /v1/throughput`` counts
the jobs completed and dead-lettered per minute and since the store was created. A token bound
to a tenant is refused both (they cover every tenant); a bad ``minutes`` is a 400."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from forebay import Forebay, Job, NewJob, PermanentError
from forebay.fleet import WorkerInfo, minute_of
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from tests.integration.test_http import assert_error, serving

TOKENS = parse_api_tokens("reader-secret:read,acme-secret::acme")
TOKEN_SETTINGS = ServiceSettings(workers=False, api_tokens=TOKENS)
READER = {"Authorization": "Bearer reader-secret"}
ACME = {"Authorization": "Bearer acme-secret"}
NO_WORKERS = ServiceSettings(workers=False)


def worker(
    worker_id: str,
    queues: tuple[str, ...],
    *,
    started: float,
    seen: float,
    ttl_s: float = 60.0,
    **counts: Any,
) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host=f"host-{worker_id}",
        pid=1000 + len(worker_id),
        queues=queues,
        concurrency=4 if len(queues) > 1 else 2,
        version="9.9.9",
        started_at=datetime.fromtimestamp(started, UTC),
        last_seen=datetime.fromtimestamp(seen, UTC),
        ttl_s=ttl_s,
        **counts,
    )


def declare(app: Forebay) -> None:
    @app.handler("documents", concurrency=4)
    async def ingest(job: Job) -> dict[str, int]:
        return {"n": job.id}

    @app.handler("failing", max_attempts=1)
    async def fail(job: Job) -> None:
        raise PermanentError("cannot ever work")


async def test_the_live_workers_and_each_queues_consumers(app: Forebay) -> None:
    declare(app)
    now = time.time()
    store = await app.open()
    first = worker("w1", ("documents", "pages"), started=now - 300, seen=now, completed=7)
    second = worker("w2", ("pages",), started=now - 30, seen=now, running=1, stopping=True)
    gone = worker("w0", ("lost",), started=now - 900, seen=now - 600, ttl_s=15.0)
    await asyncio.gather(*(store.save_worker(w) for w in (second, first, gone)))
    await app.enqueue("intake", {"n": 1})  # a queue the store knows, that nothing consumes

    async with serving(app, NO_WORKERS) as client:
        one, two = await asyncio.gather(client.get("/v1/workers"), client.get("/v1/workers"))
        assert one.status_code == two.status_code == 200, one.text
        assert one.json() == two.json()
        body = one.json()

    assert [w["id"] for w in body["workers"]] == ["w1", "w2"]  # the longest running first
    shown = body["workers"][0]
    times = ("started_at", "last_seen", "expires_at")
    assert {k: v for k, v in shown.items() if k not in times} == {
        k: v for k, v in first.to_dict().items() if k not in times
    }
    for name in times:  # the same instants, to the store's precision
        stored = datetime.fromisoformat(shown[name]).timestamp()
        assert abs(stored - datetime.fromisoformat(str(first.to_dict()[name])).timestamp()) < 0.01
    assert shown["queues"] == ["documents", "pages"]
    assert (shown["completed"], shown["running"], shown["stopping"]) == (7, 0, False)
    assert (body["workers"][1]["running"], body["workers"][1]["stopping"]) == (1, True)
    assert body["queues"] == [
        {"queue": "documents", "workers": 1, "concurrency": 4},
        {"queue": "intake", "workers": 0, "concurrency": 0},
        {"queue": "pages", "workers": 2, "concurrency": 6},
    ]


async def test_throughput_counts_completed_and_dead_per_minute(app: Forebay) -> None:
    declare(app)
    before = minute_of(time.time())
    await app.enqueue_many(
        [NewJob.create("documents", {"n": n}) for n in range(3)]
        + [NewJob.create("failing", {"n": n}) for n in range(2)]
    )
    await app.run_worker(burst=True)

    async with serving(app, NO_WORKERS) as client:
        default, narrowed = await asyncio.gather(
            client.get("/v1/throughput"), client.get("/v1/throughput?minutes=5&queue=failing")
        )
    assert default.status_code == 200, default.text
    body = default.json()
    assert body["minutes"] == 60
    since = datetime.fromisoformat(body["since"]).timestamp()
    assert since % 60 == 0 and since <= before - 59 * 60
    assert sums(body["series"]) == {
        "documents": {"completed": 3, "dead": 0, "reclaimed": 0},
        "failing": {"completed": 0, "dead": 2, "reclaimed": 0},
    }
    assert all(datetime.fromisoformat(r["minute"]).timestamp() >= before for r in body["series"])
    assert body["totals"] == [
        {"queue": "documents", "completed": 3, "dead": 0, "reclaimed": 0},
        {"queue": "failing", "completed": 0, "dead": 2, "reclaimed": 0},
    ]

    assert narrowed.status_code == 200, narrowed.text
    only = narrowed.json()
    assert only["minutes"] == 5
    assert sums(only["series"]) == {"failing": {"completed": 0, "dead": 2, "reclaimed": 0}}
    assert only["totals"] == [{"queue": "failing", "completed": 0, "dead": 2, "reclaimed": 0}]


def sums(series: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per queue, the series' counts added up (a test may straddle a minute)."""
    out: dict[str, dict[str, int]] = {}
    for row in series:
        into = out.setdefault(row["queue"], {"completed": 0, "dead": 0, "reclaimed": 0})
        for name in into:
            into[name] += row[name]
    return out


async def test_tokens_read_scope_and_tenant_tokens_are_refused(app: Forebay) -> None:
    declare(app)
    async with serving(app, TOKEN_SETTINGS) as client:
        for path in ("/v1/workers", "/v1/throughput"):
            assert_error(await client.get(path), 401, "unauthorized")
            error = assert_error(await client.get(path, headers=ACME), 403, "forbidden")
            assert "bound to tenant 'acme'" in error["message"]
            assert (await client.get(path, headers=READER)).status_code == 200


async def test_a_bad_minutes_or_filter_is_refused(app: Forebay) -> None:
    async with serving(app, NO_WORKERS) as client:
        answers: list[httpx.Response] = await asyncio.gather(
            *(
                client.get("/v1/throughput", params=params)
                for params in (
                    {"minutes": 0},
                    {"minutes": 1441},
                    {"minutes": "an hour"},
                    {"queue": ""},
                    {"since": "2026-01-01T00:00:00Z"},
                )
            ),
            client.get("/v1/workers", params={"queue": "documents"}),
        )
        for answer in answers:
            assert_error(answer, 400, "invalid_request")
        assert "minutes" in answers[0].json()["error"]["message"]
        assert (await client.get("/v1/throughput?minutes=1440")).status_code == 200

        schema = (await client.get("/openapi.json")).json()
        assert "/v1/workers" in schema["paths"] and "/v1/throughput" in schema["paths"]
        fleet = schema["components"]["schemas"]["FleetOut"]
        assert set(fleet["properties"]) == {"workers", "queues"}
