"""The fleet over HTTP: ``GET /v1/workers`` (the live worker processes registered in the store,
and per queue how many consume it) and ``GET /v1/throughput`` (jobs finished per queue and
minute, and since the store was created). Both read the store (``read`` scope), so any node, an
intake-only ``forebay serve --no-workers`` too, answers for the whole fleet (docs/fleet.md).

They count every tenant's jobs and workers: a token bound to a tenant is refused (403
``forbidden``), as it is ``/metrics``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.fleet import THROUGHPUT_KEPT_S, minute_of, queue_consumers
from forebay.http.errors import ApiError
from forebay.http.models import FleetOut, QueueParam, ThroughputOut
from forebay.http.openapi import ERRORS
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import JSON

__all__ = ["MAX_MINUTES", "add_routes"]

MAX_MINUTES = int(THROUGHPUT_KEPT_S // 60)
"""The longest series ``GET /v1/throughput`` answers: the store keeps minutes for a day."""

MinutesParam = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_MINUTES,
        description=f"How many minutes back, the current one included (1 to {MAX_MINUTES}).",
    ),
]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``GET /v1/workers`` and ``GET /v1/throughput``."""
    app = service.app

    @api.get(
        "/v1/workers",
        tags=["fleet"],
        summary="The live workers (every host) and, per queue, how many consume it",
        response_model=FleetOut,
        responses=ERRORS,
    )
    async def list_workers(request: Request) -> Response:
        _authorize(service, request)
        workers = await app.list_workers()
        known = {c.queue for c in await app.counts()}
        return JSONResponse(
            {
                "workers": [w.to_dict() for w in workers],
                "queues": [q.to_dict() for q in queue_consumers(workers, known)],
            }
        )

    @api.get(
        "/v1/throughput",
        tags=["fleet"],
        summary="Jobs completed, dead-lettered and reclaimed per queue and minute; totals",
        response_model=ThroughputOut,
        responses=ERRORS,
    )
    async def throughput(
        request: Request, minutes: MinutesParam = 60, queue: QueueParam = None
    ) -> Response:
        """``series`` has a row per queue and minute in which a job finished (sorted by queue,
        then minute), from ``since`` (the start of the first of the ``minutes`` minutes, the
        current one last); ``totals`` counts since the store was created."""
        _authorize(service, request)
        since = minute_of(time.time()) - (minutes - 1) * 60
        series = await app.throughput(since=datetime.fromtimestamp(since, UTC), queue=queue)
        totals = [t for t in await app.totals() if queue is None or t.queue == queue]
        body: dict[str, JSON] = {
            "minutes": minutes,
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "series": [row.to_dict() for row in series],
            "totals": [t.to_dict() for t in totals],
        }
        return JSONResponse(body)


def _authorize(service: Service, request: Request) -> None:
    """``read`` scope, and not a token bound to a tenant: these answers cover every tenant."""
    token = service.authorize(request, Scope.READ)
    if token is not None and token.tenant is not None:
        raise ApiError(
            403,
            "forbidden",
            f"this API token is bound to tenant {token.tenant!r}; the fleet's workers and "
            "throughput cover every tenant's jobs",
        )
