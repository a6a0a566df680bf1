"""What the routes of one HTTP app share: the Forebay app, its settings, metrics, tokens and
in-process workers, and the start and stop the app's lifespan runs.

:func:`~forebay.http.api.create_app` makes one :class:`Service` per FastAPI app (kept as
``api.state.service``); each route module gets it when its routes are added.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from starlette.requests import Request

from forebay.app import Forebay
from forebay.backends import Backend
from forebay.errors import BackendError, JobNotFound, RunNotFound
from forebay.execution.supervisor import InProcessWorkers
from forebay.http.auth import Authorizer
from forebay.http.body import read_body
from forebay.http.cross_site import require_json
from forebay.http.errors import ApiError
from forebay.http.intake_limits import IntakeLimiter
from forebay.http.settings import ApiToken, Scope, ServiceSettings
from forebay.job import Job
from forebay.logs import EnqueueLogger
from forebay.metrics import Metrics, PrometheusObserver
from forebay.observer import Observer
from forebay.runs import Run
from forebay.sources import Source

__all__ = ["Service"]

log = logging.getLogger("forebay.service")

_OPEN_WAIT_S = 1.0
"""How long the start waits for the backend before it goes on and waits in the background."""


def _log_open_failure(opening: asyncio.Task[Backend]) -> None:
    if opening.cancelled():
        return
    exc = opening.exception()
    if exc is not None:
        log.warning("backend still unreachable (%s); answering 503 until it is", exc)


class Service:
    """What the routes share: the app, settings, metrics, tokens and in-process workers."""

    def __init__(self, app: Forebay, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        self.authorizer = Authorizer(settings.api_tokens)
        # Without tokens, JSON routes take JSON only (a web page cannot post it cross-site).
        self.json_only = not settings.api_tokens
        self.workers = InProcessWorkers(
            app, shutdown_grace_s=settings.shutdown_grace_s, retention=retention(settings)
        )
        self.limiter = IntakeLimiter()
        self._observers: list[Observer] = [PrometheusObserver(self.metrics), EnqueueLogger()]
        self._opening: asyncio.Task[Backend] | None = None

    def authorize(
        self, request: Request, scope: Scope, *, operator: bool = False
    ) -> ApiToken | None:
        """The caller's token (None: the service has none), or ApiError 401/403; see
        :meth:`~forebay.http.auth.Authorizer.check` for ``operator``."""
        return self.authorizer.check(request.headers.get("authorization"), scope, operator=operator)

    def tenant(self, request: Request, scope: Scope) -> str | None:
        """Authorize the request for ``scope``; the tenant its token is bound to (None: every
        tenant), which every job and run the route touches must belong to."""
        token = self.authorize(request, scope)
        return None if token is None else token.tenant

    def admit_token(self, token: ApiToken | None) -> None:
        """Spend one of the token's intake requests (``token_rate``), or raise 429."""
        rate = self.settings.token_rate
        if rate is None:
            return
        try:
            self.limiter.admit(
                "token", "" if token is None else token.token, rate, what="this API token"
            )
        except ApiError:
            self.metrics.throttled("token")
            raise

    def admit_source(self, source: Source) -> None:
        """Spend one of the source's requests (its ``rate_limit``), or raise 429."""
        rate = source.rate_limit
        if rate is None:
            return
        try:
            self.limiter.admit("source", source.name, rate, what=f"source {source.name!r}")
        except ApiError:
            self.metrics.throttled("source", source.name)
            raise

    async def read_json_body(self, request: Request, limit: int, *, json_only: bool) -> bytes:
        """The body of a JSON route (see :mod:`forebay.http.cross_site` for ``json_only``)."""
        if json_only:
            require_json(request.headers)
        return await read_body(request, limit)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.app.observers.extend(self._observers)
        for source in self.app.sources.values():
            if source.auth is None:
                log.warning("source %s accepts unauthenticated requests (auth=None)", source.name)
        await self._open_backend()
        if self.settings.workers:
            self.workers.start()
        log.info(
            "forebay service ready: queues %s, sources %s, workers %s",
            ", ".join(sorted(self.app.queues)) or "none",
            ", ".join(sorted(self.app.sources)) or "none",
            ", ".join(self.workers.queues) if self.settings.workers else "off",
        )

    async def _open_backend(self) -> None:
        """Open the backend without holding up the start: a server that does not answer at
        once is waited for in the background (``/readyz`` answers 503 meanwhile; workers
        retry), while a ConfigError (bad URL, missing folder) still stops the start-up."""
        opening = asyncio.create_task(self.app.open(), name="forebay-open-backend")
        done, _ = await asyncio.wait({opening}, timeout=_OPEN_WAIT_S)
        if not done:
            log.warning("backend not answering yet; answering 503 on /readyz until it does")
            opening.add_done_callback(_log_open_failure)
            self._opening = opening
            return
        try:
            opening.result()
        except BackendError as exc:
            log.warning("backend unreachable at start-up (%s); answering 503 until it is", exc)

    def stop_now(self) -> None:
        """A second stop signal: the workers release their running jobs instead of waiting
        out the grace (see :meth:`forebay.Worker.stop_now`)."""
        self.workers.stop_now()

    async def stop(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        await self.workers.stop()
        for observer in self._observers:
            if observer in self.app.observers:
                self.app.observers.remove(observer)
        await self.app.close()

    # -- what several routes ask ----------------------------------------------------------
    def intake_label(self, path: str) -> str | None:
        """The ``source`` metric label of an intake request path (None: not intake)."""
        if path.startswith("/v1/queues/") and path.endswith("/jobs"):
            return "api"
        if path.startswith("/v1/sources/"):
            name = path[len("/v1/sources/") :]
            return name if name in self.app.sources else "unknown"
        return None

    async def own_job(self, tenant: str | None, job_id: int) -> Job:
        """The job, if ``tenant`` (None: any) may see it; else JobNotFound, the same answer as
        for a job that does not exist, so ids tell nothing about other tenants' jobs."""
        job = await self.app.get_job(job_id)
        if tenant is not None and job.tenant != tenant:
            raise JobNotFound(job_id)
        return job

    async def own_run(self, tenant: str | None, run_id: str) -> Run:
        """The run, if ``tenant`` (None: any) may see it; else RunNotFound (see :meth:`own_job`)."""
        run = await self.app.get_run(run_id)
        if tenant is not None and run.tenant != tenant:
            raise RunNotFound(run_id)
        return run


def retention(settings: ServiceSettings) -> dict[str, timedelta]:
    """The retention settings the service gives its workers (those it was given)."""
    values = {
        "completed_retention": settings.completed_retention,
        "dead_retention": settings.dead_retention,
        "cancelled_retention": settings.cancelled_retention,
    }
    return {name: value for name, value in values.items() if value is not None}
