"""One caller's bad request never fails the others written in the same group.

Group commit writes many callers' requests in one statement, script or transaction; if one
request holds a value the store refuses, that write fails as a whole. Where the failure is of
a kind that wrote nothing (the store refused the statement, or the request could not even be
encoded), :func:`flush_isolating` splits the group in halves and writes each again, down to
the single request at fault, which alone gets the error. A group with no bad request costs one
write, as before; one bad request among ``n`` costs about ``2·log2(n)`` more.

Failures that may have written something (the connection dropped mid-flight) are never split:
writing the requests again could apply them twice. They fail every caller of the group, as
before, and each caller decides whether to try again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["flush_isolating"]

R = TypeVar("R")
T = TypeVar("T")


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
