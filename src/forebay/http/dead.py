"""Dead letters: ``GET /v1/dead`` lists them (``read`` scope); ``POST /v1/dead/replay`` puts
matching ones back to queued with fresh attempts and ``POST /v1/dead/purge`` deletes them
(``admin``). Replay and purge take a filter body (every field narrows the match; none: every
dead job) and ``dry_run`` to only count. A token bound to a tenant lists, replays and purges only
that tenant's dead jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import AwareDatetime, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.body import parse_json
from forebay.http.errors import ApiError, invalid_payload
from forebay.http.models import (
    BeforeIdParam,
    DeadFilterIn,
    DeadPage,
    LimitParam,
    QueueParam,
    WithoutNul,
)
from forebay.http.openapi import ERRORS, NOT_JSON, flat_schema, json_body
from forebay.http.responses import jobs_page
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import DeadCursor, JobFilter, JobState

__all__ = ["add_routes"]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add the routes of ``/v1/dead``."""
    app = service.app

    @api.get(
        "/v1/dead",
        tags=["dead letters"],
        summary="Dead jobs, the latest death first; page with before_id",
        response_model=DeadPage,
        responses=ERRORS,
    )
    async def list_dead(
        request: Request,
        queue: QueueParam = None,
        error_type: Annotated[str | None, Query(min_length=1, max_length=256), WithoutNul] = None,
        since: Annotated[AwareDatetime | None, Query(description="Dead at or after this.")] = None,
        until: Annotated[AwareDatetime | None, Query(description="Dead before this.")] = None,
        before_id: BeforeIdParam = None,
        limit: LimitParam = 100,
    ) -> Response:
        tenant = service.tenant(request, Scope.READ)
        where = JobFilter(
            queue=queue,
            state=JobState.DEAD,
            error_type=error_type,
            since=since,
            until=until,
            tenant=tenant,
        )
        cursor = None if before_id is None else await _cursor(before_id, tenant)
        return jobs_page(await app.list_dead(where, limit=limit, before=cursor), limit)

    async def _cursor(before_id: int, tenant: str | None) -> DeadCursor:
        """The next page starts after this dead job (the previous page's last)."""
        last = await (await app.open()).get_job(before_id)
        if (
            last is None
            or last.state is not JobState.DEAD
            or (tenant is not None and last.tenant != tenant)
        ):
            raise ApiError(
                400,
                "invalid_cursor",
                f"before_id {before_id} is not a dead job (replayed or purged since?); "
                "list again from the first page",
            )
        return DeadCursor.after(last)

    filter_body = json_body(flat_schema(DeadFilterIn), required=False)

    @api.post(
        "/v1/dead/replay",
        tags=["dead letters"],
        summary="Put matching dead jobs back to queued (fresh attempts)",
        responses={
            200: {"description": '{"replayed": N, "dry_run": bool}'},
            **ERRORS,
            **NOT_JSON,
        },
        openapi_extra=filter_body,
    )
    async def replay_dead(request: Request) -> Response:
        where, dry_run = await _dead_filter(service, request)
        count = await app.replay(where, dry_run=dry_run)
        return JSONResponse({"replayed": count, "dry_run": dry_run})

    @api.post(
        "/v1/dead/purge",
        tags=["dead letters"],
        summary="Delete matching dead jobs",
        responses={
            200: {"description": '{"purged": N, "dry_run": bool}'},
            **ERRORS,
            **NOT_JSON,
        },
        openapi_extra=filter_body,
    )
    async def purge_dead(request: Request) -> Response:
        where, dry_run = await _dead_filter(service, request)
        count = await app.purge(where, dry_run=dry_run)
        return JSONResponse({"purged": count, "dry_run": dry_run})


async def _dead_filter(service: Service, request: Request) -> tuple[JobFilter, bool]:
    """The dead jobs a replay or purge request matches, and whether it only counts them."""
    tenant = service.tenant(request, Scope.ADMIN)
    raw = await service.read_json_body(
        request, service.settings.max_body_bytes, json_only=service.json_only
    )
    body = parse_json(raw, allow_empty=True)
    try:
        given = DeadFilterIn.model_validate(body if body is not None else {})
    except ValidationError as exc:
        raise invalid_payload(exc) from None
    where = JobFilter(
        queue=given.queue,
        state=JobState.DEAD,
        error_type=given.error_type,
        since=given.since,
        until=given.until,
        ids=tuple(given.ids) if given.ids is not None else None,
        tenant=tenant,
    )
    return where, given.dry_run
