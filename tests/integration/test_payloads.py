"""Payload models on every backend: refused before anything is stored (Python and HTTP),
stored as the model's JSON, handed to the handler as the model; queues without one unchanged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field

from forebay import (
    Forebay,
    InvalidPayload,
    Job,
    JobFilter,
    JobState,
    NewJob,
    PayloadValidationError,
)
from forebay.testing import drain
from tests.integration.test_http import assert_error, serving, total_jobs


class Order(BaseModel):
    id: int
    qty: int = Field(gt=0)
    placed: datetime


GOOD = {"id": "7", "qty": 2, "placed": "2026-01-02T03:04:05+00:00"}
CANONICAL = {"id": 7, "qty": 2, "placed": "2026-01-02T03:04:05Z"}
BAD = {"id": "x", "qty": 0, "placed": "2026-01-02T03:04:05Z"}


def declare(app: Forebay) -> list[tuple[str, object, dict[str, Any]]]:
    """``orders`` with the model, ``plain`` without; what each handler saw."""
    seen: list[tuple[str, object, dict[str, Any]]] = []

    @app.handler("orders", payload=Order)
    async def orders(job: Job) -> None:
        seen.append(("orders", job.payload, job.to_dict()))

    @app.handler("plain")
    def plain(job: Job) -> None:  # a plain function: runs in a thread
        seen.append(("plain", job.payload, job.to_dict()))

    app.source("shop", queue="orders")
    return seen


async def payloads(app: Forebay, queue: str) -> list[object]:
    jobs = await app.list_jobs(JobFilter(queue=queue))
    return [j.payload for j in sorted(jobs, key=lambda j: j.id)]


# -- Python ------------------------------------------------------------------------------------
async def test_a_bad_payload_is_refused_with_field_errors_and_nothing_stored(
    app: Forebay,
) -> None:
    declare(app)
    with pytest.raises(PayloadValidationError) as refused:
        await app.enqueue("orders", BAD, key="k1")
    assert {tuple(e["loc"]) for e in refused.value.errors} == {("id",), ("qty",)}
    # One bad job refuses the whole batch, the jobs of other queues too.
    batch = [NewJob.create("plain", {"any": 1}), NewJob.create("orders", GOOD)]
    batch.append(NewJob.create("orders", {"id": 8}))
    with pytest.raises(PayloadValidationError) as whole:
        await app.enqueue_many(batch)
    assert whole.value.index == 2
    assert await total_jobs(app) == 0
    # The key of the refused job was not taken either.
    taken = await app.enqueue("orders", GOOD, key="k1")
    assert taken.created and taken.payload == CANONICAL


async def test_good_payloads_are_stored_as_the_models_json(app: Forebay) -> None:
    declare(app)
    order = Order(id=9, qty=1, placed=datetime(2026, 5, 6, tzinfo=UTC))
    first = await app.enqueue("orders", GOOD)
    second = await app.enqueue("orders", order)
    assert second.payload == {"id": 9, "qty": 1, "placed": "2026-05-06T00:00:00Z"}
    [third] = await app.enqueue_many([NewJob.create("orders", {**GOOD, "id": 10})])
    assert first.payload == CANONICAL  # as returned, and as stored
    assert await payloads(app, "orders") == [
        CANONICAL,
        {"id": 9, "qty": 1, "placed": "2026-05-06T00:00:00Z"},
        {**CANONICAL, "id": 10},
    ]
    assert (await app.get_job(third.id)).payload_as(Order).id == 10


async def test_enqueue_sync_validates_too(app: Forebay, url: str) -> None:
    declare(app)
    producer = Forebay(url)  # its own event loop thread: a script's producer
    producer.queue("orders", payload=Order)

    def produce() -> int:
        try:
            with pytest.raises(PayloadValidationError):
                producer.enqueue_sync("orders", BAD)
            return producer.enqueue_sync("orders", GOOD).id
        finally:
            producer.close_sync()

    job_id = await asyncio.to_thread(produce)
    assert await payloads(app, "orders") == [CANONICAL]
    assert (await app.get_job(job_id)).payload == CANONICAL


async def test_the_handler_gets_the_model_and_other_queues_are_unchanged(app: Forebay) -> None:
    seen = declare(app)
    await app.enqueue("orders", GOOD)
    await app.enqueue("orders", {**GOOD, "id": 8})
    await app.enqueue("plain", {"id": "x", "extra": [1]})
    await drain(app)
    by_queue = {(queue, getattr(p, "id", None)): (p, d) for queue, p, d in seen}
    for order_id in (7, 8):
        payload, shown = by_queue[("orders", order_id)]
        assert isinstance(payload, Order) and payload.qty == 2
        assert payload.placed == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert shown["payload"] == {**CANONICAL, "id": order_id}  # to_dict() stays JSON
    payload, shown = by_queue[("plain", None)]
    assert payload == {"id": "x", "extra": [1]} == shown["payload"]
    assert [c.completed for c in await app.counts()] == [2, 1]


async def test_a_stored_payload_the_model_refuses_is_dead_at_once(app: Forebay, url: str) -> None:
    seen = declare(app)
    async with Forebay(url) as bare:  # a producer that does not declare the model
        unchecked = await bare.enqueue("orders", BAD)
        fine = await bare.enqueue("orders", GOOD)
    await drain(app)
    dead = await app.get_job(unchecked.id)
    assert dead.state == JobState.DEAD and dead.attempt == 1
    assert dead.error_type == "PermanentError"
    assert "does not match Order" in (dead.error or "") and "qty" in (dead.error or "")
    assert (await app.get_job(fine.id)).state == JobState.COMPLETED
    assert [p for _, p, _ in seen] == [Order.model_validate(GOOD)]


async def test_concurrent_good_and_bad_enqueues(app: Forebay) -> None:
    declare(app)

    async def one(i: int) -> int | None:
        payload = {**GOOD, "id": i} if i % 2 else {**BAD, "id": i}
        try:
            return (await app.enqueue("orders", payload, key=f"o{i}")).id
        except PayloadValidationError as exc:
            assert exc.errors and exc.errors[0]["loc"] == ["qty"]
            return None

    answers = await asyncio.gather(*(one(i) for i in range(40)))
    stored = [a for a in answers if a is not None]
    assert len(stored) == 20 and None in answers
    assert sorted(p["id"] for p in await payloads(app, "orders")) == list(range(1, 40, 2))


# -- HTTP --------------------------------------------------------------------------------------
async def test_http_answers_422_with_the_field_errors_and_stores_nothing(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:
        one = await client.post("/v1/queues/orders/jobs", json={"payload": BAD})
        error = assert_error(one, 422, "payload_validation")
        assert "does not match Order" in error["message"]
        assert error["details"] == [
            {
                "job": 0,
                "loc": ["id"],
                "message": "Input should be a valid integer, unable to parse string as an integer",
                "type": "int_parsing",
            },
            {
                "job": 0,
                "loc": ["qty"],
                "message": "Input should be greater than 0",
                "type": "greater_than",
            },
        ]
        many = [{"payload": GOOD, "key": "a"}, {"payload": {"id": 1}, "key": "b"}]
        listed = await client.post("/v1/queues/orders/jobs", json=many)
        error = assert_error(listed, 422, "payload_validation")
        assert {(d["job"], d["type"]) for d in error["details"]} == {
            (1, "missing"),
        } and [d["loc"] for d in error["details"]] == [["qty"], ["placed"]]
        webhook = await client.post("/v1/sources/shop", json={"id": 1, "qty": -1})
        assert assert_error(webhook, 422, "payload_validation")["details"][0]["loc"] == ["qty"]
        # Not JSON stays a 400: the model is checked once the body is jobs.
        malformed = await client.post("/v1/queues/orders/jobs", content=b"{")
        assert_error(malformed, 400, "malformed_json")
        assert await total_jobs(app) == 0

        good = await client.post("/v1/queues/orders/jobs", json=[{"payload": GOOD}] * 2)
        assert good.status_code == 201, good.text
        hooked = await client.post("/v1/sources/shop", json={**GOOD, "id": 8})
        assert hooked.status_code == 201, hooked.text
        plain = await client.post("/v1/queues/plain/jobs", json={"payload": BAD})
        assert plain.status_code == 201, plain.text
        shown = await client.get(f"/v1/jobs/{good.json()[0]['id']}")
        assert shown.json()["payload"] == CANONICAL
    assert await payloads(app, "orders") == [CANONICAL, CANONICAL, {**CANONICAL, "id": 8}]
    assert await payloads(app, "plain") == [BAD]


async def test_concurrent_good_and_bad_requests(app: Forebay) -> None:
    declare(app)
    async with serving(app) as client:

        async def post(i: int) -> int:
            payload = {**GOOD, "id": i} if i % 3 else {**BAD, "id": i}
            response = await client.post(
                "/v1/queues/orders/jobs", json={"payload": payload, "key": f"k{i}"}
            )
            return response.status_code

        codes = await asyncio.gather(*(post(i) for i in range(30)))
    assert codes == [422 if i % 3 == 0 else 201 for i in range(30)]
    stored = await payloads(app, "orders")
    assert sorted(p["id"] for p in stored) == [i for i in range(30) if i % 3]


async def test_the_openapi_document_shows_each_queues_model(app: Forebay) -> None:
    declare(app)
    app.queue("returns", payload=Order)  # a producer-only queue with the same model
    async with serving(app, lifespan=False) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert "/v1/queues/{queue}/jobs" in paths  # every queue, any payload
    assert "/v1/queues/plain/jobs" not in paths  # no model: nothing to add
    components = schema["components"]["schemas"]
    assert components["Order"]["properties"]["qty"] == {
        "exclusiveMinimum": 0,
        "title": "Qty",
        "type": "integer",
    }
    for queue in ("orders", "returns"):
        operation = paths[f"/v1/queues/{queue}/jobs"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        one, many = body["oneOf"]
        assert one["properties"]["payload"]["$ref"] == "#/components/schemas/Order"
        assert many["items"]["properties"]["payload"]["$ref"] == "#/components/schemas/Order"
        assert "422" in operation["responses"] and "parameters" not in operation
    ids = [op["post"]["operationId"] for p, op in paths.items() if "post" in op]
    assert len(ids) == len(set(ids))


async def test_invalid_payloads_stay_invalid_payloads(app: Forebay) -> None:
    """Code that catches InvalidPayload catches a model's refusal too."""
    declare(app)
    with pytest.raises(InvalidPayload):
        await app.enqueue("orders", {"id": 1, "qty": 1})
