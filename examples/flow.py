"""Flow control (docs/flow-control.md): two tenants share one queue that calls a rate-limited
upstream API. Each tenant may start 2 calls per second there, at most 2 calls run at once
across the fleet, and the tenants take turns: acme's backlog does not hold globex up.

    python examples/flow.py       # on ./forebay.db (or FOREBAY_URL)

acme enqueues 6 reports, then globex 2 (globex's quota is 2 unfinished jobs: a third is
refused). A burst worker runs them all and exits; the demo prints who started when.
"""

from __future__ import annotations

import asyncio
import time

from forebay import Forebay, Job, TenantQuotaFull

app = Forebay(tenant_quotas={"globex": 2})

starts: list[tuple[float, str, int]] = []
running = 0
most_running = 0


@app.handler(
    "reports",
    concurrency=8,  # this worker could run 8 at once...
    global_concurrency=2,  # ...but the fleet runs at most 2 of the queue's jobs at once
    rate_limit_key="tenant",  # one bucket per tenant...
    rate_limit_per_key="2/s",  # ...2 starts a second each (a burst of 2 when rested)
    fair_key="tenant",  # the tenants take turns, least recently served first
)
async def report(job: Job) -> None:
    global running, most_running
    assert isinstance(job.payload, dict)
    starts.append((time.monotonic(), str(job.tenant), job.payload["n"]))
    running += 1
    most_running = max(most_running, running)
    await asyncio.sleep(0.05)  # the upstream call
    running -= 1


async def demo() -> None:
    async with app:
        for n in range(1, 7):
            await app.enqueue("reports", {"n": n}, tenant="acme")
        for n in range(1, 4):
            try:
                await app.enqueue("reports", {"n": n}, tenant="globex")
            except TenantQuotaFull as exc:
                print(
                    f"globex #{n} refused: tenant {exc.tenant} holds its quota of {exc.max_depth}"
                )
        await app.run_worker(["reports"], burst=True)

    first = starts[0][0]
    for at, tenant, n in starts:
        print(f"{at - first:5.2f}s  {tenant:<6} #{n}")
    acme = [at for at, tenant, _ in starts if tenant == "acme"]
    print(f"order: {' '.join(tenant for _, tenant, _ in starts)}")
    print(f"acme: {len(acme)} starts over {acme[-1] - acme[0]:.1f}s (2/s, a burst of 2)")
    print(f"at most {most_running} running at once (global_concurrency=2)")


if __name__ == "__main__":
    asyncio.run(demo())
