"""Tenants over HTTP (httpx over ASGI), on every backend: two tokens bound to two tenants each
enqueue, see and act on only their own jobs, runs and dead letters (another tenant's by id is
404, as a missing one); lists and counts narrow to them; a token cannot enqueue for another
tenant nor act on whole queues; a tenant over its quota gets 429 naming it, the other tenant
going on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from forebay import Forebay, Job, PermanentError
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from tests.integration.test_http import assert_error, declare, serving

TOKENS = parse_api_tokens("acme-secret::acme,globex-secret::globex,ops-secret:admin")
SETTINGS = ServiceSettings(workers=False, api_tokens=TOKENS)
ACME = {"Authorization": "Bearer acme-secret"}
GLOBEX = {"Authorization": "Bearer globex-secret"}
OPS = {"Authorization": "Bearer ops-secret"}


def declare_failing(app: Forebay) -> None:
    @app.handler("failing")
    async def fail(job: Job) -> None:
        raise PermanentError("cannot ever work")


async def enqueue(
    client: httpx.AsyncClient, who: dict[str, str], body: Any, queue: str = "documents"
) -> list[int]:
    made = await client.post(f"/v1/queues/{queue}/jobs", json=body, headers=who)
    assert made.status_code == 201, made.text
    answer = made.json()
    return [j["id"] for j in answer] if isinstance(answer, list) else [answer["id"]]


async def listed(client: httpx.AsyncClient, path: str, who: dict[str, str]) -> set[int]:
    page = await client.get(path, headers=who)
    assert page.status_code == 200, page.text
    return {j["id"] for j in page.json()["jobs"]}


def queue_row(answer: httpx.Response, queue: str) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    rows: dict[str, dict[str, Any]] = {q["queue"]: q for q in answer.json()["queues"]}
    return rows[queue]


def assert_like_missing(response: httpx.Response, job_id: int) -> None:
    """The answer for another tenant's job is the answer for a job that does not exist."""
    error = assert_error(response, 404, "job_not_found")
    assert error["message"] == f"no job with id {job_id} (it may have been pruned)"


async def test_each_tenant_token_sees_and_acts_on_only_its_own_jobs(app: Forebay) -> None:
    declare(app)
    async with serving(app, SETTINGS) as client:
        acme = await enqueue(client, ACME, [{"payload": 1}, {"payload": 2, "key": "a"}])
        globex = await enqueue(client, GLOBEX, {"payload": 3, "tenant": "globex", "key": "g"})
        globex += await enqueue(client, GLOBEX, [{"payload": 4}, {"payload": 5}])
        # the jobs carry their token's tenant, given or not
        for job_id in acme:
            assert (await app.get_job(job_id)).tenant == "acme"
        shown = (await client.get(f"/v1/jobs/{globex[0]}", headers=GLOBEX)).json()
        assert shown["tenant"] == "globex"

        # lists and counts narrow to the token's tenant; an unbound token sees both
        assert await listed(client, "/v1/jobs", ACME) == set(acme)
        assert await listed(client, "/v1/jobs?queue=documents", GLOBEX) == set(globex)
        assert await listed(client, "/v1/jobs", OPS) == set(acme + globex)
        assert queue_row(await client.get("/v1/queues", headers=ACME), "documents")["queued"] == 2
        assert queue_row(await client.get("/v1/queues", headers=GLOBEX), "documents")["queued"] == 3
        assert queue_row(await client.get("/v1/queues", headers=OPS), "documents")["queued"] == 5
        by_key = await client.get("/v1/jobs?queue=documents&key=g", headers=ACME)
        assert by_key.json()["jobs"] == []
        by_key = await client.get("/v1/jobs?queue=documents&key=g", headers=GLOBEX)
        assert [j["id"] for j in by_key.json()["jobs"]] == [globex[0]]

        # by id, another tenant's job is as absent as a missing one: read, wait, cancel, run-now
        other = globex[0]
        assert_like_missing(await client.get(f"/v1/jobs/{other}", headers=ACME), other)
        assert_like_missing(await client.get(f"/v1/jobs/{other}?wait=0", headers=ACME), other)
        assert_like_missing(await client.post(f"/v1/jobs/{other}/cancel", headers=ACME), other)
        assert_like_missing(await client.post(f"/v1/jobs/{other}/run-now", headers=ACME), other)
        assert_like_missing(await client.get("/v1/jobs/999999", headers=ACME), 999999)
        assert (await app.get_job(other)).state == "queued"

        # cancel by filter touches the token's tenant's jobs only
        cancel = {"queue": "documents", "state": "queued"}
        dry = await client.post("/v1/jobs/cancel", json={**cancel, "dry_run": True}, headers=ACME)
        assert dry.json() == {"cancelled": 2, "dry_run": True}
        done = await client.post("/v1/jobs/cancel", json=cancel, headers=GLOBEX)
        assert done.json() == {"cancelled": 3, "dry_run": False}
        assert {(await app.get_job(i)).state for i in acme} == {"queued"}
        mine = await client.post(f"/v1/jobs/{acme[0]}/cancel", headers=ACME)
        assert mine.status_code == 200 and mine.json()["state"] == "cancelled"


