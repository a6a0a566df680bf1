"""Over HTTP: a job's own ``max_attempts`` / ``timeout_s`` in the enqueue body, refused when
bad with nothing stored; and the service's workers keep finished jobs as long as it is told."""

from __future__ import annotations

from datetime import timedelta

import pytest

from forebay import Backoff, Forebay, Job, JobState, TransientError
from forebay.http.settings import ServiceSettings
from forebay.testing import Settled
from tests.integration.test_http import assert_error, serving, total_jobs


async def test_a_jobs_own_limits_are_taken_from_the_body_and_applied(app: Forebay) -> None:
    @app.handler("documents", max_attempts=4, backoff=Backoff(base_s=0, jitter=False))
    async def ingest(job: Job) -> None:
        raise TransientError("down")

    async with serving(app) as client:
        one = await client.post(
            "/v1/queues/documents/jobs", json={"payload": 1, "max_attempts": 1, "timeout_s": 2.5}
        )
        assert one.status_code == 201, one.text
        many = await client.post(
            "/v1/queues/documents/jobs",
            json=[{"payload": 2, "max_attempts": 2}, {"payload": 3}],
        )
        assert many.status_code == 201, many.text
        ids = [one.json()["id"], *(j["id"] for j in many.json())]
        shown = [(await client.get(f"/v1/jobs/{i}")).json() for i in ids]
        assert [(j["max_attempts"], j["timeout_s"]) for j in shown] == [
            (1, 2.5),
            (2, None),
            (None, None),
        ]
    await app.run_worker(burst=True)
    stored = [await app.get_job(i) for i in ids]
    assert {j.state for j in stored} == {JobState.DEAD}
    assert [j.attempt for j in stored] == [1, 2, 4]  # the third: the queue's own limit


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"timeout_s": 604801}, "timeout_s"),
        ({"timeout_s": "10"}, "timeout_s"),
    ],
)
async def test_bad_limits_answer_400_and_store_nothing(
    app: Forebay, fields: dict[str, object], words: str
) -> None:
    @app.handler("documents")
    async def ingest(job: Job) -> None:
        pass

    async with serving(app) as client:
        response = await client.post("/v1/queues/documents/jobs", json={"payload": 1, **fields})
        error = assert_error(response, 400, "invalid_payload")
        assert words in error["message"]
        batch = [{"payload": 1}, {"payload": 2, **fields}]
        assert_error(
            await client.post("/v1/queues/documents/jobs", json=batch), 400, "invalid_payload"
        )
    assert await total_jobs(app) == 0


async def test_the_services_workers_keep_finished_jobs_as_long_as_told(app: Forebay) -> None:
    @app.handler("documents")
    async def ingest(job: Job) -> None:
        pass

    @app.handler("kept", completed_retention=timedelta(hours=1))
    async def keep(job: Job) -> None:
        pass

    settled = Settled()
    app.observers.append(settled)
    env = {"FOREBAY_COMPLETED_RETENTION": "0", "FOREBAY_DEAD_RETENTION": "60"}
    settings = ServiceSettings.from_env(env, workers=True)
    assert settings.completed_retention == timedelta(0)
    assert settings.dead_retention == timedelta(seconds=60)
    async with serving(app, settings) as client:
        gone = (await client.post("/v1/queues/documents/jobs", json={"payload": 1})).json()["id"]
        kept = (await client.post("/v1/queues/kept/jobs", json={"payload": 1})).json()["id"]
        assert await settled.outcome_of(gone) == "completed"
        assert await settled.outcome_of(kept) == "completed"
        service = client._transport.app.state.service  # type: ignore[attr-defined]
        worker = service.workers.worker
        assert worker.settings.completed_retention == timedelta(0)
        assert worker.settings.dead_retention == timedelta(seconds=60)
        assert await worker.prune_once() == 1
        assert (await client.get(f"/v1/jobs/{gone}")).status_code == 404
        assert (await client.get(f"/v1/jobs/{kept}")).json()["state"] == "completed"


def test_bad_retention_settings_say_which_variable() -> None:
    from forebay.errors import ConfigError

    with pytest.raises(ConfigError, match="FOREBAY_COMPLETED_RETENTION"):
        ServiceSettings.from_env({"FOREBAY_COMPLETED_RETENTION": "an hour"})
