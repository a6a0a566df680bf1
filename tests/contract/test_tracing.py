"""Traces, on every backend: an enqueue is a ``send`` span whose traceparent the job stores; the
handler runs in a ``process`` span linked to it, with retries and dead letters as its events.

Each test has a tracer provider of its own (the SDK's, exporting to memory), given to its app
with ``tracer_provider=``: the global provider stays unset, so no other test is traced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, Tracer

from forebay import Backoff, Defer, Forebay, Job, JobState, NewJob, PermanentError

NO_WAIT = Backoff(base_s=0, jitter=False)


class Spans:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("tests")

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]

    def process_of(self, job_id: int) -> list[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if s.kind is SpanKind.CONSUMER and _attrs(s).get("messaging.message.id") == str(job_id)
        ]


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture
async def traced(url: str, spans: Spans) -> AsyncIterator[Forebay]:
    """An app on a fresh store of each backend, traced by ``spans``' provider."""
    forebay = Forebay(url, tracer_provider=spans.provider)
    try:
        yield forebay
    finally:
        if forebay._backend is not None:
            await forebay.open()
            await forebay.backend.drop_everything()
        await forebay.close()
        spans.provider.shutdown()


def traceparent(context: SpanContext | None) -> str:
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def _events(span: ReadableSpan) -> list[tuple[str, dict[str, object]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def _linked(span: ReadableSpan) -> list[SpanContext]:
    return [link.context for link in span.links]


# -- enqueue ----------------------------------------------------------------------------------
async def test_an_enqueue_is_a_send_span_and_the_job_stores_its_traceparent(
    traced: Forebay, spans: Spans
) -> None:
    with spans.tracer.start_as_current_span("caller") as caller:
        first, second = await asyncio.gather(
            traced.enqueue("docs", {"n": 1}, tenant="acme"), traced.enqueue("mail", {"n": 2})
        )
    for job, queue in ((first, "docs"), (second, "mail")):
        span = spans.one(f"send {queue}")
        assert span.kind is SpanKind.PRODUCER
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.context is not None
        assert span.context.trace_id == caller.get_span_context().trace_id
        assert job.traceparent == traceparent(span.context)
        assert (await traced.get_job(job.id)).traceparent == job.traceparent
        assert {k: v for k, v in _attrs(span).items() if k.startswith("messaging.")} == {
            "messaging.system": "forebay",
            "messaging.destination.name": queue,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.message.id": str(job.id),
        }
    assert _attrs(spans.one("send docs"))["forebay.tenant"] == "acme"
    assert "forebay.tenant" not in _attrs(spans.one("send mail"))


async def test_a_batch_is_one_send_span_and_every_job_stores_it(
    traced: Forebay, spans: Spans
) -> None:
    jobs = await traced.enqueue_many([NewJob.create("docs", {"i": i}) for i in range(3)])
    span = spans.one("send docs")
    assert span.parent is None  # nothing was current: a trace of its own
    assert _attrs(span)["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in _attrs(span)
    stored = [await traced.get_job(job.id) for job in jobs]
    assert {job.traceparent for job in stored} == {traceparent(span.context)}


async def test_a_traceparent_the_caller_gives_is_kept(traced: Forebay, spans: Spans) -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    own, plain = await traced.enqueue_many(
        [NewJob.create("docs", {}, traceparent=given), NewJob.create("docs", {})]
    )
    assert (await traced.get_job(own.id)).traceparent == given
    assert (await traced.get_job(plain.id)).traceparent == traceparent(
        spans.one("send docs").context
    )


async def test_a_refused_enqueue_is_a_failed_send_span(traced: Forebay, spans: Spans) -> None:
    from pydantic import BaseModel

    class Doc(BaseModel):
        title: str

    traced.queue("docs", payload=Doc)
    with pytest.raises(Exception, match="title"):
        await traced.enqueue("docs", {"nope": 1})
    span = spans.one("send docs")
    assert span.status.status_code is StatusCode.ERROR
    assert [name for name, _ in _events(span)] == ["exception"]
    assert await traced.list_jobs() == []


async def test_without_a_tracer_provider_nothing_is_traced_and_jobs_run(app: Forebay) -> None:
    ran: list[int] = []

    @app.handler("docs")
    async def handle(job: Job) -> None:
        ran.append(job.id)

    jobs = await asyncio.gather(app.enqueue("docs", {}), app.enqueue("docs", {}))
    assert [job.traceparent for job in jobs] == [None, None]
    await app.run_worker(burst=True)
    assert sorted(ran) == sorted(job.id for job in jobs)
    assert [(await app.get_job(job.id)).traceparent for job in jobs] == [None, None]


# -- processing -------------------------------------------------------------------------------
async def test_a_handler_runs_in_a_process_span_linked_to_its_send_span(
    traced: Forebay, spans: Spans
) -> None:
    inner: dict[int, SpanContext] = {}

    @traced.handler("docs", concurrency=2)
    async def handle(job: Job) -> None:
        with spans.tracer.start_as_current_span("user work") as span:
            inner[job.id] = span.get_span_context()

    jobs = await asyncio.gather(
        traced.enqueue("docs", {}, tenant="acme"), traced.enqueue("docs", {})
    )
    await traced.run_worker(burst=True)
    for job in jobs:
        (span,) = spans.process_of(job.id)
        assert span.name == "process docs" and span.kind is SpanKind.CONSUMER
        assert span.parent is None  # linked to the enqueue, not its child
        assert [traceparent(c) for c in _linked(span)] == [job.traceparent]
        assert span.links[0].attributes == {"messaging.message.id": str(job.id)}
        attributes = _attrs(span)
        assert attributes["messaging.system"] == "forebay"
        assert attributes["messaging.destination.name"] == "docs"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["forebay.job.attempt"] == 1
        assert attributes["forebay.job.deliveries"] == 1
        assert attributes.get("forebay.tenant") == (job.tenant or None)
        assert span.status.status_code is StatusCode.OK
        assert _events(span) == []
        user = next(s for s in spans.named("user work") if s.context == inner[job.id])
        assert user.parent is not None and span.context is not None
        assert user.parent.span_id == span.context.span_id
    assert (await traced.get_job(jobs[0].id)).state is JobState.COMPLETED


async def test_a_plain_function_handler_nests_its_spans_under_the_process_span(
    traced: Forebay, spans: Spans
) -> None:
    threads: set[str] = set()

    @traced.handler("docs", concurrency=2)
    def handle(job: Job) -> None:
        threads.add(threading.current_thread().name)
        with spans.tracer.start_as_current_span(f"sync {job.id}"):
            pass

    jobs = [await traced.enqueue("docs", {}) for _ in range(2)]
    await traced.run_worker(burst=True)
    assert threading.main_thread().name not in threads
    for job in jobs:
        (process,) = spans.process_of(job.id)
        user = spans.one(f"sync {job.id}")
        assert user.parent is not None and process.context is not None
        assert user.parent.span_id == process.context.span_id


async def test_a_retry_and_a_dead_letter_are_events_of_the_process_spans(
    traced: Forebay, spans: Spans
) -> None:
    @traced.handler("docs", max_attempts=2, backoff=NO_WAIT)
    async def handle(job: Job) -> None:
        raise ValueError(f"bad document {job.payload}")

    jobs = await asyncio.gather(traced.enqueue("docs", 1), traced.enqueue("docs", 2))
    await traced.run_worker(burst=True)
    for job in jobs:
        first, second = sorted(spans.process_of(job.id), key=lambda s: s.start_time or 0)
        assert [_attrs(s)["forebay.job.attempt"] for s in (first, second)] == [1, 2]
        assert [_attrs(s)["forebay.job.deliveries"] for s in (first, second)] == [1, 2]
        for span in (first, second):
            assert span.status.status_code is StatusCode.ERROR
            assert span.status.description == f"ValueError: bad document {job.payload}"
            assert _attrs(span)["error.type"] == "ValueError"
            assert [traceparent(c) for c in _linked(span)] == [job.traceparent]
            exception = _events(span)[0]
            assert exception[0] == "exception"
            assert exception[1]["exception.type"] == "ValueError"
        (retry,) = [e for e in _events(first) if e[0] == "retry"]
        assert retry[1]["error.type"] == "ValueError"
        assert retry[1]["forebay.job.attempt"] == 1
        assert isinstance(retry[1]["forebay.job.run_at"], str)
        (dead,) = [e for e in _events(second) if e[0] == "dead_letter"]
        assert dead[1] == {"error.type": "ValueError", "forebay.job.attempt": 2}
        assert (await traced.get_job(job.id)).state is JobState.DEAD


async def test_a_permanent_error_is_a_dead_letter_at_once(traced: Forebay, spans: Spans) -> None:
    @traced.handler("docs")
    async def handle(job: Job) -> None:
        raise PermanentError("no such document")

    job = await traced.enqueue("docs", {})
    await traced.run_worker(burst=True)
    (span,) = spans.process_of(job.id)
    assert [name for name, _ in _events(span)] == ["exception", "dead_letter"]
    assert span.status.status_code is StatusCode.ERROR


async def test_a_defer_is_an_event_not_an_error(traced: Forebay, spans: Spans) -> None:
    deferred: set[int] = set()

    @traced.handler("docs")
    async def handle(job: Job) -> None:
        if job.id not in deferred:
            deferred.add(job.id)
            raise Defer(0, "not yet")

    job = await traced.enqueue("docs", {})
    await traced.run_worker(burst=True)
    first, second = sorted(spans.process_of(job.id), key=lambda s: s.start_time or 0)
    assert [name for name, _ in _events(first)] == ["defer"]
    assert first.status.status_code is StatusCode.UNSET
    assert second.status.status_code is StatusCode.OK


async def test_a_handlers_enqueue_continues_its_process_span(traced: Forebay, spans: Spans) -> None:
    @traced.handler("parent", concurrency=2)
    async def parent(job: Job) -> None:
        await job.enqueue("child", {"of": job.id})

    @traced.handler("child", concurrency=2)
    async def child(job: Job) -> None:
        pass

    parents = [await traced.enqueue("parent", {}) for _ in range(2)]
    await traced.run_worker(burst=True)
    sends = spans.named("send child")
    assert len(sends) == 2
    for job in parents:
        (process,) = spans.process_of(job.id)
        assert process.context is not None
        (send,) = [s for s in sends if s.parent and s.parent.span_id == process.context.span_id]
        assert send.context is not None and send.context.trace_id == process.context.trace_id
        (stored,) = [j for j in await traced.list_jobs() if j.payload == {"of": job.id}]
        assert stored.traceparent == traceparent(send.context)
        (child_run,) = spans.process_of(stored.id)
        assert [traceparent(c) for c in _linked(child_run)] == [stored.traceparent]


async def test_a_batch_handler_runs_in_one_span_linked_to_each_job(
    traced: Forebay, spans: Spans
) -> None:
    @traced.handler("docs", batch_size=3, concurrency=1)
    async def handle(jobs: Sequence[Job]) -> dict[int, BaseException | None]:
        return {jobs[-1].id: PermanentError("the last one is bad")}

    jobs = [await traced.enqueue("docs", {"i": i}) for i in range(3)]
    await traced.run_worker(burst=True)
    (span,) = spans.named("process docs")
    assert _attrs(span)["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in _attrs(span)
    assert sorted(traceparent(c) for c in _linked(span)) == sorted(
        str(job.traceparent) for job in jobs
    )
    assert sorted(str((link.attributes or {})["messaging.message.id"]) for link in span.links) == (
        sorted(str(job.id) for job in jobs)
    )
    (dead,) = [e for e in _events(span) if e[0] == "dead_letter"]
    assert dead[1]["messaging.message.id"] == str(jobs[-1].id)
    assert span.status.status_code is StatusCode.ERROR
