"""Group commit: concurrent callers share flushes, each gets its own answer, none is stranded."""

from __future__ import annotations

import asyncio

import pytest

from forebay.group_commit import GroupCommit


class _Store:
    """A flush that records its groups and can be held open, to see what piles up meanwhile."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gate: asyncio.Event | None = None
        self.in_flush = asyncio.Event()

    async def flush(self, requests: list[int]) -> list[int | BaseException]:
        self.groups.append(requests)
        self.tasks.append(asyncio.current_task())
        self.in_flush.set()
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(r) if r < 0 else r * 10 for r in requests]


async def test_group_commit_never_strands_a_request_submitted_as_a_flush_ends() -> None:
    # A caller woken by its result submits again before the finished flush task is gone: the
    # new request must still get a flush (it once waited forever for one).
    groups: list[list[int]] = []

    async def flush(requests: list[int]) -> list[int]:
        groups.append(requests)
        return [r * 10 for r in requests]

    commit: GroupCommit[int, int] = GroupCommit("test", flush, max_in_flight=1)

    async def twice() -> int:
        await commit.submit(1)
        return await commit.submit(2)  # in the very step the first result arrives

    assert await asyncio.wait_for(twice(), 10) == 20
    results = await asyncio.gather(*(commit.submit(i) for i in range(3, 50)))
    assert results == [i * 10 for i in range(3, 50)]
    assert len(groups) < 10
    await commit.drain()


async def test_a_lone_caller_flushes_its_own_request_inline() -> None:
    store = _Store()
    commit: GroupCommit[int, int] = GroupCommit(
        "test", store.flush, max_in_flight=1, inline_first=True
    )
    assert await commit.submit(1) == 10
    assert await commit.submit(2) == 20
    assert store.groups == [[1], [2]]
    assert store.tasks == [asyncio.current_task()] * 2  # no hop to another task
    with pytest.raises(ValueError):
        await commit.submit(-1)  # its own error, raised in the caller


async def test_requests_arriving_during_an_inline_flush_share_the_next_one() -> None:
    store = _Store()
    store.gate = asyncio.Event()
    commit: GroupCommit[int, int] = GroupCommit(
        "test", store.flush, max_in_flight=1, inline_first=True
    )
    first = asyncio.create_task(commit.submit(1))
    await store.in_flush.wait()
    others = [asyncio.create_task(commit.submit(i)) for i in (2, -3, 4)]
    await asyncio.sleep(0)
    assert store.groups == [[1]]  # one flush in flight at most: the others wait for it
    store.gate.set()
    assert await first == 10
    results = await asyncio.gather(*others, return_exceptions=True)
    assert results[0] == 20 and isinstance(results[1], ValueError) and results[2] == 40
    assert store.groups == [[1], [2, -3, 4]]
    await commit.drain()


async def test_cancelling_an_inline_caller_fails_it_alone() -> None:
    store = _Store()
    store.gate = asyncio.Event()
    commit: GroupCommit[int, int] = GroupCommit(
        "test", store.flush, max_in_flight=1, inline_first=True
    )
    first = asyncio.create_task(commit.submit(1))
    await store.in_flush.wait()
    second = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.gate.set()
    assert await asyncio.wait_for(second, 10) == 20
    await commit.drain()


async def test_drain_waits_for_an_inline_flush() -> None:
    store = _Store()
    store.gate = asyncio.Event()
    commit: GroupCommit[int, int] = GroupCommit("test", store.flush, inline_first=True)
    first = asyncio.create_task(commit.submit(1))
    await store.in_flush.wait()
    drained = asyncio.create_task(commit.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    store.gate.set()
    await asyncio.wait_for(drained, 10)
    assert first.done() and first.result() == 10
