"""What watches the service asks: ``GET /healthz`` (the process is alive), ``GET /readyz`` (the
backend answers and, with in-process workers, their heartbeats are fresh) and ``GET /metrics``
(Prometheus; :mod:`forebay.metrics` names every metric). None of them needs a token; a token
bound to a tenant is refused ``/metrics`` (403), which counts every tenant's jobs."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.app import Forebay
from forebay.errors import ForebayError
from forebay.fleet import WorkerInfo, queue_consumers
from forebay.http.errors import ApiError
from forebay.http.models import ReadyOut
from forebay.http.service import Service
from forebay.job import QueueCounts

__all__ = ["add_routes"]

log = logging.getLogger("forebay.http")


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``/healthz``, ``/readyz`` and ``/metrics``."""
    app = service.app

    @api.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        tags=["probes"],
        summary="Backend reachable and, with in-process workers, their heartbeats fresh",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready: see the details"}},
    )
    async def readyz() -> Response:
        """Ready when the backend answers and this node's own workers (if it runs any) beat.

        Also what the fleet looks like from the store (:mod:`forebay.fleet`): per queue how
        many live workers, on any host, consume it (``consumers``), how many are live in all
        (``fleet``), and which queues none consumes (``unconsumed``). A queue without consumers
        leaves the node ready: the intake still stores its jobs, which run once a worker starts.
        """
        backend: dict[str, object] = {"ok": True}
        counts: list[QueueCounts] = []
        fleet: list[WorkerInfo] | None = None
        try:
            async with asyncio.timeout(service.settings.readiness_timeout_s):
                store = await app.open()
                await store.ping()
                counts = await app.counts()
        except (ForebayError, TimeoutError) as exc:
            backend = {"ok": False, "error": str(exc) or type(exc).__name__}
        else:
            fleet = await _live_workers(app, service.settings.readiness_timeout_s)
        health = service.workers.health()
        workers_ok = health is None or (health.running and health.fresh)
        ready = bool(backend["ok"]) and workers_ok
        consumers = {c.queue: c.workers for c in queue_consumers(fleet or [])}
        queues = [{**c.to_dict(), "consumers": consumers.get(c.queue, 0)} for c in counts]
        body = {
            "ready": ready,
            "backend": backend,
            "workers": None if health is None else health.to_dict(),
            "fleet": None if fleet is None else {"workers": len(fleet)},
            "queues": queues,
            # Unknown while the store does not answer: nothing is claimed about the fleet.
            "unconsumed": []
            if fleet is None
            else [q["queue"] for q in queues if not q["consumers"]],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get(
        "/metrics",
        tags=["probes"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics(request: Request) -> Response:
        tenant = service.authorizer.bound_tenant(request.headers.get("authorization"))
        if tenant is not None:
            raise ApiError(
                403,
                "forbidden",
                f"this API token is bound to tenant {tenant!r}; the metrics count every "
                "tenant's jobs",
            )
        await service.metrics.read_store(app, timeout_s=service.settings.readiness_timeout_s)
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _live_workers(app: Forebay, timeout_s: float) -> list[WorkerInfo] | None:
    """The live workers, or None when they cannot be read: what the fleet looks like is news
    for the operator, never a reason to take the intake out of service."""
    try:
        async with asyncio.timeout(timeout_s):
            return await app.list_workers()
    except (ForebayError, TimeoutError) as exc:
        log.warning("could not list the live workers: %s", exc or type(exc).__name__)
        return None
