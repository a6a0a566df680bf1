"""Bounds on the connections ``forebay serve`` holds: slow headers, slow bodies, how many at once.

uvicorn waits for a request's headers and body as long as a client likes, and takes every
connection the kernel hands it. A client that opens connections and sends half of a request (or
nothing) holds each one for good; once the process runs out of file descriptors
(``ulimit -n``), no new request is answered. :class:`BoundedHttpProtocol` is uvicorn's own HTTP
protocol (httptools) with three bounds added:

* **header_timeout_s**: a connection's next request must have sent all its headers within this
  long after the connection opened, or after the previous answer; otherwise the connection is
  closed, with a 408 answer if part of a request had arrived. (uvicorn's ``timeout_keep_alive``
  closes idle connections sooner, but one byte of a next request cancels it.)
* **body_timeout_s**: a request's body must have arrived this long after its headers; otherwise
  it is answered 408 and the connection closed. The protocol marks the request's scope
  (:data:`~forebay.http.errors.BODY_TIMEOUT_S`), so the app, whose read of the body ends
  as if the client had gone, counts and logs a 408, not a client that hung up.
* **max_connections**: when that many connections are open, a new one closes the connection
  that has waited longest for its headers (an idle or half-sent one); if every connection is
  busy with a request, the new one is closed instead. :func:`connection_limits` lowers the
  bound at start-up to leave file descriptors to the rest of the process.

The deadlines cost a request nothing (no timer, no bookkeeping): one sweep per server, every
second or sooner, reads each connection's phase from uvicorn's state and closes those that
stayed in it past their bound (see :class:`ConnectionBook`). A body counts as arrived when the
parser has seen its end; uvicorn stops reading a body the app has not read past 64 KB, which
the routes never leave for long. Closed connections are counted in
``forebay_http_connections_closed_total``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from forebay.http.errors import BODY_TIMEOUT_S
from forebay.http.settings import ServiceSettings

__all__ = ["BoundedHttpProtocol", "ConnectionLimits", "connection_limits", "protocol_for"]

log = logging.getLogger("forebay.service")

FILES_KEPT_FOR_THE_REST = 128
"""File descriptors left to everything but client connections (the job store, handler
processes, logs) when the open-file limit is low."""
_FEWEST_CONNECTIONS = 16
_LONGEST_SWEEP_S = 1.0
_WARN_EVERY_S = 60.0


def _answer_408(kind: str, message: str) -> bytes:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_HEADERS_LATE = _answer_408(
    "header_timeout", "the request's headers did not arrive in time (FOREBAY_HEADER_TIMEOUT_S)"
)
_BODY_LATE = _answer_408(
    "body_timeout",
    "the body did not arrive in time (FOREBAY_BODY_TIMEOUT_S); nothing was stored, send it again",
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds one server keeps, and who hears of each connection it closes."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    on_closed: Callable[[str], None] = lambda reason: None
    """Called with ``header_timeout``, ``body_timeout``, ``evicted`` or ``over_limit``."""

    @property
    def sweep_every_s(self) -> float:
        return min(_LONGEST_SWEEP_S, self.header_timeout_s / 4, self.body_timeout_s / 4)


def connection_limits(
    settings: ServiceSettings, on_closed: Callable[[str], None] = lambda reason: None
) -> ConnectionLimits:
    """The bounds for ``settings``, ``max_connections`` lowered to fit the open-file limit."""
    most = settings.max_connections
    files = _open_file_limit()
    if files is not None:
        most = min(most, max(_FEWEST_CONNECTIONS, files - FILES_KEPT_FOR_THE_REST))
    if most < settings.max_connections:
        log.info(
            "accepting at most %d connections at once: the open-file limit (ulimit -n) is %d "
            "and FOREBAY_MAX_CONNECTIONS is %d; raise the limit to accept more",
            most,
            files,
            settings.max_connections,
        )
    else:
        log.info("accepting at most %d connections at once", most)
    return ConnectionLimits(
        settings.header_timeout_s, settings.body_timeout_s, most, on_closed=on_closed
    )


def _open_file_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


class Phase(enum.Enum):
    """What a connection waits for: the client's headers, the client's body, or neither (its
    request is being answered)."""

    HEADERS = "headers"
    BODY = "body"
    BUSY = "busy"


class ConnectionBook:
    """The connections of one server, and the sweep that closes those past their deadline.

    No request pays for the deadlines: each sweep (every ``sweep_every_s`` while connections
    are open) looks at every connection's phase (:meth:`BoundedHttpProtocol.observe`, read from
    uvicorn's own state) and closes those seen in the same phase of the same request for
    longer than its bound, so a connection goes between its bound and one sweep later. The
    sweep also orders the connections waiting for headers, longest first (newcomers join at
    the end), for :meth:`opened` to pick which one makes room.

    Only the event loop's thread touches it (protocol callbacks and the sweep are loop
    callbacks), so it needs no lock.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[BoundedHttpProtocol] = set()
        self.idle: dict[BoundedHttpProtocol, None] = {}  # waiting for headers, longest first
        self._sweep: asyncio.TimerHandle | None = None
        self._warned_at = -_WARN_EVERY_S

    def opened(self, connection: BoundedHttpProtocol) -> None:
        """Count a new connection; make room by closing one if the bound is reached."""
        self.open.add(connection)
        if self._sweep is None:
            self._sweep = connection.loop.call_later(
                self.limits.sweep_every_s, self.sweep, connection.loop
            )
        if len(self.open) > self.limits.max_connections:
            self._make_room(connection)
        if connection in self.open:
            self.idle[connection] = None

    def _make_room(self, newcomer: BoundedHttpProtocol) -> None:
        while self.idle:
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            if oldest in self.open and oldest.waiting_for_headers():
                self.close(oldest, "evicted")
                break
        else:  # every other connection is busy with a request: refuse this one
            self.close(newcomer, "over_limit")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "%d connections are open, the most this service takes at once: closed the one "
                "that waited longest for its request. Clients are holding connections idle, or "
                "the load needs a higher FOREBAY_MAX_CONNECTIONS (and ulimit -n)",
                self.limits.max_connections,
            )

    def close(self, connection: BoundedHttpProtocol, reason: str) -> None:
        self.forget(connection)
        connection.transport.close()
        self.limits.on_closed(reason)

    def forget(self, connection: BoundedHttpProtocol) -> None:
        self.open.discard(connection)
        self.idle.pop(connection, None)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections past their deadline; order the idle ones; come back later."""
        self._sweep = None
        now = loop.time()
        idle: list[tuple[float, BoundedHttpProtocol]] = []
        for connection in list(self.open):
            phase, since = connection.observe(now)
            waited_s = now - since
            if phase is Phase.HEADERS:
                if waited_s >= self.limits.header_timeout_s:
                    connection.headers_late()
                else:
                    idle.append((since, connection))
            elif phase is Phase.BODY and waited_s >= self.limits.body_timeout_s:
                connection.body_late()
        idle.sort(key=lambda entry: entry[0])
        self.idle = dict.fromkeys(connection for _, connection in idle)
        if self.open:
            self._sweep = loop.call_later(self.limits.sweep_every_s, self.sweep, loop)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of :class:`ConnectionLimits`.

    Made for one server by :func:`protocol_for`, which gives the subclass its own book. It
    adds nothing to a request's path: only a connection's start and end are hooked, and the
    book's sweep reads the rest from uvicorn's state.
    """

    book: ClassVar[ConnectionBook]
    _phase = Phase.HEADERS
    _request: RequestResponseCycle | None = None  # as last observed
    _since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self.book.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.book.forget(self)
        super().connection_lost(exc)

    def waiting_for_headers(self) -> bool:
        """No request is being received or answered: the next one's headers are awaited."""
        cycle = self.cycle
        return not self.transport.is_closing() and (cycle is None or cycle.response_complete)

    def observe(self, now: float) -> tuple[Phase, float]:
        """This connection's phase, and since when (at the latest) it has been in it."""
        cycle = self.cycle  # the newest request whose headers came (pipelined ones included)
        if self.transport.is_closing():
            phase = Phase.BUSY
        elif cycle is None or cycle.response_complete:
            phase = Phase.HEADERS
        elif cycle.more_body:  # the parser has not seen the end of the body
            phase = Phase.BODY
        else:
            phase = Phase.BUSY
        if phase is not self._phase or cycle is not self._request:
            self._phase, self._request, self._since = phase, cycle, now
        return phase, self._since

    def headers_late(self) -> None:
        # uvicorn starts a new header list for each request it begins to read.
        done = None if self.cycle is None else self.cycle.scope["headers"]
        if self.headers is not done:  # part of a request came: say why it ends
            self.transport.write(_HEADERS_LATE)
        log.debug("closed a connection whose request headers did not arrive in time")
        self.book.close(self, "header_timeout")

    def body_late(self) -> None:
        cycle = self.cycle
        if not cycle.response_started:
            # The app's read of the body ends as if the client had gone; this mark makes it
            # count and log a 408 instead. Its own answer is dropped: this one is on the wire.
            scope = cast(dict[str, object], cycle.scope)
            scope[BODY_TIMEOUT_S] = self.book.limits.body_timeout_s
            self.transport.write(_BODY_LATE)
        self.book.close(self, "body_timeout")


def protocol_for(limits: ConnectionLimits) -> type[BoundedHttpProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for one server."""
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"book": ConnectionBook(limits)})
