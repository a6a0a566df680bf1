"""Tracing is optional and configured the standard way, each checked in a fresh interpreter: forebay
runs without ``opentelemetry`` installed, and an app given no provider follows the global one
that an SDK sets up (with the ``OTEL_*`` variables), even when set up after the app was made.

(Recent FastAPI releases depend on ``opentelemetry-api`` themselves, so the check without it
stays in the core: the app, its workers and the header helper the HTTP routes use.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

WITHOUT_OTEL = """
    import sys
    sys.modules["opentelemetry"] = None  # as if forebay[otel] were not installed

    import asyncio
    from forebay import Forebay, Job
    from forebay.tracing import continue_trace

    async def main(url):
        app = Forebay(url)
        ran = []

        @app.handler("docs")
        async def handle(job: Job) -> None:
            child = await job.enqueue("more", {}) if job.queue == "docs" else None
            ran.append(child.traceparent if child else None)

        @app.handler("more")
        async def more(job: Job) -> None:
            ran.append("more")

        jobs = [await app.enqueue("docs", {}), await app.enqueue("docs", {})]
        header = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        with continue_trace(header):  # as the intake does with a request's headers
            jobs.append(await app.enqueue("docs", {}))
        await app.run_worker(burst=True)
        stored = [(await app.get_job(job.id)) for job in jobs]
        await app.close()
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m])
        print(json.dumps({
            "traceparents": [job.traceparent for job in stored],
            "states": [str(job.state) for job in stored],
            "ran": ran,
            "loaded": loaded,
        }))

    import json
    asyncio.run(main(sys.argv[1]))
"""

GLOBAL_PROVIDER = """
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from forebay import Forebay, Job

    async def main(url):
        app = Forebay(url)  # made before the SDK is set up, as a module-level app is

        @app.handler("docs")
        async def handle(job: Job) -> None:
            pass

        before = await app.enqueue("docs", {})
        exporter = InMemorySpanExporter()
        provider = TracerProvider()  # reads OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        after = await app.enqueue("docs", {})
        await app.run_worker(burst=True)
        await app.close()
        provider.shutdown()
        print(json.dumps({
            "before": before.traceparent,
            "after": after.traceparent,
            "spans": sorted(s.name for s in exporter.get_finished_spans()),
            "service": [s.resource.attributes["service.name"] for s in exporter.get_finished_spans()][:1],
        }))

    asyncio.run(main(sys.argv[1]))
"""


def run(script: str, url: str, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def sampled(traceparent: object) -> bool:
    """The W3C ``sampled`` flag of a stored traceparent."""
    assert isinstance(traceparent, str)
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def test_forebay_runs_without_opentelemetry(tmp_path: Path) -> None:
    answer = run(WITHOUT_OTEL, f"sqlite:///{tmp_path / 'jobs.db'}")
    assert answer["loaded"] == []
    assert answer["traceparents"] == [None, None, None]
    assert answer["states"] == ["completed"] * 3
    assert sorted(map(str, answer["ran"])) == ["None"] * 3 + ["more"] * 3  # type: ignore[call-overload]


def test_an_app_follows_the_global_provider_the_sdk_sets_up(tmp_path: Path) -> None:
    answer = run(
        GLOBAL_PROVIDER, f"sqlite:///{tmp_path / 'jobs.db'}", OTEL_SERVICE_NAME="ingest-api"
    )
    assert answer["before"] is None  # no provider yet: nothing stored
    assert sampled(answer["after"]) is True
    assert answer["spans"] == ["process docs", "process docs", "send docs"]
    assert answer["service"] == ["ingest-api"]


def test_the_otel_sampler_variable_applies(tmp_path: Path) -> None:
    """Sampled out (``OTEL_TRACES_SAMPLER=always_off``): no span is exported, yet the job stores
    the trace context, flagged not sampled, so whatever runs it honours that decision."""
    answer = run(
        GLOBAL_PROVIDER, f"sqlite:///{tmp_path / 'jobs.db'}", OTEL_TRACES_SAMPLER="always_off"
    )
    assert sampled(answer["after"]) is False
    assert answer["spans"] == []
