"""The connection bounds of ``forebay serve`` as decisions (no sockets): which connection a
sweep closes, and which one makes room when the server is full.

The bounds against a real server and real sockets: tests/acceptance/test_serve_faults.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from forebay.http.connections import ConnectionBook, ConnectionLimits, Phase


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Connection:
    """What the book uses of a protocol, with its phase set by the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop, phase: Phase, since: float) -> None:
        self.transport = Transport()
        self.loop = loop
        self.phase = phase
        self.since = since
        self.late: str | None = None

    def waiting_for_headers(self) -> bool:
        return self.phase is Phase.HEADERS and not self.transport.closed

    def observe(self, now: float) -> tuple[Phase, float]:
        return self.phase, self.since

    def headers_late(self) -> None:
        self.late = "headers"

    def body_late(self) -> None:
        self.late = "body"


def book_of(most: int) -> tuple[ConnectionBook, list[str]]:
    closed: list[str] = []
    limits = ConnectionLimits(
        header_timeout_s=10, body_timeout_s=60, max_connections=most, on_closed=closed.append
    )
    return ConnectionBook(limits), closed


async def test_a_sweep_ends_only_what_waited_past_its_bound() -> None:
    book, _ = book_of(100)
    loop = asyncio.get_running_loop()
    now = loop.time()
    cases: dict[str, Any] = {
        "headers late": Connection(loop, Phase.HEADERS, now - 10),
        "headers in time": Connection(loop, Phase.HEADERS, now - 9),
        "body late": Connection(loop, Phase.BODY, now - 60),
        "body in time": Connection(loop, Phase.BODY, now - 59),
        "busy for long": Connection(loop, Phase.BUSY, now - 3600),
    }
    for connection in cases.values():
        book.opened(connection)
    book.sweep(loop)
    assert {name: c.late for name, c in cases.items()} == {
        "headers late": "headers",
        "headers in time": None,
        "body late": "body",
        "body in time": None,
        "busy for long": None,
    }
    assert list(book.idle) == [cases["headers in time"]]
    for connection in cases.values():
        book.forget(connection)


async def test_when_full_the_connection_waiting_longest_for_headers_makes_room() -> None:
    book, closed = book_of(3)
    loop = asyncio.get_running_loop()
    now = loop.time()
    recent: Any = Connection(loop, Phase.HEADERS, now - 1)
    oldest: Any = Connection(loop, Phase.HEADERS, now - 5)
    busy: Any = Connection(loop, Phase.BUSY, now - 9)
    for connection in (recent, oldest, busy):
        book.opened(connection)
    book.sweep(loop)  # orders the idle ones: the longest waiting first
    newcomer: Any = Connection(loop, Phase.HEADERS, now)
    book.opened(newcomer)
    assert oldest.transport.closed and closed == ["evicted"]
    assert book.open == {recent, busy, newcomer}
    assert list(book.idle) == [recent, newcomer]
    for connection in book.open.copy():
        book.forget(connection)


async def test_when_every_connection_is_busy_the_new_one_is_refused() -> None:
    book, closed = book_of(1)
    loop = asyncio.get_running_loop()
    busy: Any = Connection(loop, Phase.BUSY, loop.time())
    book.opened(busy)
    busy.phase = Phase.BUSY  # its request came in since it connected
    late: Any = Connection(loop, Phase.HEADERS, loop.time())
    book.opened(late)
    assert late.transport.closed and not busy.transport.closed
    assert closed == ["over_limit"]
    assert book.open == {busy}
    book.forget(busy)
