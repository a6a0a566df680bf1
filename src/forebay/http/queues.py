"""``GET /v1/queues``: every queue the store or the app knows, with its counts per state, the
age of its oldest queued job, and what the app declares for it."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.models import QueuesOut
from forebay.http.openapi import ERRORS
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import QueueCounts

__all__ = ["add_routes"]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``GET /v1/queues``."""
    app = service.app

    @api.get(
        "/v1/queues",
        tags=["queues"],
        summary="Counts per queue and state, and the age of the oldest queued job",
        response_model=QueuesOut,
        responses=ERRORS,
    )
    async def list_queues(request: Request) -> Response:
        service.authorize(request, Scope.READ)
        counts = {c.queue: c for c in await app.counts()}
        names = sorted(set(counts) | set(app.queues))
        rows = []
        for name in names:
            config = app.queues.get(name)
            row = (counts.get(name) or QueueCounts(name)).to_dict()
            row["declared"] = config is not None
            row["handled"] = config is not None and config.handler is not None
            row["max_depth"] = config.max_depth if config is not None else None
            rows.append(row)
        return JSONResponse({"queues": rows})
