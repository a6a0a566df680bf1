"""What tracing costs (docs/tracing.md): enqueue and lease -> handler -> settle with tracing off
(no tracer provider: the default), and on (the SDK recording every span, handed to a batch
processor whose exporter drops them, so the figure is forebay's and the SDK's work, not a
network's).

    python benchmarks/tracing.py                       # SQLite in a temporary folder
    python benchmarks/tracing.py --url redis://127.0.0.1:6379/15 --jobs 20000

Run it with another checkout's ``src`` first on ``PYTHONPATH`` to see what the "off" rows cost
against a forebay without tracing (its "on" rows then trace nothing).

Every figure is jobs per second, median [min-max] of ``--repeats``:

* ``enqueue``: ``app.enqueue`` one job per call, one caller (a span per call);
* ``enqueue bulk``: ``app.enqueue_many`` of 1,000 jobs per call (one span per call);
* ``process``: one in-process worker drains the backlog with a no-op ``async`` handler (rate =
  jobs / (last handler start - first handler start); a span per job).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Row, print_table  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402
from forebay.testing import isolated_store, isolated_url  # noqa: E402


class Dropped(SpanExporter):
    """Takes every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def make_app(url: str, traced: bool, stamps: list[float]) -> tuple[Forebay, TracerProvider | None]:
    provider = None
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=100_000))
    try:
        app = Forebay(url, tracer_provider=provider)  # type: ignore[call-arg]
    except TypeError:  # a checkout without tracing
        app = Forebay(url)

    @app.handler("bench", concurrency=32)
    async def noop(job: Job) -> None:
        now = time.perf_counter()
        if not stamps[0]:
            stamps[1] = now
        stamps[0] += 1
        stamps[2] = now

    return app, provider


async def measure(url: str, phase: str, traced: bool, n: int) -> float:
    stamps = [0.0, 0.0, 0.0]
    app, provider = make_app(url, traced, stamps)
    try:
        async with app:
            if phase == "enqueue":
                t0 = time.perf_counter()
                for i in range(n):
                    await app.enqueue("bench", {"i": i})
                return n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(0, n, 1000):
                await app.enqueue_many(
                    NewJob.create("bench", {"i": j}) for j in range(i, min(i + 1000, n))
                )
            if phase == "enqueue bulk":
                return n / (time.perf_counter() - t0)
            await app.run_worker(settings=WorkerSettings(burst=True, handle_signals=False))
        if int(stamps[0]) != n:
            raise RuntimeError(f"processed {stamps[0]:.0f} jobs, expected {n}")
        return n / (stamps[2] - stamps[1])
    finally:
        if provider is not None:
            provider.shutdown()


async def isolated(base: str, folder: str, phase: str, traced: bool, n: int) -> float:
    url = isolated_url(base, folder)
    async with isolated_store(url):
        return await measure(url, phase, traced, n)


PHASES = ("enqueue", "enqueue bulk", "process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="sqlite:///", help="backend (default: a SQLite file)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--label", default="forebay", help="the system column, e.g. old/new")
    parser.add_argument("--phase", choices=PHASES, action="append", help="only these phases")
    args = parser.parse_args()
    rows = [
        Row(args.label, f"{phase}, tracing {'on' if traced else 'off'}")
        for phase in args.phase or PHASES
        for traced in (False, True)
    ]
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):  # interleaved, so drift hits every row alike
            for row in rows:
                phase, mode = row.phase.split(", tracing ")
                n = args.jobs // 5 if phase == "enqueue" else args.jobs
                row.values.append(asyncio.run(isolated(args.url, folder, phase, mode == "on", n)))
    baseline = {row.phase: row.median for row in rows if row.phase.endswith("off")}
    ratios = {row.phase: baseline[row.phase.replace(" on", " off")] for row in rows}
    print_table(f"tracing, {args.url.split(':')[0]}, {args.jobs:,} jobs", rows, baseline=ratios)


if __name__ == "__main__":
    main()
