"""Flow control over HTTP (httpx over ASGI), on every backend: each API token's intake rate
(``FOREBAY_TOKEN_RATE``) and each source's ``rate_limit`` answer 429 with ``Retry-After`` and the
IETF ``RateLimit`` headers once spent, one caller's limit leaving the others alone, and are
counted in ``forebay_intake_throttled_total``; jobs carry their flow keys and tenant from the
body; ``GET /v1/queues`` shows each queue's limits and the jobs they hold back.

The rates are a few per minute, so no request of a test waits for a token to come back."""

from __future__ import annotations

import httpx
import pytest

from forebay import Forebay, SharedSecret
from forebay.errors import ConfigError
from forebay.flow import Rate
from forebay.http import ServiceSettings
from forebay.http.settings import Scope, parse_api_tokens
from tests.integration.test_http import assert_error, declare, sample, serving

POST = "/v1/queues/documents/jobs"


def assert_throttled(response: httpx.Response, policy: str, quota: int, window_s: int) -> None:
    assert_error(response, 429, "rate_limited")
    retry_s = int(response.headers["retry-after"])
    assert 1 <= retry_s <= window_s
    assert response.headers["ratelimit-policy"] == f'"{policy}";q={quota};w={window_s}'
    assert response.headers["ratelimit"] == f'"{policy}";r=0;t={retry_s}'


async def test_each_api_token_has_its_own_intake_rate(app: Forebay) -> None:
    declare(app)
    settings = ServiceSettings(
        workers=False,
        api_tokens=parse_api_tokens("first-secret:enqueue,second-secret:enqueue"),
        token_rate=Rate.parse("2/m"),
    )
    first = {"Authorization": "Bearer first-secret"}
    second = {"Authorization": "Bearer second-secret"}
    async with serving(app, settings) as client:
        for body in ({"payload": 1}, [{"payload": 2}, {"payload": 3}]):  # a list is one request
            assert (await client.post(POST, json=body, headers=first)).status_code == 201
        refused = await client.post(POST, json={"payload": 4}, headers=first)
        assert_throttled(refused, "token", quota=2, window_s=60)
        assert "2/m" in refused.json()["error"]["message"]
        assert len(await app.list_jobs()) == 3  # nothing of the refused request was stored
        # the second token's bucket is its own
        for n in range(2):
            answer = await client.post(POST, json={"payload": n}, headers=second)
            assert answer.status_code == 201, answer.text
        assert_throttled(
            await client.post(POST, json={"payload": 9}, headers=second), "token", 2, 60
        )
        text = (await client.get("/metrics")).text
        assert sample(text, "forebay_intake_throttled_total", limit="token", source="") == 2
        assert sample(text, "forebay_intake_requests_total", source="api", status="429") == 2
        assert "secret" not in text


async def test_each_source_has_its_own_rate_limit(app: Forebay) -> None:
    declare(app)
    app.source(
        "hook",
        queue="documents",
        auth=SharedSecret(header="X-Hook-Secret", secret="s3cret"),
        rate_limit="2/m",
    )
    app.source("other", queue="documents", auth=SharedSecret(header="X-Other", secret="o"))
    hook = {"X-Hook-Secret": "s3cret"}
    async with serving(app) as client:
        # a sender without the secret spends nothing of the source's rate
        for _ in range(3):
            wrong = await client.post("/v1/sources/hook", json={}, headers={"X-Hook-Secret": "x"})
            assert_error(wrong, 403, "forbidden")
        for n in range(2):
            made = await client.post("/v1/sources/hook", json={"n": n}, headers=hook)
            assert made.status_code == 201, made.text
        refused = await client.post("/v1/sources/hook", json={"n": 2}, headers=hook)
        assert_throttled(refused, "source", quota=2, window_s=60)
        assert len(await app.list_jobs()) == 2
        for n in range(3):  # another source, and the API, are not held back
            made = await client.post("/v1/sources/other", json={"n": n}, headers={"X-Other": "o"})
            assert made.status_code == 201, made.text
        assert (await client.post(POST, json={"payload": 1})).status_code == 201
        text = (await client.get("/metrics")).text
        assert sample(text, "forebay_intake_throttled_total", limit="source", source="hook") == 1
        assert sample(text, "forebay_intake_throttled_total", limit="source", source="other") == 0


