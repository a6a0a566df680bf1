"""Group commit on asyncio: concurrent callers' requests share one statement and one commit.

A caller submits a request and awaits its own result. When no flush is waiting to start, a
flush task is created; by the time it runs it takes *every* request submitted meanwhile, hands
them to ``flush`` (which writes them in one round trip / transaction), and resolves each
caller's future with its own result. While flushes are in flight, new requests pile up and go
into the next one, so under load each commit carries many callers' work, yet an idle caller
waits for no timer: its request is flushed at once. With ``inline_first``, a request that finds
nothing in flight is flushed by its own caller, without a hop to a task (one caller awaiting one
request at a time pays one round trip and no scheduling); requests that arrive meanwhile are
flushed together by a task once it is done.

One caller's bad request never fails the others written in the same group. With
``wrote_nothing`` given, a group whose flush fails with an error that left the store unchanged
(the store refused the statement, or the request could not even be encoded) is written again in
halves (:func:`flush_isolating`), down to the single request at fault, which alone gets the
error. A group with no bad request costs one write; one bad request among ``n`` costs about
``2·log2(n)`` more. Failures that may have written something (the connection dropped
mid-flight) are never split: writing the requests again could apply them twice.

Concurrency hazards, and why they are safe: everything here runs on one event loop, so the
pending list and counters are only touched between awaits; a caller cancelled while waiting
does not undo its write (the result is dropped, as with any write whose answer is lost). A
caller cancelled during its own inline flush cancels that flush, which held its request alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit", "flush_isolating"]

R = TypeVar("R")
T = TypeVar("T")


class GroupCommit(Generic[R, T]):
    """Coalesces requests; see the module docstring.

    ``flush(requests)`` returns one result per request, in order: a value, or an exception to
    raise in that caller alone. ``wrote_nothing(exc)``: a flush that raised ``exc`` changed
    nothing, so its group may be split and written again (see the module docstring).
    ``weight(request)`` (e.g. rows) bounds a group to ``max_weight``
    (a single heavier request still goes alone). ``max_in_flight`` flushes may run at once, on
    different connections. ``inline_first``: a request that finds nothing in flight is flushed
    by its caller (see the module docstring).
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[R]], Awaitable[Sequence[T | BaseException]]],
        *,
        weight: Callable[[R], int] = lambda _r: 1,
        max_weight: int = 10_000,
        max_in_flight: int = 2,
        wrote_nothing: Callable[[Exception], bool] | None = None,
        inline_first: bool = False,
    ) -> None:
        self.name = name
        self._flush = flush
        self._wrote_nothing = wrote_nothing
        self._weight = weight
        self._max_weight = max_weight
        self._max_in_flight = max_in_flight
        self._inline_first = inline_first
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = False  # a flush task exists that has not yet taken its group
        self._inline: asyncio.Future[None] | None = None  # done when a caller's own flush ends

    async def submit(self, request: R) -> T:
        """Queue ``request`` for the next group; return its result once committed."""
        if self._inline_first and self._in_flight() == 0 and not self._starting:
            # Nothing in flight, nothing pending (it would be in flight or starting): this
            # request alone, flushed here, without a task switch.
            fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            return await self._flush_inline(request, fut)
        return await self.submit_nowait(request)

    def submit_nowait(self, request: R) -> asyncio.Future[T]:
        """Queue ``request`` for the next group; its result, once committed, is the future's.

        For a caller that need not wait (a worker's outcomes): a future nobody awaits costs
        no task switch when it resolves. Its caller must not leave an exception unread:
        ``flush`` should answer such requests with values, not exceptions.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        self._maybe_start()
        return fut

    async def drain(self) -> None:
        """Wait until every request submitted so far is flushed."""
        while flushes := [*self._tasks, *([self._inline] if self._inline is not None else [])]:
            await asyncio.wait(flushes)  # not gather: cancelling drain must not cancel flushes

    def _in_flight(self) -> int:
        return len(self._tasks) + (self._inline is not None)

    async def _flush_inline(self, request: R, fut: asyncio.Future[T]) -> T:
        done = asyncio.get_running_loop().create_future()
        self._inline = done
        try:
            results = await self._flush([request])
        finally:
            self._inline = None
            done.set_result(None)
            self._maybe_start()  # what was submitted meanwhile goes in one flush, in a task
        _resolve([(request, fut)], results)
        return fut.result()

    def _maybe_start(self) -> None:
        if self._starting or not self._pending or self._in_flight() >= self._max_in_flight:
            return
        self._starting = True
        self._tasks.add(asyncio.create_task(self._run(), name=f"forebay-group-commit-{self.name}"))

    async def _run(self) -> None:
        self._starting = False
        try:
            while self._pending:
                group = self._take()
                self._maybe_start()  # room for another flush in flight: let new requests go
                try:
                    results = await self._flush_group([request for request, _ in group])
                except BaseException as exc:
                    results = [exc] * len(group)
                    if not isinstance(exc, Exception):  # cancelled: so are the callers' waits
                        for _request, fut in group:
                            fut.cancel()
                        raise
                _resolve(group, results)
        finally:
            # Leave the set now, not in a done-callback: a request submitted between this
            # task's last look at the queue and such a callback would find every slot taken
            # and wait for a flush that never comes.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._maybe_start()

    async def _flush_group(self, requests: list[R]) -> Sequence[T | BaseException]:
        if self._wrote_nothing is None or len(requests) == 1:
            return await self._flush(requests)
        return await flush_isolating(requests, self._flush, wrote_nothing=self._wrote_nothing)

    def _take(self) -> list[tuple[R, asyncio.Future[T]]]:
        total = 0
        count = 0
        for request, _ in self._pending:
            total += self._weight(request)
            if count and total > self._max_weight:
                break
            count += 1
        group, self._pending = self._pending[:count], self._pending[count:]
        return group


def _resolve(
    group: list[tuple[R, asyncio.Future[T]]], results: Sequence[T | BaseException]
) -> None:
    if len(results) != len(group):  # a bug in flush; never leave a caller hanging
        error = RuntimeError(f"group commit: {len(results)} results for {len(group)} requests")
        results = [error] * len(group)
    for (_request, fut), result in zip(group, results, strict=True):
        if fut.done():  # the caller was cancelled; its write happened all the same
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)


async def flush_isolating(
    requests: list[R],
    flush: Callable[[list[R]], Awaitable[Sequence[T | BaseException]]],
    *,
    wrote_nothing: Callable[[Exception], bool],
) -> list[T | BaseException]:
    """``flush(requests)``, one result per request; see the module docstring.

    ``flush`` returns one result (a value, or an exception for that caller alone) per request,
    or raises for the whole group; ``wrote_nothing(exc)`` says whether such a raise left the
    store unchanged, so that the halves may be written again.
    """
    try:
        return list(await flush(requests))
    except Exception as exc:
        if len(requests) == 1 or not wrote_nothing(exc):
            return [exc] * len(requests)
    mid = len(requests) // 2
    first = await flush_isolating(requests[:mid], flush, wrote_nothing=wrote_nothing)
    second = await flush_isolating(requests[mid:], flush, wrote_nothing=wrote_nothing)
    return first + second
