"""The worker app of the runs chaos test (``test_runs_chaos.py``): subprocesses the test
SIGKILLs, one every 2 s, and starts again.

Its handlers do what their payloads say, so the test alone decides the shape of every run. A
document (:data:`DOCS`) enqueues its children with ``job.enqueue`` — keyed by their paths, so
a document that runs again after a kill finds them stored instead of adding them twice — works
a little, then completes or fails as its ``fail`` says: ``permanent`` (dead at once), ``broken``
(transient every time: dead once its attempts are spent) or ``flaky`` (transient on its first
attempt only). One with ``hang_first`` hangs in its first delivery until a kill ends it.

Every execution is logged, and every effect written once per key, in the test's SQLite file
``EFFECTS_DB``: the test reads the redeliveries (at-least-once) beside the single effect per key
and the order in which jobs ran. A run's completion job (:data:`DONE`) writes its summary as
its effect. Webhook deliveries are the built-in ``forebay.webhooks`` queue's, on as short a
lease as the others.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3

from forebay import Backoff, Forebay, Job, PermanentError, TransientError, WorkerSettings
from forebay.runs import WEBHOOK_QUEUE

DOCS = "chaos.docs"
DONE = "chaos.done"

app = Forebay()

# A killed worker's jobs run again one lease later (lease_s): keep it short; and never
# dead-letter a job for being in killed workers too often (max_deliveries): the kills are the
# test's, not the job's.
LEASE_S = 1.0
MAX_DELIVERIES = 1000

# The built-in deliveries too, whose lease is long (a delivery may take minutes): the same
# delivery, declared here on a short lease.
app.handler(WEBHOOK_QUEUE, lease_s=LEASE_S, max_attempts=10, max_deliveries=MAX_DELIVERIES)(
    app.builtin_queues[WEBHOOK_QUEUE].handler
)


def _write(job: Job, event: str, effect: str | None) -> None:
    conn = sqlite3.connect(os.environ["EFFECTS_DB"], timeout=30)
    # A SIGKILL loses nothing a commit handed to the OS: no fsync, or every execution of every
    # worker would queue behind the disk.
    conn.execute("PRAGMA synchronous=OFF")
    try:
        with conn:
            conn.execute(
                "INSERT INTO executions (queue, key, event, pid) VALUES (?, ?, ?, ?)",
                (job.queue, job.key, event, os.getpid()),
            )
            if effect is not None:
                conn.execute(
                    "INSERT INTO effects (queue, key, detail) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (job.queue, job.key, effect),
                )
    finally:
        conn.close()


async def record(job: Job, event: str, effect: str | None = None) -> None:
    await asyncio.to_thread(_write, job, event, effect)


@app.handler(
    DOCS,
    lease_s=LEASE_S,
    max_deliveries=MAX_DELIVERIES,
    max_attempts=3,
    backoff=Backoff(base_s=0.05, cap_s=0.2),
)
async def document(job: Job) -> None:
    spec = job.payload
    assert isinstance(spec, dict)
    await record(job, "start")
    if spec.get("hang_first") and job.deliveries == 1:
        await asyncio.sleep(3600)  # the next SIGKILL ends it
    for child in spec.get("children", []):
        await job.enqueue(DOCS, child, key=child["path"])
    await asyncio.sleep(float(spec.get("work_s", 0.05)))
    fail = spec.get("fail")
    if fail == "permanent":
        await record(job, "fail")
        raise PermanentError(f"{job.key} fails for good")
    if fail == "broken" or (fail == "flaky" and job.attempt == 1):
        await record(job, "fail")
        raise TransientError(f"{job.key} fails this time")
    await record(job, "effect", effect="done")


@app.handler(DONE, lease_s=LEASE_S, max_deliveries=MAX_DELIVERIES)
async def run_completed(job: Job) -> None:
    await record(job, "start")
    await asyncio.sleep(0.05)
    await record(job, "effect", effect=json.dumps(job.payload, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(app.run_worker(settings=WorkerSettings(reclaim_every_s=0.2, idle_poll_s=0.2)))
