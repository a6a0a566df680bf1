"""Background tasks end at shutdown even when a library drops a cancellation."""

from __future__ import annotations

import asyncio

from forebay.cancel import cancel_and_wait


async def _loop_that_swallows_once(swallowed: asyncio.Event) -> None:
    """A polling loop whose I/O call drops the first cancellation, as redis-py's socket writes
    under Python 3.11's ``asyncio.wait_for`` can."""
    while True:
        try:
            await asyncio.Event().wait()  # a call in flight
        except asyncio.CancelledError:
            if swallowed.is_set():
                raise
            swallowed.set()


async def test_a_task_that_swallows_a_cancellation_still_ends() -> None:
    swallowed = asyncio.Event()
    task = asyncio.create_task(_loop_that_swallows_once(swallowed))
    await asyncio.sleep(0)  # let it start its call
    await asyncio.wait_for(cancel_and_wait([task]), 5)
    assert swallowed.is_set() and task.cancelled()


async def test_finished_tasks_and_their_errors_are_collected_not_raised() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    async def finish() -> int:
        return 1

    failing, finishing = asyncio.create_task(fail()), asyncio.create_task(finish())
    await asyncio.wait([failing, finishing])
    await cancel_and_wait([failing, finishing])
    assert isinstance(failing.exception(), ValueError) and finishing.result() == 1


async def test_the_caller_can_still_be_cancelled_while_it_waits() -> None:
    started, give_up = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if give_up.is_set():
                    raise

    task = asyncio.create_task(stubborn())
    await started.wait()
    waiter = asyncio.create_task(cancel_and_wait([task]))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.wait([waiter])
    assert waiter.cancelled() and not task.done()
    give_up.set()
    await cancel_and_wait([task])
    assert task.cancelled()
