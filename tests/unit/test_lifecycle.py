"""A background loop's lifecycle: named, started and stopped idempotently, never lost silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from forebay.lifecycle import BackgroundTask


async def test_start_and_stop_are_idempotent() -> None:
    started = asyncio.Event()
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.Event().wait()

    task = BackgroundTask("forebay-test-loop", loop)
    await task.stop()  # never started: nothing to do
    assert task.start() and not task.start()
    await asyncio.wait_for(started.wait(), 5)
    assert task.running and runs == 1
    assert [t.get_name() for t in asyncio.all_tasks()].count("forebay-test-loop") == 1
    await task.stop()
    await task.stop()
    assert not task.running
    started.clear()
    assert task.start()  # a stopped loop starts again
    await asyncio.wait_for(started.wait(), 5)
    assert runs == 2
    await task.stop()


async def test_join_waits_for_the_loop_to_end_by_itself() -> None:
    go = asyncio.Event()
    finished: list[str] = []

    async def drain() -> None:
        await go.wait()
        finished.append("drained")

    task = BackgroundTask("forebay-test-drain", drain)
    task.start()
    joined = asyncio.create_task(task.join())
    done, _ = await asyncio.wait([joined], timeout=0.05)  # join() must not end the loop
    assert not done and task.running
    go.set()
    await asyncio.wait_for(joined, 5)
    assert finished == ["drained"] and not task.running
    assert task.start()  # an ended loop starts again
    await task.join()


async def test_stop_ends_a_loop_that_drops_a_cancellation() -> None:
    entered = asyncio.Event()
    dropped = asyncio.Event()

    async def stubborn() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.set()  # swallowed once, as some libraries do
        await asyncio.Event().wait()

    task = BackgroundTask("forebay-test-stubborn", stubborn)
    task.start()
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(task.stop(), 5)
    assert dropped.is_set() and not task.running


async def test_a_loop_that_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("bug in the loop")

    task = BackgroundTask("forebay-test-broken", broken)
    with caplog.at_level(logging.ERROR, logger="forebay.lifecycle"):
        task.start()
        await task.join()  # the loop's done-callbacks (the log line first) have run
    [record] = caplog.records
    assert "forebay-test-broken" in record.getMessage()
    assert record.exc_info is not None and "bug in the loop" in str(record.exc_info[1])
