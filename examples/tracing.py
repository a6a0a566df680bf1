"""Tracing (docs/tracing.md): an upload enqueues a job; its handler fails once, then succeeds.
The spans go over OTLP/HTTP wherever the standard ``OTEL_*`` variables say.

    pip install 'forebay[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    OTEL_SERVICE_NAME=summaries OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
        python examples/tracing.py

In the tracing backend: a trace ``upload`` → ``send summaries``, and two traces ``process
summaries`` (the first with an event ``retry``), each linked to the send span, with the
handler's ``model call`` span nested under it.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from forebay import Backoff, Forebay, Job

provider = TracerProvider()  # reads OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("examples.tracing")

app = Forebay()


@app.handler("summaries", max_attempts=3, backoff=Backoff(base_s=0, jitter=False))
async def summarise(job: Job) -> dict[str, str]:
    """Pretend to ask a model for a summary; the first attempt times out."""
    with tracer.start_as_current_span("model call") as span:
        span.set_attribute("gen_ai.request.model", "tiny-summariser")
        if job.attempt == 1:
            raise TimeoutError("the model took too long")
        text = job.payload["text"]  # type: ignore[index,call-overload]
        return {"summary": str(text)[:20]}


async def main() -> None:
    with tracer.start_as_current_span("upload"):
        job = await app.enqueue("summaries", {"text": "A long document about reservoirs."})
    print(f"job {job.id} stored with traceparent {job.traceparent}")
    await app.run_worker(burst=True)
    done = await app.get_job(job.id)
    print(f"job {done.id} {done.state} after {done.attempt} attempts: {done.result}")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
    provider.shutdown()  # sends what the batch processor still holds
