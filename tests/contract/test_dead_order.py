"""Dead letters are listed by time of death, the latest first, on every backend: a job that
was enqueued early and died late comes first, and paging by a cursor neither skips nor
repeats a job."""

from __future__ import annotations

import pytest

from forebay import JobFilter, JobState
from forebay.backends import Backend
from forebay.backends.redis import backend as redis_backend
from forebay.job import DeadCursor, Failure
from tests.contract.test_backend import lease, new


async def _die_in_order(backend: Backend, queue: str, n: int, order: list[int]) -> list[int]:
    """Enqueue ``n`` jobs on ``queue`` and dead-letter them one call at a time, in ``order``
    (positions in enqueue order); return their ids in the order they died."""
    await backend.enqueue([new(queue, {"i": i}) for i in range(n)])
    leased = sorted(await lease(backend, queue, limit=n), key=lambda j: j.id)
    died = []
    for position in order:
        job = leased[position]
        assert await backend.dead_letter([Failure(job.lease, "E: x", "E")]) == []
        died.append(job.id)
    return died


async def test_dead_jobs_are_listed_latest_death_first(backend: Backend) -> None:
    died = await _die_in_order(backend, "a", 5, [3, 0, 4, 1, 2])
    other = await _die_in_order(backend, "b", 2, [1, 0])
    assert sorted(died) != died  # they died in another order than their ids
    listed = await backend.list_dead(JobFilter(queue="a"))
    assert [j.id for j in listed] == died[::-1]
    assert all(j.state is JobState.DEAD for j in listed)
    deaths = [j.finished_at for j in listed]
    assert all(d is not None for d in deaths)
    assert deaths == sorted(deaths, reverse=True)  # type: ignore[type-var]
    both = await backend.list_dead(JobFilter())
    assert sorted(j.id for j in both) == sorted(died + other)
    assert both[0].id == other[-1]  # the last one to die, of any queue
    only = await backend.list_dead(JobFilter(queue="a", ids=(died[0], died[2], other[0])))
    assert [j.id for j in only] == [died[2], died[0]]


async def test_dead_pages_follow_the_cursor(backend: Backend) -> None:
    died = await _die_in_order(backend, "a", 7, [6, 2, 0, 5, 1, 3, 4])
    await backend.enqueue([new("a")])  # queued: never listed as dead
    pages: list[list[int]] = []
    cursor: DeadCursor | None = None
    while True:
        page = await backend.list_dead(JobFilter(queue="a"), limit=3, before=cursor)
        if not page:
            break
        pages.append([j.id for j in page])
        cursor = DeadCursor.after(page[-1])
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == died[::-1]
    assert await backend.list_dead(JobFilter(queue="a"), limit=0) == []


async def test_jobs_dead_at_one_instant_page_through_it(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs that died in one settle share their time of death; a cursor inside that instant
    goes on with the smaller ids. Twelve of them, so that ids 10-12 sort before 9 as text, and
    read three at a time where a backend reads its dead set in steps (Redis)."""
    monkeypatch.setattr(redis_backend, "_DEAD_CHUNK", 3)
    await backend.enqueue([new("a", {"i": i}) for i in range(12)])
    leased = sorted(await lease(backend, "a", limit=12), key=lambda j: j.id)
    assert await backend.dead_letter([Failure(j.lease, "E: x", "E") for j in leased]) == []
    await _die_in_order(backend, "b", 2, [0, 1])  # died later, on another queue
    for where in (JobFilter(queue="a"), JobFilter(error_type="E")):
        seen: list[int] = []
        cursor: DeadCursor | None = None
        while page := await backend.list_dead(where, limit=5, before=cursor):
            seen += [j.id for j in page]
            cursor = DeadCursor.after(page[-1])
        expected = sorted((j.id for j in leased), reverse=True)
        assert seen[-12:] == expected and len(seen) == (12 if where.queue else 14)