async def test_each_tenant_token_sees_only_its_own_runs(app: Forebay) -> None:
    declare(app)
    async with serving(app, SETTINGS) as client:
        acme = (await client.post("/v1/runs", json={"name": "a"}, headers=ACME)).json()
        globex = await client.post("/v1/runs", json={"tenant": "globex"}, headers=GLOBEX)
        assert globex.status_code == 201, globex.text
        assert acme["tenant"] == "acme" and globex.json()["tenant"] == "globex"
        other = globex.json()["id"]

        def ids(answer: httpx.Response) -> list[str]:
            assert answer.status_code == 200, answer.text
            return [r["id"] for r in answer.json()["runs"]]

        assert ids(await client.get("/v1/runs", headers=ACME)) == [acme["id"]]
        assert ids(await client.get("/v1/runs", headers=GLOBEX)) == [other]
        assert set(ids(await client.get("/v1/runs", headers=OPS))) == {acme["id"], other}
        for answer in (
            await client.get(f"/v1/runs/{other}", headers=ACME),
            await client.post(f"/v1/runs/{other}/seal", headers=ACME),
        ):
            error = assert_error(answer, 404, "run_not_found")
            assert error["message"] == f"no run with id {other!r} (it may have been pruned)"
        assert (await app.get_run(other)).state == "open"
        assert (await client.get(f"/v1/runs/{other}", headers=GLOBEX)).status_code == 200
        refused = await client.post("/v1/runs", json={"tenant": "globex"}, headers=ACME)
        assert_error(refused, 403, "forbidden")
        assert len(await app.list_runs()) == 2


async def test_each_tenant_token_lists_replays_and_purges_only_its_dead(app: Forebay) -> None:
    declare_failing(app)
    async with serving(app, SETTINGS) as client:
        acme = await enqueue(client, ACME, [{"payload": 1}, {"payload": 2}], queue="failing")
        globex = await enqueue(client, GLOBEX, [{"payload": 3}], queue="failing")
        await app.run_worker(["failing"], burst=True)

        assert await listed(client, "/v1/dead", ACME) == set(acme)
        assert await listed(client, "/v1/dead?queue=failing", GLOBEX) == set(globex)
        assert await listed(client, "/v1/dead", OPS) == set(acme + globex)
        assert queue_row(await client.get("/v1/queues", headers=ACME), "failing")["dead"] == 2
        # another tenant's dead job is no cursor for this one
        cursor = await client.get(f"/v1/dead?before_id={globex[0]}", headers=ACME)
        assert_error(cursor, 400, "invalid_cursor")

        dry = await client.post("/v1/dead/replay", json={"dry_run": True}, headers=GLOBEX)
        assert dry.json() == {"replayed": 1, "dry_run": True}
        purged = await client.post("/v1/dead/purge", json={}, headers=ACME)
        assert purged.json() == {"purged": 2, "dry_run": False}
        assert await listed(client, "/v1/dead", OPS) == set(globex)
        replayed = await client.post("/v1/dead/replay", json={"ids": globex}, headers=ACME)
        assert replayed.json() == {"replayed": 0, "dry_run": False}
        assert (await app.get_job(globex[0])).state == "dead"


