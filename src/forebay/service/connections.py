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
  (:data:`~forebay.service.errors.BODY_TIMEOUT_S`), so the app, whose read of the body ends
  as if the client had gone, counts and logs a 408, not a client that hung up.
* **max_connections**: when that many connections are open, a new one closes the connection
  that has waited longest for its headers (an idle or half-sent one); if every connection is
  busy with a request, the new one is closed instead. :func:`connection_limits` lowers the
  bound at start-up to leave file descriptors to the rest of the process.

The deadlines cost a request two dictionary updates, not a timer: one sweep per server, a few
times a second while connections wait, closes those past their deadline (oldest first, so it
stops at the first one in time). Closed connections are counted in
``forebay_http_connections_closed_total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from forebay.service.errors import BODY_TIMEOUT_S
from forebay.service.settings import ServiceSettings

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


class ConnectionBook:
    """The connections of one server: which are open, which wait for headers or a body (each
    since when, oldest first), and the sweep that closes those past their deadline.

    Only the event loop's thread touches it (protocol callbacks and the sweep are loop
    callbacks), so it needs no lock.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[BoundedHttpProtocol] = set()
        self.awaiting_headers: dict[BoundedHttpProtocol, float] = {}
        self.awaiting_body: dict[BoundedHttpProtocol, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._warned_at = -_WARN_EVERY_S

    def opened(self, connection: BoundedHttpProtocol) -> None:
        """Count a new connection; make room by closing one if the bound is reached."""
        self.open.add(connection)
        if len(self.open) <= self.limits.max_connections:
            return
        oldest = next(iter(self.awaiting_headers), None)
        if oldest is None:  # every other connection is busy with a request: refuse this one
            self.close(connection, "over_limit")
        else:
            self.close(oldest, "evicted")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "%d connections are open, the most this service takes at once: closed the one "
                "that waited longest for its request. Clients are holding connections idle, or "
                "the load needs a higher FOREBAY_MAX_CONNECTIONS (and ulimit -n)",
                self.limits.max_connections,
            )

    def wait(
        self, waiting: dict[BoundedHttpProtocol, float], connection: BoundedHttpProtocol
    ) -> None:
        """Note that ``connection`` waits, from now on, in ``waiting`` (at its end)."""
        waiting.pop(connection, None)
        waiting[connection] = connection.loop.time()
        if self._sweep is None:
            self._sweep = connection.loop.call_later(
                self.limits.sweep_every_s, self._sweep_now, connection.loop
            )

    def close(self, connection: BoundedHttpProtocol, reason: str) -> None:
        self.forget(connection)
        connection.transport.close()
        self.limits.on_closed(reason)

    def forget(self, connection: BoundedHttpProtocol) -> None:
        self.open.discard(connection)
        self.awaiting_headers.pop(connection, None)
        self.awaiting_body.pop(connection, None)

    def _sweep_now(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        for waiting, timeout_s, late in (
            (self.awaiting_headers, self.limits.header_timeout_s, BoundedHttpProtocol.headers_late),
            (self.awaiting_body, self.limits.body_timeout_s, BoundedHttpProtocol.body_late),
        ):
            while waiting:
                connection, since = next(iter(waiting.items()))
                if now - since < timeout_s:
                    break  # the rest came later
                del waiting[connection]
                late(connection)
        if self.awaiting_headers or self.awaiting_body:
            self._sweep = loop.call_later(self.limits.sweep_every_s, self._sweep_now, loop)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of :class:`ConnectionLimits`.

    Made for one server by :func:`protocol_for`, which gives the subclass its own book.
    """

    book: ClassVar[ConnectionBook]
    _request_begun = False
    _body_of: RequestResponseCycle | None = None  # the request whose body is awaited

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.book.opened(self)
        if not transport.is_closing():
            self.book.wait(self.book.awaiting_headers, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.book.forget(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True

    def on_headers_complete(self) -> None:
        self._request_begun = False
        self.book.awaiting_headers.pop(self, None)
        super().on_headers_complete()
        self._body_of = self.cycle
        self.book.wait(self.book.awaiting_body, self)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_of = None
        self.book.awaiting_body.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_of is not None and self._body_of.response_complete:
            # Answered before its body was all in (e.g. 413): the rest is read and dropped
            # while the connection waits for the next request's headers.
            self._body_of = None
            self.book.awaiting_body.pop(self, None)
        # Unless a pipelined request (headers complete) was started, the next one is awaited.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.book.wait(self.book.awaiting_headers, self)

    def headers_late(self) -> None:
        if self.transport.is_closing():
            return
        if self._request_begun:  # part of a request came: say why it is not answered
            self.transport.write(_HEADERS_LATE)
        log.debug("closed a connection whose request headers did not arrive in time")
        self.book.close(self, "header_timeout")

    def body_late(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self._body_of
        if cycle is not None and not cycle.response_started:
            # The app's read of the body ends as if the client had gone; this mark makes it
            # count and log a 408 instead. Its own answer is dropped: this one is on the wire.
            scope = cast(dict[str, object], cycle.scope)
            scope[BODY_TIMEOUT_S] = self.book.limits.body_timeout_s
            self.transport.write(_BODY_LATE)
        self.book.close(self, "body_timeout")


def protocol_for(limits: ConnectionLimits) -> type[BoundedHttpProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for one server."""
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"book": ConnectionBook(limits)})