async def test_jobs_carry_their_tenant_and_flow_keys_from_the_body(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        body = {
            "payload": 1,
            "tenant": "acme",
            "rate_key": "api.example.org",
            "concurrency_key": 42,
            "fair_key": "user-7",
        }
        made = await client.post(POST, json=body)
        assert made.status_code == 201, made.text
        shown = (await client.get(f"/v1/jobs/{made.json()['id']}")).json()
        assert (shown["tenant"], shown["rate_key"]) == ("acme", "api.example.org")
        assert (shown["concurrency_key"], shown["fair_key"]) == ("42", "user-7")
        batch = [{"payload": 2, "tenant": "globex"}, {"payload": 3, "fair_key": 5}]
        stored = (await client.post(POST, json=batch)).json()
        jobs = [await app.get_job(j["id"]) for j in stored]
        assert [(j.tenant, j.fair_key) for j in jobs] == [("globex", None), (None, "5")]
        for wrong in (
            {"payload": 1, "tenant": "no spaces"},
            {"payload": 1, "tenant": ""},
            {"payload": 1, "rate_key": ""},
            {"payload": 1, "rate_key": "k" * 201},
            {"payload": 1, "concurrency_key": True},
            {"payload": 1, "fair_key": 1.5},
            {"payload": 1, "fair_key": {"a": 1}},
            [{"payload": 1}, {"payload": 2, "tenant": "x" * 101}],
        ):
            assert_error(await client.post(POST, json=wrong), 400, "invalid_payload")
        assert len(await app.list_jobs()) == 3


async def test_queues_show_their_limits_and_the_jobs_they_hold_back(url: str, app: Forebay) -> None:
    declare(app, rate_limit="2/m", global_concurrency=5)
    declared = app.queues["documents"].limits.to_dict()
    async with serving(app) as client:
        rows = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        # no worker stored them yet: the app's declared limits
        assert rows["documents"]["limits"] == declared
        assert rows["documents"]["limits"]["rate"] == {"count": 2, "period_s": 60.0, "burst": 2}
        assert rows["documents"]["limits"]["concurrency"] == 5
        assert rows["documents"]["throttled"] == 0
        await app.set_queue("documents", limits=app.queues["documents"].limits)  # as a worker
        for n in range(4):
            await client.post(POST, json={"payload": n})
        backend = await app.open()
        assert len(await backend.lease(queue="documents", limit=4, worker_id="w", lease_s=30)) == 2
        rows = {q["queue"]: q for q in (await client.get("/v1/queues")).json()["queues"]}
        assert rows["documents"]["throttled"] == 2  # the rate has no token left
        assert rows["documents"]["running"] == 2 and rows["documents"]["queued"] == 2
        bare = Forebay(url)  # an app that declares no limit shows the stored ones
        try:
            async with serving(bare) as other:
                rows = {q["queue"]: q for q in (await other.get("/v1/queues")).json()["queues"]}
                assert rows["documents"]["limits"] == declared
                assert rows["documents"]["throttled"] == 2
        finally:
            await bare.close()


async def test_the_openapi_document_describes_tenants_limits_and_throttling(
    app: Forebay,
) -> None:
    declare(app)
    async with serving(app) as client:
        doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"limits", "throttled"} <= set(schemas["QueueOut"]["properties"])
    assert {"tenant", "rate_key", "concurrency_key", "fair_key"} <= set(
        schemas["JobOut"]["properties"]
    )
    body = doc["paths"]["/v1/queues/{queue}/jobs"]["post"]
    job_in = body["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert {"tenant", "rate_key", "concurrency_key", "fair_key"} <= set(job_in["properties"])
    assert "rate_limited" in body["responses"]["429"]["description"]


def test_tokens_bind_tenants_and_the_token_rate_is_a_setting() -> None:
    tokens = parse_api_tokens("s3cr3t:enqueue+read:acme,all::globex,ops:admin,plain")
    assert [(t.tenant, sorted(t.scopes)) for t in tokens] == [
        ("acme", ["enqueue", "read"]),
        ("globex", sorted(Scope)),
        (None, ["admin"]),
        (None, sorted(Scope)),
    ]
    with pytest.raises(ConfigError, match="tenant"):
        parse_api_tokens("s3cr3t:read:no spaces")
    settings = ServiceSettings.from_env({"FOREBAY_TOKEN_RATE": "100/s"})
    assert settings.token_rate == Rate(100, 1.0)
    assert settings.redacted()["token_rate"] == "100/s"
    assert ServiceSettings.from_env({}).token_rate is None
    with pytest.raises(ConfigError, match="FOREBAY_TOKEN_RATE"):
        ServiceSettings.from_env({"FOREBAY_TOKEN_RATE": "fast"})
