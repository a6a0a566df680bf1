"""What a payload model costs, and what queues without one pay for the feature (nothing, it
should be): enqueue and lease -> handler -> settle, a queue without a model beside one with.

    python benchmarks/payloads.py                       # SQLite in a temporary folder
    python benchmarks/payloads.py --url redis://127.0.0.1:6379/15 --jobs 20000

To compare with a checkout without payload models, run the same script with that checkout's
``src`` first on ``PYTHONPATH``: the rows with a model are then marked n/a.

Every figure is jobs per second, median [min-max] of ``--repeats``:

* ``enqueue bulk``: ``app.enqueue_many`` of 1,000 jobs per call (validation included);
* ``process``: one in-process worker drains the backlog with a no-op ``async`` handler that
  reads ``job.payload`` (rate = jobs / (last handler start - first handler start): lease,
  the handler call and the settle, worker start-up excluded);
* ``handler call``: the call the worker makes per job (``call_handler``) on leased-like jobs,
  no store: the part of the hot path a payload model touches, without the store's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Row, print_table  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402
from forebay.testing import isolated_store, isolated_url  # noqa: E402


class Document(BaseModel):
    doc: str
    page: int
    at: datetime


PAYLOAD = {"doc": "x" * 40, "page": 3, "at": datetime(2026, 1, 1, tzinfo=UTC).isoformat()}


def models_supported() -> bool:
    try:
        Forebay("sqlite:///unused.db").queue("probe", payload=Document)  # type: ignore[call-arg]
    except TypeError:
        return False
    return True


def make_app(url: str, model: bool, stamps: list[float]) -> Forebay:
    app = Forebay(url)
    options: dict[str, Any] = {"payload": Document} if model else {}

    @app.handler("bench", concurrency=32, **options)
    async def noop(job: Job) -> None:
        now = time.perf_counter()
        if not stamps[0]:
            stamps[1] = now
        stamps[0] += 1
        stamps[2] = now
        assert job.payload is not None

    return app


async def enqueue_bulk(url: str, model: bool, n: int, batch: int = 1000) -> float:
    app = make_app(url, model, [0.0, 0.0, 0.0])
    async with app:
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            await app.enqueue_many(
                NewJob.create("bench", PAYLOAD) for _ in range(min(batch, n - i))
            )
        return n / (time.perf_counter() - t0)


async def process(url: str, model: bool, n: int) -> float:
    stamps = [0.0, 0.0, 0.0]
    app = make_app(url, model, stamps)
    async with app:
        for i in range(0, n, 5000):
            await app.enqueue_many(NewJob.create("bench", PAYLOAD) for _ in range(min(5000, n - i)))
        await app.run_worker(settings=WorkerSettings(burst=True, handle_signals=False))
    if int(stamps[0]) != n:
        raise RuntimeError(f"processed {stamps[0]:.0f} jobs, expected {n}")
    return n / (stamps[2] - stamps[1])


async def handler_calls(model: bool, n: int) -> float:
    from forebay.job import JobState, PayloadText
    from forebay.queue_config import QueueConfig
    from forebay.worker.calls import call_handler

    text = json.dumps(PAYLOAD)
    jobs = [
        Job(id=i, queue="bench", payload=PayloadText(text), state=JobState.RUNNING)
        for i in range(n)
    ]

    async def noop(job: Job) -> None:
        assert job.payload is not None

    options: dict[str, Any] = {"payload_model": Document} if model else {}
    config = QueueConfig("bench", noop, **options)
    t0 = time.perf_counter()
    for job in jobs:
        await call_handler(config, [job], timeout_s=300.0)
    return n / (time.perf_counter() - t0)


async def measure(base: str, folder: str, phase: str, model: bool, n: int) -> float:
    if phase == "handler call":
        return await handler_calls(model, n * 5)
    url = isolated_url(base, folder)
    async with isolated_store(url):
        if phase == "enqueue bulk":
            return await enqueue_bulk(url, model, n)
        return await process(url, model, n)


PHASES = ("enqueue bulk", "process", "handler call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="sqlite:///", help="backend (default: a SQLite file)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--label", default="forebay", help="the system column, e.g. old/new")
    parser.add_argument("--phase", choices=PHASES, action="append", help="only these phases")
    args = parser.parse_args()
    supported = models_supported()
    rows = [
        Row(args.label, f"{phase}, {'with a model' if model else 'no model'}")
        for phase in args.phase or PHASES
        for model in (False, True)
    ]
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):  # interleaved, so drift hits every row alike
            for row in rows:
                model = row.phase.endswith("with a model")
                if model and not supported:
                    continue
                phase = row.phase.split(",")[0]
                row.values.append(asyncio.run(measure(args.url, folder, phase, model, args.jobs)))
    print_table(f"payload models, {args.url.split(':')[0]}, {args.jobs:,} jobs", rows)


if __name__ == "__main__":
    main()
