"""What a web page in the user's browser can do to the service (docs/security.md).

Without API tokens the service trusts whoever reaches its loopback address, so it refuses what
only a browser page would send: a request addressed to a foreign name (a DNS-rebinding page
reading payloads), a change requested from a foreign origin (a cross-site form or ``fetch``),
and a JSON route's body sent as anything but JSON (the content types a page may send without a
CORS preflight). With tokens the token is the defence, the checks are off, and CORS is an
allow-list. Every case checks that a refused request changed nothing, on every backend.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from forebay import ConfigError, Forebay, JobState, SharedSecret
from forebay.http import ServiceSettings
from forebay.http.settings import parse_api_tokens
from tests.integration.test_http import (
    _make_dead,
    assert_error,
    declare,
    declare_failing,
    serving,
    total_jobs,
)

JOBS = "/v1/queues/documents/jobs"
EVIL = "http://evil.example"
TOKENS = parse_api_tokens("ops-secret:admin")
BEARER = {"Authorization": "Bearer ops-secret"}


def declare_all(app: Forebay) -> None:
    declare(app)
    declare_failing(app)
    app.source("open", queue="documents")  # auth=None: anyone who reaches it may post
    app.source("hook", queue="documents", auth=SharedSecret(header="X-Hook-Secret", secret="s"))


async def dead_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/v1/dead")).json()["jobs"])


# -- DNS rebinding: the Host names this machine ------------------------------------------------
async def test_a_request_addressed_to_a_foreign_name_is_refused_without_tokens(
    app: Forebay,
) -> None:
    declare_all(app)
    async with serving(app) as client:
        stored = await client.post(JOBS, json={"payload": {"secret": "payload"}})
        job = f"/v1/jobs/{stored.json()['id']}"
        foreign = {"Host": "evil.example:8000"}
        for path in (job, "/v1/jobs", "/v1/queues", "/v1/dead", "/metrics", "/", "/openapi.json"):
            refused = await client.get(path, headers=foreign)
            assert "evil.example" in assert_error(refused, 403, "host_not_allowed")["message"]
            assert "payload" not in refused.text
        posted = await client.post(JOBS, json={"payload": 2}, headers=foreign)
        assert_error(posted, 403, "host_not_allowed")
        assert_error(await client.post(f"{job}/cancel", headers=foreign), 403, "host_not_allowed")
        assert await total_jobs(app) == 1
        assert (await app.get_job(stored.json()["id"])).state == JobState.QUEUED


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LocalHost", "[::1]:8000", "127.0.0.2", "::1"]
)
async def test_loopback_names_and_addresses_are_served(app: Forebay, host: str) -> None:
    declare(app)
    async with serving(app) as client:
        answer = await client.get("/v1/queues", headers={"Host": host})
        assert answer.status_code == 200, answer.text


async def test_allowed_hosts_adds_names_of_this_machine(app: Forebay) -> None:
    declare(app)
    settings = ServiceSettings(workers=False, allowed_hosts=("forebay.internal",))
    async with serving(app, settings) as client:
        named = {"Host": "forebay.internal:8000", "Origin": "http://forebay.internal:8000"}
        assert (await client.get("/v1/queues", headers=named)).status_code == 200
        assert (await client.post(JOBS, json={"payload": 1}, headers=named)).status_code == 201
        other = await client.get("/v1/queues", headers={"Host": "forebay.internal.evil.example"})
        assert_error(other, 403, "host_not_allowed")


# -- CSRF: a foreign origin may not change anything --------------------------------------------
@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost:3000", "https://127.0.0.1"])
async def test_a_cross_site_request_changes_nothing_without_tokens(
    app: Forebay, origin: str
) -> None:
    declare_all(app)
    async with serving(app) as client:
        dead = await _make_dead(app, client, 2)
        queued = (await client.post(JOBS, json={"payload": 1})).json()["id"]
        before = await total_jobs(app)
        page = {"Origin": origin}
        # What a page can send without a CORS preflight: a form or fetch() as text/plain...
        plain = {**page, "Content-Type": "text/plain"}
        for path in (JOBS, "/v1/dead/purge", "/v1/dead/replay", "/v1/sources/open"):
            refused = await client.post(path, content=b'{"payload": 1}', headers=plain)
            assert_error(refused, 403, "origin_not_allowed")
        # ...and, from a page whose script may set it, the JSON content type too.
        for path in (JOBS, "/v1/dead/purge", "/v1/dead/replay", "/v1/sources/open"):
            refused = await client.post(path, json={"payload": 1}, headers=page)
            assert_error(refused, 403, "origin_not_allowed")
        assert_error(
            await client.post(f"/v1/jobs/{queued}/cancel", headers=page), 403, "origin_not_allowed"
        )
        assert await total_jobs(app) == before
        assert await dead_count(client) == len(dead)
        assert (await app.get_job(queued)).state == JobState.QUEUED
        # Reading is not a change: a cross-origin GET is answered (the browser keeps the
        # answer from the page, as no CORS header allows it to read it).
        read = await client.get("/v1/queues", headers=page)
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers


async def test_the_service_own_pages_and_scripts_without_an_origin_are_served(
    app: Forebay,
) -> None:
    declare_all(app)
    async with serving(app) as client:
        own = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
        assert (await client.post(JOBS, json={"payload": 1}, headers=own)).status_code == 201
        ids = await _make_dead(app, client, 1)
        replayed = await client.post("/v1/dead/replay", json={"ids": ids}, headers=own)
        assert replayed.json() == {"replayed": 1, "dry_run": False}
        # curl and scripts send no Origin: served as before.
        assert (await client.post(JOBS, json={"payload": 2})).status_code == 201
        cancel = await client.post(
            f"/v1/jobs/{ids[0]}/cancel", headers={"Content-Type": "text/plain"}
        )  # no body: any content type
        assert cancel.status_code == 200


# -- a JSON route takes JSON -------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_a_json_route_refuses_other_content_types_without_tokens(
    app: Forebay, content_type: str | None
) -> None:
    declare_all(app)
    async with serving(app) as client:
        await _make_dead(app, client, 1)
        before = await total_jobs(app)
        headers = {"Content-Type": content_type or ""}
        for path, body in [
            (JOBS, b'{"payload": 1}'),
            ("/v1/dead/purge", b"{}"),
            ("/v1/dead/purge", b""),
            ("/v1/dead/replay", b"{}"),
            ("/v1/sources/open", b'{"n": 1}'),
        ]:
            request = client.build_request("POST", path, content=body, headers=headers)
            if content_type is None:
                del request.headers["Content-Type"]
            refused = await client.send(request)
            error = assert_error(refused, 415, "unsupported_media_type")
            assert "application/json" in error["message"]
        assert await total_jobs(app) == before
        assert await dead_count(client) == 1


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=utf-8", "application/x+json"]
)
async def test_json_and_its_variants_are_accepted(app: Forebay, content_type: str) -> None:
    declare_all(app)
    async with serving(app) as client:
        answer = await client.post(
            JOBS, content=b'{"payload": 1}', headers={"Content-Type": content_type}
        )
        assert answer.status_code == 201, answer.text


async def test_a_source_with_its_own_secret_accepts_its_senders_as_before(app: Forebay) -> None:
    # A page cannot send the secret header without a CORS preflight, which is never allowed:
    # the secret is the defence, and webhook senders keep whatever content type they send.
    declare_all(app)
    async with serving(app) as client:
        for content_type in ("application/json", "text/plain", "application/octet-stream"):
            answer = await client.post(
                "/v1/sources/hook",
                content=b'{"event": 1}',
                headers={"Content-Type": content_type, "X-Hook-Secret": "s"},
            )
            assert answer.status_code == 201, answer.text
        assert await total_jobs(app) == 3


# -- with tokens: the token is the defence -----------------------------------------------------
async def test_with_tokens_requests_are_served_as_before(app: Forebay) -> None:
    declare_all(app)
    settings = ServiceSettings(workers=False, api_tokens=TOKENS)
    async with serving(app, settings) as client:
        anywhere = {**BEARER, "Host": "forebay.example.org", "Origin": EVIL}
        plain = {**anywhere, "Content-Type": "text/plain"}
        posted = await client.post(JOBS, content=b'{"payload": 1}', headers=plain)
        assert posted.status_code == 201, posted.text
        assert (await client.get("/v1/queues", headers=anywhere)).status_code == 200
        source = await client.post("/v1/sources/open", content=b"{}", headers=plain)
        assert source.status_code == 201, source.text
        # No CORS unless asked: a preflight is not answered with an allowance.
        preflight = await client.options(
            JOBS,
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers
        assert await total_jobs(app) == 2


async def test_cors_origins_is_an_allow_list(app: Forebay) -> None:
    declare_all(app)
    ops = "https://ops.example"
    settings = ServiceSettings(workers=False, api_tokens=TOKENS, cors_origins=(ops,))
    async with serving(app, settings) as client:

        def preflight(origin: str) -> dict[str, Any]:
            return {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }

        allowed = await client.options(JOBS, headers=preflight(ops))
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ops
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = await client.options(JOBS, headers=preflight(EVIL))
        assert "access-control-allow-origin" not in refused.headers
        answer = await client.get("/v1/queues", headers={**BEARER, "Origin": ops})
        assert answer.headers["access-control-allow-origin"] == ops
        assert (
            "access-control-allow-origin"
            not in (await client.get("/v1/queues", headers={**BEARER, "Origin": EVIL})).headers
        )


async def test_without_tokens_a_listed_origin_may_change_things(app: Forebay) -> None:
    declare(app)
    tool = "http://localhost:5173"
    settings = ServiceSettings(workers=False, cors_origins=(tool,))
    async with serving(app, settings) as client:
        answer = await client.post(JOBS, json={"payload": 1}, headers={"Origin": tool})
        assert answer.status_code == 201
        assert answer.headers["access-control-allow-origin"] == tool
        assert_error(
            await client.post(JOBS, json={"payload": 1}, headers={"Origin": EVIL}),
            403,
            "origin_not_allowed",
        )


def test_the_browser_settings_are_read_and_checked() -> None:
    env = {
        "FOREBAY_ALLOWED_HOSTS": "forebay.internal, Box.Local ",
        "FOREBAY_CORS_ORIGINS": "https://ops.example,http://localhost:5173/",
    }
    settings = ServiceSettings.from_env(env)
    assert settings.allowed_hosts == ("forebay.internal", "box.local")
    assert settings.cors_origins == ("https://ops.example", "http://localhost:5173")
    with pytest.raises(ConfigError, match="FOREBAY_API_TOKENS"):
        ServiceSettings(cors_origins=("*",))  # any page could read and change everything
    ServiceSettings(cors_origins=("*",), api_tokens=TOKENS)
    for bad in ("ops.example", "https://ops.example/path", "ftp://ops.example"):
        with pytest.raises(ConfigError, match="origin"):
            ServiceSettings(cors_origins=(bad,), api_tokens=TOKENS)
    with pytest.raises(ConfigError, match="host"):
        ServiceSettings(allowed_hosts=("evil.example:80",))
