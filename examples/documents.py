"""A small forebay app: fetch-and-parse "documents" with retries, progress and dead letters.

Run a worker for it with ``forebay worker examples.documents:app`` or the demo below:

    python examples/documents.py          # enqueues 200 jobs, drains them, shows progress
"""

from __future__ import annotations

import asyncio
import random

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forebay import Backoff, Forebay, Job, PermanentError, TransientError

app = Forebay()


@app.handler("documents", max_attempts=4, concurrency=16, backoff=Backoff(base_s=0.05, cap_s=0.5))
async def ingest(job: Job) -> None:
    """Pretend to fetch and parse a document: some fail for a while, a few are malformed."""
    payload = job.payload
    assert isinstance(payload, dict)
    await job.progress(10, "fetching")
    await asyncio.sleep(random.uniform(0.005, 0.03))  # the network
    if payload.get("malformed"):
        raise PermanentError("not a PDF")
    if payload.get("flaky") and job.attempt < 3:
        raise TransientError("upstream answered 503")
    await job.progress(90, "parsed")


async def demo(n: int = 200) -> None:
    async with app:
        for i in range(n):
            await app.enqueue(
                "documents",
                {
                    "url": f"https://example.org/doc/{i}.pdf",
                    "flaky": i % 7 == 0,
                    "malformed": i % 50 == 0,
                },
                key=f"doc-{i}",
            )
        # Not burst mode: that exits once no job is *due*, and a few retries wait out a backoff.
        worker = app.worker()
        with Progress(
            TextColumn("[bold]documents"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        ) as bar:
            task = bar.add_task("jobs", total=n)
            running = asyncio.create_task(worker.run())
            while not running.done():
                counts = {c.queue: c for c in await app.counts()}.get("documents")
                if counts is not None:
                    bar.update(task, completed=counts.completed + counts.dead)
                    if counts.completed + counts.dead == n:
                        worker.stop()  # graceful: returns once it has let go of everything
                await asyncio.wait([running], timeout=0.1)
            await running
            final = {c.queue: c for c in await app.counts()}["documents"]
            bar.update(task, completed=final.completed + final.dead)
        for c in await app.counts():
            print(f"{c.queue}: {c.completed} completed, {c.dead} dead (see: forebay dead ls)")


if __name__ == "__main__":
    asyncio.run(demo())
