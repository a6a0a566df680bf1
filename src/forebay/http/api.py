"""The HTTP API: :func:`create_app` builds one FastAPI app for one :class:`~forebay.Forebay`.

Nothing happens at import or in :func:`create_app` beyond building routes. The app's lifespan
(run by the server) opens the backend, registers the metrics and log observers, and runs the
app's workers in the same event loop unless ``settings.workers`` is False; on shutdown it stops
them gracefully and closes the backend (:class:`~forebay.http.service.Service`). Requests never
wait on each other in this layer: each awaits its own enqueue, and the backend group-commits
concurrent ones (DESIGN §6).

The routes live by resource, each module adding its own: :mod:`.intake`, :mod:`.sources`,
:mod:`.jobs`, :mod:`.runs`, :mod:`.queues`, :mod:`.schedules`, :mod:`.dead`, :mod:`.workers`,
:mod:`.probes`, and the dashboard at ``/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from forebay.app import Forebay
from forebay.execution import tuning
from forebay.http import (
    dead,
    intake,
    jobs,
    probes,
    queues,
    runs,
    schedules,
    sources,
    workers,
)
from forebay.http.api_docs import mount_api_docs
from forebay.http.cross_site import BrowserGuard, allow_cross_origin
from forebay.http.dashboard import mount_dashboard
from forebay.http.errors import install_error_handlers
from forebay.http.intake_metrics import IntakeMetrics
from forebay.http.openapi import document_payloads, document_security
from forebay.http.query_params import CheckedQueryRoute
from forebay.http.service import Service
from forebay.http.settings import ServiceSettings

__all__ = ["create_app"]


def create_app(
    app: Forebay, settings: ServiceSettings | None = None, *, tune_gc: bool = False
) -> FastAPI:
    """The HTTP service for ``app`` (see :mod:`forebay.http` and docs/http.md).

    ``tune_gc``: once started, tune the process's garbage collector for serving (see
    :mod:`forebay.execution.tuning`); ``forebay serve`` does, an app that embeds this one decides
    for its own process."""
    settings = settings or ServiceSettings()
    service = Service(app, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if tune_gc:
            tuning.tune_gc()
        try:
            yield
        finally:
            await service.stop()

    api = FastAPI(
        title="forebay",
        summary="Durable intake: jobs are answered after they are stored.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served by mount_api_docs, from the package rather than a CDN
        redoc_url=None,
    )
    api.state.service = service
    api.router.route_class = CheckedQueryRoute  # every route refuses unknown query parameters
    install_error_handlers(api, backend_retry_after_s=settings.retry_after_s)
    # Middleware added last runs first: metrics see every answer, CORS headers go on refusals.
    if not settings.api_tokens:
        api.add_middleware(
            BrowserGuard,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.cors_origins,
        )
    if settings.cors_origins:
        allow_cross_origin(api, settings.cors_origins)
    api.add_middleware(IntakeMetrics, service=service)
    intake.add_routes(api, service)
    sources.add_routes(api, service)
    jobs.add_routes(api, service)
    runs.add_routes(api, service)
    queues.add_routes(api, service)
    schedules.add_routes(api, service)
    dead.add_routes(api, service)
    workers.add_routes(api, service)
    probes.add_routes(api, service)
    mount_dashboard(api)
    mount_api_docs(api)
    document_security(api, tokens=not service.authorizer.open)
    document_payloads(api, intake.JOBS_PATH, app.payload_models)
    return api


def _version() -> str:
    from forebay import __version__

    return __version__
