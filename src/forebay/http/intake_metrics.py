"""The intake's request metrics: every answer of a route that stores jobs, counted by source and
status and timed from request to answer (``forebay_intake_requests_total``,
``forebay_intake_latency_seconds``; see :mod:`forebay.metrics`).

An ASGI middleware, not a route's own code, so that it sees every answer the same way: the
refusals of the middleware in front of the routes, the error handlers' answers, and a client that
hung up before its body arrived (counted as ``499``).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from forebay.http.service import Service

__all__ = ["IntakeMetrics"]


class IntakeMetrics:
    """ASGI middleware: count intake answers by source and status, and time them."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        label = self.service.intake_label(scope["path"])
        if label is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.service.metrics.observe_intake(label, status, time.perf_counter() - started)
