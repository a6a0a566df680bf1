"""The connection bound of ``forebay serve`` as a decision (no sockets): who is closed when full.

The deadlines themselves are tested against a real server (tests/acceptance/test_serve_faults.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from forebay.service.connections import ConnectionBook, ConnectionLimits


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Connection:
    """What the book uses of a protocol: its transport and its loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = Transport()
        self.loop = loop


def book_of(most: int) -> tuple[ConnectionBook, list[str]]:
    closed: list[str] = []
    limits = ConnectionLimits(
        header_timeout_s=10, body_timeout_s=60, max_connections=most, on_closed=closed.append
    )
    return ConnectionBook(limits), closed


async def test_when_full_the_connection_waiting_longest_for_headers_makes_room() -> None:
    book, closed = book_of(2)
    loop = asyncio.get_running_loop()
    first, second, third = (Connection(loop) for _ in range(3))
    c: Any
    for c in (first, second):
        book.opened(c)
        book.wait(book.awaiting_headers, c)
    book.wait(book.awaiting_headers, first)  # answered a request since: now waiting the least
    book.opened(third)
    assert second.transport.closed and not first.transport.closed
    assert not third.transport.closed
    assert closed == ["evicted"]
    assert book.open == {first, third}
    assert list(book.awaiting_headers) == [first]
    book.forget(first)
    book.forget(third)


async def test_when_every_connection_is_busy_the_new_one_is_refused() -> None:
    book, closed = book_of(1)
    loop = asyncio.get_running_loop()
    busy, late = Connection(loop), Connection(loop)
    c: Any = busy
    book.opened(c)  # its request is running: it waits for nothing
    c = late
    book.opened(c)
    assert late.transport.closed and not busy.transport.closed
    assert closed == ["over_limit"]
    assert book.open == {busy}