async def test_a_tenant_token_enqueues_for_its_tenant_only_and_not_whole_queues(
    app: Forebay,
) -> None:
    declare(app)
    tokens = parse_api_tokens("acme-secret::acme,reader:read:acme,ops-secret:admin")
    settings = ServiceSettings(workers=False, api_tokens=tokens)
    async with serving(app, settings) as client:
        post = "/v1/queues/documents/jobs"
        other = await client.post(post, json={"payload": 1, "tenant": "globex"}, headers=ACME)
        error = assert_error(other, 403, "forbidden")
        assert "acme" in error["message"] and "globex" in error["message"]
        batch = [{"payload": 1}, {"payload": 2, "tenant": "globex"}]
        assert_error(await client.post(post, json=batch, headers=ACME), 403, "forbidden")
        reader = {"Authorization": "Bearer reader"}
        assert_error(await client.post(post, json={"payload": 1}, headers=reader), 403, "forbidden")
        assert await app.list_jobs() == []

        # operator actions on whole queues, and the metrics of every tenant, are not a tenant's
        for action in ("pause", "resume"):
            refused = await client.post(f"/v1/queues/documents/{action}", headers=ACME)
            assert_error(refused, 403, "forbidden")
        assert not any(s.paused for s in (await app.queue_settings()).values())
        assert_error(await client.get("/metrics", headers=ACME), 403, "forbidden")
        assert (await client.get("/metrics", headers=OPS)).status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # a probe: no token needed
        paused = await client.post("/v1/queues/documents/pause", headers=OPS)
        assert paused.status_code == 200 and paused.json()["paused"] is True


@pytest.fixture
async def quota_app(url: str) -> AsyncIterator[Forebay]:
    """An app on a fresh store whose tenants acme and globex may hold 2 unfinished jobs."""
    forebay = Forebay(url, tenant_quotas={"acme": 2, "globex": 2})
    declare(forebay)
    try:
        yield forebay
    finally:
        await forebay.open()
        await forebay.backend.drop_everything()
        await forebay.close()


@pytest.mark.parametrize("first", ["acme", "globex"])
async def test_a_tenant_over_its_quota_gets_429_naming_it(quota_app: Forebay, first: str) -> None:
    second = "globex" if first == "acme" else "acme"
    who = {"acme": ACME, "globex": GLOBEX}
    async with serving(quota_app, SETTINGS) as client:
        for tenant in (first, second):
            await enqueue(client, who[tenant], [{"payload": 1}, {"payload": 2}])
            full = await client.post(
                "/v1/queues/documents/jobs", json={"payload": 3}, headers=who[tenant]
            )
            error = assert_error(full, 429, "tenant_quota_full")
            assert error["tenant"] == tenant and error["max_depth"] == 2
            assert tenant in error["message"]
            assert int(full.headers["retry-after"]) >= 1
        counts = {c.queue: c.queued for c in await quota_app.counts()}
        assert counts["documents"] == 4  # nothing of the refused requests was stored


async def test_a_tenant_token_cannot_reach_another_tenants_jobs_through_keys_runs_or_parents(
    app: Forebay,
) -> None:
    declare(app)
    async with serving(app, SETTINGS) as client:
        [theirs] = await enqueue(client, GLOBEX, {"payload": "secret", "key": "shared"})
        run = await client.post("/v1/runs", json={"name": "g", "key": "run-key"}, headers=GLOBEX)
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]

        # the same key on the same queue: refused, and nothing of the other job is shown
        taken = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 1, "key": "shared"}, headers=ACME
        )
        assert_error(taken, 409, "key_taken")
        assert str(theirs) not in taken.text and "secret" not in taken.text
        # in a list, nothing is stored: the list is all or nothing
        both = [{"payload": 2, "key": "new"}, {"payload": 3, "key": "shared"}]
        listed_taken = await client.post("/v1/queues/documents/jobs", json=both, headers=ACME)
        assert_error(listed_taken, 409, "key_taken")
        again = await client.post("/v1/runs", json={"key": "run-key"}, headers=ACME)
        assert_error(again, 409, "key_taken")
        assert run_id not in again.text

        # another tenant's run and jobs are answered as if they did not exist
        joined = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 1, "run": run_id}, headers=ACME
        )
        assert_error(joined, 400, "unknown_run")
        waits = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 1, "after": [theirs]}, headers=ACME
        )
        assert_error(waits, 400, "unknown_parent")
        assert await listed(client, "/v1/jobs", ACME) == set()  # nothing stored for acme

        # the owner goes on as before: its key, run and parents are its own
        [mine] = await enqueue(client, GLOBEX, {"payload": 2, "run": run_id, "after": [theirs]})
        assert (await app.get_job(mine)).run_id == run_id
