"""Fuzzing: schemathesis generates requests from the service's own OpenAPI schema.

Valid and invalid requests to every documented operation (bounded examples each) must never get
a 5xx, and the service must still answer afterwards. The app runs in-process (ASGI) on SQLite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python.asgi import ASGIClient

from forebay import Forebay, Job, PermanentError, SharedSecret
from forebay.http import ServiceSettings, create_app

EXAMPLES_PER_OPERATION = 50
BASE = "http://127.0.0.1:8000"  # the token-less service answers loopback names only
KNOWN = {"queue": "documents", "source": "open", "job_id": 1}


def fuzz_app(tmp_path: Path) -> Forebay:
    app = Forebay(f"sqlite:///{tmp_path / 'fuzz.db'}")

    @app.handler("documents", max_depth=200)
    async def ingest(job: Job) -> None:
        raise PermanentError("fuzzed")

    app.source("open", queue="documents")
    app.source("locked", queue="documents", auth=SharedSecret(header="X-Secret", secret="s"))
    return app


def _short_wait(case: Any) -> None:
    """A long poll (``?wait=S``) holds its request up to S seconds: a valid S becomes 0.1 s, so
    that the examples end in time (the invalid ones are kept as generated)."""
    wait = (case.query or {}).get("wait")
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return
    if 0.1 < seconds <= 60:
        case.query["wait"] = 0.1


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    app = fuzz_app(tmp_path)
    api = create_app(app, ServiceSettings(workers=False))
    schema = schemathesis.openapi.from_dict(api.openapi())
    client = ASGIClient(api, base_url=BASE)  # not entered: requests only, the lifespan stays ours
    failures: list[str] = []

    def check(case: Any) -> None:
        _short_wait(case)
        response = case.call(base_url=BASE, session=client)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

    seeded = client.post("/v1/queues/documents/jobs", json=[{"payload": i} for i in range(3)])
    assert seeded.status_code == 201, seeded.text
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:
        known = {k: v for k, v in KNOWN.items() if f"{{{k}}}" in operation.path}
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        if known:
            strategies += [
                operation.as_strategy(mode, path_parameters=known) for mode in GenerationMode
            ]

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            check(case)

        run()

    assert not failures, "\n".join(failures[:20])
    assert client.get("/healthz").status_code == 200
    after = client.post("/v1/queues/documents/jobs", json={"payload": "still here"})
    assert after.status_code in (201, 429), after.text
    asyncio.run(app.close())
