"""Traces over HTTP, on every backend: the intake and webhook sources continue the trace of an
incoming ``traceparent`` header (or start one), and the job stores the enqueue's span.

Each test traces its own app with a provider of its own (see tests/contract/test_tracing.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.requests import Request
from starlette.responses import Response

from forebay import Forebay, Job, SharedSecret
from tests.integration.test_http import serving

CALLERS = (
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(url: str, exporter: InMemorySpanExporter) -> AsyncIterator[Forebay]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    forebay = Forebay(url, tracer_provider=provider)

    @forebay.handler("docs")
    async def handle(job: Job) -> None:
        pass

    forebay.source("hook", queue="docs", auth=SharedSecret("X-Hook-Secret", "s3cret"))
    try:
        yield forebay
    finally:
        await forebay.open()
        await forebay.backend.drop_everything()
        await forebay.close()
        provider.shutdown()


def trace_id(traceparent: str | None) -> str:
    assert traceparent is not None
    return traceparent.split("-")[1]


async def test_the_intake_continues_the_callers_trace(
    traced: Forebay, exporter: InMemorySpanExporter
) -> None:
    async with serving(traced) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/queues/docs/jobs", json={"payload": {}}, headers={"traceparent": c}
                )
                for c in CALLERS
            )
        )
        shown = [(await client.get(f"/v1/jobs/{a.json()['id']}")).json() for a in answers]
    for caller, answer, seen in zip(CALLERS, answers, shown, strict=True):
        assert answer.status_code == 201, answer.text
        job = await traced.get_job(answer.json()["id"])
        assert seen["traceparent"] == job.traceparent
        (send,) = [
            s
            for s in exporter.get_finished_spans()
            if s.context is not None and f"{s.context.trace_id:032x}" == trace_id(caller)
        ]
        assert send.name == "send docs" and send.kind is SpanKind.PRODUCER
        assert send.parent is not None and send.parent.is_remote
        assert f"{send.parent.span_id:016x}" == caller.split("-")[2]
        assert send.attributes is not None
        assert send.attributes["messaging.message.id"] == str(job.id)
        assert trace_id(job.traceparent) == trace_id(caller)
        assert send.context is not None
        assert job.traceparent.split("-")[2] == f"{send.context.span_id:016x}"  # type: ignore[union-attr]


async def test_the_intake_starts_a_trace_without_a_header(
    traced: Forebay, exporter: InMemorySpanExporter
) -> None:
    async with serving(traced) as client:
        answer = await client.post("/v1/queues/docs/jobs", json=[{"payload": 1}, {"payload": 2}])
    assert answer.status_code == 201, answer.text
    (send,) = exporter.get_finished_spans()
    assert send.parent is None
    assert send.attributes is not None and send.attributes["messaging.batch.message_count"] == 2
    jobs = [await traced.get_job(j["id"]) for j in answer.json()]
    assert send.context is not None
    assert {trace_id(j.traceparent) for j in jobs} == {f"{send.context.trace_id:032x}"}


async def test_a_webhook_source_continues_the_senders_trace(
    traced: Forebay, exporter: InMemorySpanExporter
) -> None:
    async with serving(traced) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/sources/hook",
                    json={"n": i},
                    headers={"X-Hook-Secret": "s3cret", "traceparent": caller},
                )
                for i, caller in enumerate(CALLERS)
            )
        )
    for caller, answer in zip(CALLERS, answers, strict=True):
        assert answer.status_code == 201, answer.text
        (stored,) = answer.json()["jobs"]
        job = await traced.get_job(stored["id"])
        assert trace_id(job.traceparent) == trace_id(caller)
    assert sorted(
        f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans() if s.context
    ) == (sorted(trace_id(c) for c in CALLERS))


async def test_a_malformed_header_starts_a_new_trace(
    traced: Forebay, exporter: InMemorySpanExporter
) -> None:
    async with serving(traced) as client:
        answer = await client.post(
            "/v1/queues/docs/jobs", json={"payload": {}}, headers={"traceparent": "00-nonsense"}
        )
    assert answer.status_code == 201, answer.text
    (send,) = exporter.get_finished_spans()
    assert send.parent is None
    assert (await traced.get_job(answer.json()["id"])).traceparent is not None


async def test_an_instrumented_server_span_stays_the_parent(
    traced: Forebay, exporter: InMemorySpanExporter
) -> None:
    """With the server instrumented (opentelemetry-instrument does it), its span continued the
    header already: the enqueue is its child, not the header's."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = provider.get_tracer("server")

    def instrument(api: FastAPI) -> None:
        @api.middleware("http")
        async def span_per_request(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            with server.start_as_current_span("POST", kind=SpanKind.SERVER):
                return await call_next(request)

    async with serving(traced, mount=instrument) as client:
        answer = await client.post(
            "/v1/queues/docs/jobs", json={"payload": {}}, headers={"traceparent": CALLERS[0]}
        )
    assert answer.status_code == 201, answer.text
    (request,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    (send,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert request.context is not None and send.parent is not None
    assert send.parent.span_id == request.context.span_id
    provider.shutdown()
