"""Payload models without a store: validation at enqueue, parsing for the handler."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, Field, field_validator

from forebay import ConfigError, Forebay, InvalidPayload, Job, NewJob, PayloadValidationError
from forebay.errors import PermanentError
from forebay.job import JobState, PayloadText
from forebay.payloads import read_payloads, validate_jobs
from forebay.queue_config import QueueConfig
from forebay.worker.calls import call_handler


class Order(BaseModel):
    id: int
    qty: int = Field(gt=0)
    placed: datetime
    note: str = ""

    @field_validator("note")
    @classmethod
    def _no_shouting(cls, value: str) -> str:
        if value.isupper():
            raise ValueError("no shouting")
        return value


GOOD = {"id": "7", "qty": 2, "placed": "2026-01-02T03:04:05Z"}
CANONICAL = {"id": 7, "qty": 2, "placed": "2026-01-02T03:04:05Z", "note": ""}


def stored(job_id: int, queue: str, payload: object) -> Job:
    """A job as a backend reads it: its payload still the stored text."""
    text = PayloadText(json.dumps(payload))
    return Job(id=job_id, queue=queue, payload=text, state=JobState.RUNNING, lease_token="t")


# -- at enqueue ----------------------------------------------------------------------------------
def test_a_good_payload_is_stored_as_the_models_json() -> None:
    [job] = validate_jobs([NewJob.create("orders", GOOD)], {"orders": Order})
    assert json.loads(job.payload_json) == CANONICAL
    assert job.stored_as(1, datetime.now(UTC)).payload == CANONICAL  # what enqueue returns


def test_a_model_instance_is_stored_as_its_json_on_any_queue() -> None:
    order = Order(id=7, qty=2, placed=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    plain = NewJob.create("anything", order)  # a queue without a model takes it too
    assert json.loads(plain.payload_json) == CANONICAL and plain.payload == CANONICAL
    [typed] = validate_jobs([NewJob.create("orders", order)], {"orders": Order})
    assert typed.payload_json == plain.payload_json


def test_a_bad_payload_is_refused_with_pydantics_field_errors() -> None:
    bad = {"id": "x", "qty": 0, "placed": "2026-01-02T03:04:05Z", "note": "HEY"}
    with pytest.raises(PayloadValidationError) as refused:
        validate_jobs([NewJob.create("orders", bad)], {"orders": Order})
    error = refused.value
    assert isinstance(error, InvalidPayload)
    assert [(e["loc"], e["type"]) for e in error.errors] == [
        (["id"], "int_parsing"),
        (["qty"], "greater_than"),
        (["note"], "value_error"),
    ]
    json.dumps(error.errors)  # JSON all through, the validator's exception included
    assert error.queue == "orders" and error.model == "Order" and error.index == 0
    assert "id: Input should be a valid integer" in str(error)
    assert "qty: Input should be greater than 0" in str(error)


def test_one_bad_job_refuses_the_batch_and_names_its_position() -> None:
    jobs = [NewJob.create("orders", GOOD), NewJob.create("other", {"x": 1})]
    jobs += [NewJob.create("orders", {"id": 1})]
    with pytest.raises(PayloadValidationError) as refused:
        validate_jobs(jobs, {"orders": Order})
    assert refused.value.index == 2
    assert "job 2 of a batch of 3" in str(refused.value)
    assert {tuple(e["loc"]) for e in refused.value.errors} == {("qty",), ("placed",)}


def test_queues_without_a_model_are_left_as_they_are() -> None:
    job = NewJob.create("other", {"id": "x"})
    assert validate_jobs([job], {"orders": Order})[0] is job


def test_a_payload_option_must_be_a_pydantic_model() -> None:
    app = Forebay("sqlite:///unused.db")
    with pytest.raises(ConfigError, match="pydantic model class"):
        app.handler("orders", payload=dict)(lambda job: None)
    with pytest.raises(ConfigError, match="pydantic model class"):
        app.queue("orders", payload=Order(id=1, qty=1, placed=datetime.now(UTC)))


def test_the_app_knows_its_payload_models() -> None:
    app = Forebay("sqlite:///unused.db")

    @app.handler("orders", payload=Order)
    async def handle(job: Job) -> None: ...

    app.queue("produced", payload=Order)
    app.queue("plain")
    assert dict(app.payload_models) == {"orders": Order, "produced": Order}
    app.queue("produced")  # declared again without one (e.g. to add a hook): it keeps its model
    assert dict(app.payload_models) == {"orders": Order, "produced": Order}


# -- in the handler's process ------------------------------------------------------------------
def test_payloads_become_model_instances_in_place() -> None:
    jobs = [stored(1, "orders", GOOD), stored(2, "orders", {"id": 2})]
    refused = read_payloads(Order, jobs)
    assert isinstance(jobs[0].payload, Order) and jobs[0].payload.id == 7
    assert set(refused) == {2} and isinstance(refused[2], PermanentError)
    assert "does not match Order" in str(refused[2]) and "qty: Field required" in str(refused[2])
    # The job stays JSON where it is shown, and crosses processes as its JSON.
    assert jobs[0].to_dict()["payload"] == CANONICAL
    assert json.loads(jobs[0].payload_text) == CANONICAL
    assert pickle.loads(pickle.dumps(jobs[0])).payload == jobs[0].payload


def test_payload_as_types_the_payload_anywhere() -> None:
    job = stored(1, "orders", CANONICAL)
    order = job.payload_as(Order)  # parsed from the stored text
    assert order == Order.model_validate(CANONICAL)
    read_payloads(Order, [job])
    assert job.payload_as(Order) is job.payload


def _config(seen: list[object], *, batch_size: int | None = None) -> QueueConfig:
    async def handle(arg: Job | Sequence[Job]) -> None:
        seen.append([j.payload for j in arg] if isinstance(arg, list) else arg.payload)

    return QueueConfig("orders", handle, batch_size=batch_size, payload_model=Order)


async def test_a_handler_gets_the_model_and_never_a_payload_it_refuses() -> None:
    seen: list[object] = []
    await call_handler(_config(seen), [stored(1, "orders", GOOD)])
    assert seen == [Order.model_validate(CANONICAL)]
    with pytest.raises(PermanentError, match="does not match Order"):
        await call_handler(_config(seen), [stored(2, "orders", {"id": 1})])
    assert len(seen) == 1


async def test_a_batch_handler_gets_the_good_jobs_and_the_bad_ones_fail() -> None:
    seen: list[object] = []
    jobs = [stored(1, "orders", GOOD), stored(2, "orders", {}), stored(3, "orders", GOOD)]
    errors, _ = await call_handler(_config(seen, batch_size=10), jobs)
    assert seen == [[Order.model_validate(CANONICAL)] * 2]
    assert set(errors) == {2} and isinstance(errors[2], PermanentError)
    seen.clear()
    errors, _ = await call_handler(_config(seen, batch_size=10), [stored(4, "orders", {})])
    assert seen == [] and set(errors) == {4}


async def test_a_queue_without_a_model_never_parses_for_it() -> None:
    seen: list[object] = []

    async def handle(job: Job) -> None:
        seen.append(job.id)  # a handler that never reads the payload

    job = stored(1, "plain", {"id": "x"})
    await call_handler(QueueConfig("plain", handle), [job])
    assert seen == [1] and type(job.__getstate__()["payload"]) is PayloadText  # never parsed


# -- the OpenAPI document ----------------------------------------------------------------------
def test_a_model_named_like_a_component_of_the_api_keeps_both() -> None:
    from forebay.http import create_app

    class ErrorOut(BaseModel):  # the name of the API's own error body
        reason: str

    app = Forebay("sqlite:///unused.db")
    app.queue("complaints", payload=ErrorOut)
    app.queue("orders", payload=Order)
    schema = create_app(app).openapi()
    components = schema["components"]["schemas"]
    assert "error" in components["ErrorOut"]["properties"]  # the API's, untouched
    assert components["payload-ErrorOut"]["properties"] == {
        "reason": {"title": "Reason", "type": "string"}
    }
    body = schema["paths"]["/v1/queues/complaints/jobs"]["post"]["requestBody"]
    one = body["content"]["application/json"]["schema"]["oneOf"][0]
    assert one["properties"]["payload"]["$ref"] == "#/components/schemas/payload-ErrorOut"
    orders = schema["paths"]["/v1/queues/orders/jobs"]["post"]["requestBody"]
    payload = orders["content"]["application/json"]["schema"]["oneOf"][0]["properties"]["payload"]
    assert payload["$ref"] == "#/components/schemas/payload-Order"
    assert create_app(app).openapi() == schema  # built the same way every time
