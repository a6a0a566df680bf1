"""Runs and dependencies (docs/runs.md): a crawl whose pages fan out into more pages, counted
exactly and announced once it is complete; then a diamond of jobs, A → B, C → D.

    python examples/runs.py       # on ./forebay.db (or FOREBAY_URL)
"""

from __future__ import annotations

import asyncio

from forebay import Forebay, Job, PermanentError

app = Forebay()


@app.handler("pages")
async def crawl(job: Job) -> None:
    """Pretend to fetch a page, and enqueue the pages it links to: they join this job's run."""
    page = job.payload
    assert isinstance(page, dict)
    if page["url"].endswith("/1/1"):
        raise PermanentError("404 Not Found")  # dead: the run still completes, counting it
    if page["depth"] < 2:
        for i in range(3):
            await job.enqueue("pages", {"url": f"{page['url']}/{i}", "depth": page["depth"] + 1})


announced = asyncio.Event()


@app.handler("crawl-done")
async def crawl_done(job: Job) -> None:
    """The run's completion job: exactly one, with the run's summary as its payload."""
    summary = job.payload
    assert isinstance(summary, dict)
    print(
        f"{summary['name']} complete: {summary['total']} pages, {summary['completed']} "
        f"completed, {summary['dead']} dead, {summary['cancelled']} cancelled"
    )
    announced.set()


steps: list[str] = []


@app.handler("steps")
async def step(job: Job) -> None:
    assert isinstance(job.payload, dict)
    steps.append(job.payload["name"])


async def crawl_three_sites() -> None:
    run = await app.start_run(
        name="crawl", key="crawl-demo", meta={"sites": 3}, on_complete="crawl-done"
    )
    for site in ("a.example", "b.example", "c.example"):
        await app.enqueue("pages", {"url": f"https://{site}", "depth": 0}, run=run.id)
    await app.seal_run(run.id)  # no more sites; the pages' own links still join
    await asyncio.wait_for(announced.wait(), timeout=60)  # the worker runs the completion job
    done = await app.get_run(run.id)
    print(f"run {done.state}: {done.completed} + {done.dead} + {done.cancelled} == {done.total}")


async def diamond() -> None:
    a = await app.enqueue("steps", {"name": "A"})
    b = await app.enqueue("steps", {"name": "B"}, after=[a.id])
    c = await app.enqueue("steps", {"name": "C"}, after=[a.id])
    d = await app.enqueue("steps", {"name": "D"}, after=[b.id, c.id])
    print(f"D is {d.state} for jobs {', '.join(map(str, d.after))}")
    await app.wait(d.id, timeout_s=60)
    print(f"ran {steps[0]}, then {' and '.join(sorted(steps[1:3]))}, then {steps[3]}")


async def demo() -> None:
    async with app:
        worker = app.worker()  # every handled queue, until stopped
        running = asyncio.create_task(worker.run())
        try:
            await crawl_three_sites()
            await diamond()
        finally:
            worker.stop()  # graceful: returns once it has let go of everything
            await running


if __name__ == "__main__":
    asyncio.run(demo())
