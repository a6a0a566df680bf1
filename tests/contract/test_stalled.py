"""*stalled* (running with an expired lease) is a view every backend counts alike: ``counts``
says how many of each queue's running jobs are stalled, and a job read back knows it is."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from forebay.backends import Backend
from tests.contract.test_backend import lease, new


async def test_counts_and_jobs_tell_stalled_from_running(backend: Backend) -> None:
    await backend.enqueue([new("a") for _ in range(3)] + [new("b"), new("c")])
    short = await lease(backend, "a", limit=2, lease_s=30)
    [long] = await lease(backend, "a", limit=1, lease_s=3600)
    [other] = await lease(backend, "b", limit=1, lease_s=30)
    later = time.time() + 600  # the 30 s leases expired, the hour-long one not

    now = {c.queue: c for c in await backend.counts()}
    assert (now["a"].running, now["a"].stalled, now["b"].stalled) == (3, 0, 0)
    counts = {c.queue: c for c in await backend.counts(now=later)}
    assert (counts["a"].running, counts["a"].stalled) == (3, 2)
    assert (counts["b"].running, counts["b"].stalled) == (1, 1)
    assert (counts["c"].queued, counts["c"].stalled) == (1, 0)
    assert counts["a"].to_dict()["stalled"] == 2

    at = datetime.fromtimestamp(later, UTC)
    for job in [*short, other]:
        stored = await backend.get_job(job.id)
        assert stored is not None and stored.is_stalled(at) and not stored.is_stalled()
        assert stored.display_state(at) == "stalled" and stored.display_state() == "running"
    stored = await backend.get_job(long.id)
    assert stored is not None and not stored.is_stalled(at)

    # Reclaimed, they are queued again: no longer stalled.
    assert await backend.reclaim_expired(now=later) == 3
    after = {c.queue: c for c in await backend.counts(now=later)}
    assert (after["a"].running, after["a"].stalled, after["b"].stalled) == (1, 0, 0)
