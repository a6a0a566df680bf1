"""``GET /v1/schedules``: the stored schedules (whichever app saved them), with their last and
next tick."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.openapi import ERRORS
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import utcnow

__all__ = ["add_routes"]


class ScheduleOut(BaseModel):
    name: str
    queue: str
    cron: str | None = Field(description="A cron expression (five fields), or null.")
    every_s: float | None = Field(description="An interval in seconds, or null.")
    tz: str = Field(description="The timezone the cron expression is read in (IANA name).")
    payload: Any
    priority: int
    catch_up: int = Field(description="Most missed ticks enqueued after downtime.")
    last_tick: str | None = Field(description="The newest tick fired (ISO 8601 UTC), or null.")
    next_tick: str = Field(description="When the next tick is due (ISO 8601 UTC).")


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``GET /v1/schedules``."""
    app = service.app

    @api.get(
        "/v1/schedules",
        tags=["schedules"],
        summary="The stored schedules, with their last and next tick",
        response_model=SchedulesOut,
        responses=ERRORS,
    )
    async def list_schedules(request: Request) -> Response:
        service.authorize(request, Scope.READ)
        now = utcnow()
        found = await app.list_schedules()
        return JSONResponse({"schedules": [s.to_dict(now) for s in found]})
