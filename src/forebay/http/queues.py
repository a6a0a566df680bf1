"""``GET /v1/queues``: every queue the store or the app knows, with its counts per state, the
age of its oldest queued job, its stored settings (paused, max_depth) and what the app declares
for it; ``POST /v1/queues/{queue}/pause`` and ``/resume`` (``admin`` scope): stop or restart
every worker leasing it, on every host (docs/controls.md).

Each row also shows the queue's flow limits (``limits``: the stored ones, else those the app
declares) and how many due jobs they hold back now (``throttled``). For a token bound to a
tenant the counts are that tenant's jobs only, and pause and resume are refused (403): they act
on every tenant's jobs."""

from __future__ import annotations

from fastapi import FastAPI, Path
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.flow import NO_LIMITS
from forebay.http.models import QueueSettingsOut, QueuesOut
from forebay.http.openapi import ERRORS
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import QueueCounts

__all__ = ["add_routes"]

_QUEUE = Path(
    min_length=1,
    max_length=128,
    pattern=r"^[A-Za-z0-9_.:-]+$",
    description="The queue's name (it need not hold jobs yet).",
)


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``GET /v1/queues`` and the pause and resume of one queue."""
    app = service.app

    @api.get(
        "/v1/queues",
        tags=["queues"],
        summary="Counts per queue and state, the oldest queued job's age, paused, max_depth",
        response_model=QueuesOut,
        responses=ERRORS,
    )
    async def list_queues(request: Request) -> Response:
        tenant = service.tenant(request, Scope.READ)
        counts = {c.queue: c for c in await app.counts(tenant=tenant)}
        settings = await app.queue_settings()
        names = sorted(set(counts) | set(app.queues) | set(settings))
        rows = []
        for name in names:
            config = app.queues.get(name)
            stored = settings.get(name)
            row = (counts.get(name) or QueueCounts(name)).to_dict()
            row["declared"] = config is not None
            row["handled"] = config is not None and config.handler is not None
            row["paused"] = stored is not None and stored.paused
            row["max_depth"] = (
                stored.max_depth
                if stored is not None
                else config.max_depth
                if config is not None
                else None
            )
            row["limits"] = (
                stored.limits
                if stored is not None and stored.limits.active
                else config.limits
                if config is not None
                else NO_LIMITS
            ).to_dict()
            rows.append(row)
        return JSONResponse({"queues": rows})

    @api.post(
        "/v1/queues/{queue}/pause",
        tags=["queues"],
        summary="Pause a queue: no worker leases it (within a second); enqueues are accepted",
        response_model=QueueSettingsOut,
        responses=ERRORS,
    )
    async def pause_queue(request: Request, queue: str = _QUEUE) -> Response:
        service.authorize(request, Scope.ADMIN, operator=True)
        return JSONResponse((await app.pause(queue)).to_dict())

    @api.post(
        "/v1/queues/{queue}/resume",
        tags=["queues"],
        summary="Resume a paused queue: workers lease it again",
        response_model=QueueSettingsOut,
        responses=ERRORS,
    )
    async def resume_queue(request: Request, queue: str = _QUEUE) -> Response:
        service.authorize(request, Scope.ADMIN, operator=True)
        return JSONResponse((await app.resume(queue)).to_dict())
