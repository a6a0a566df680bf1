"""What a standalone worker (``forebay worker --metrics-port N``) answers over HTTP: the watching
part of ``forebay serve`` without the intake, so a worker deployed on its own is scraped and
probed like any other forebay process.

* ``GET /metrics``: this process's job counters (its worker's outcomes and durations, the jobs its
  handlers enqueued) and the store metrics every process exports (queue depth, oldest age,
  finished totals, live workers: :mod:`forebay.metrics`);
* ``GET /healthz``: the process is alive;
* ``GET /readyz``: the backend answers and this worker's heartbeat is fresh (it renewed its
  leases within the shortest ``lease_s`` of its queues, as ``forebay serve`` judges its own
  workers); 503 otherwise, with the same body shape as the service's ``workers`` part.

:func:`create_worker_app` is a factory (no state at import); the CLI serves the app with uvicorn
in the worker's own event loop and stops it once the worker has stopped.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from forebay.app import Forebay
from forebay.errors import ForebayError
from forebay.execution.supervisor import WorkerHealth
from forebay.metrics import Metrics
from forebay.worker import Worker

__all__ = ["create_worker_app"]

READINESS_TIMEOUT_S = 2.0
"""How long ``/readyz`` and ``/metrics`` wait for the backend (as ``forebay serve``'s default)."""


def worker_health(worker: Worker, started: float) -> WorkerHealth:
    """How fresh ``worker``'s heartbeat is (``started``: ``time.monotonic()`` when it started,
    the age until its first beat)."""
    lease_s = min((q.lease_s for q in worker.queues.values()), default=30.0)
    beat = worker.last_heartbeat
    age = time.monotonic() - (beat if beat is not None else started)
    # Leases are renewed every lease_s / 3: after a whole lease_s without a renewal, its
    # running jobs are about to be handed to other workers.
    return WorkerHealth(
        running=True,
        fresh=age <= lease_s,
        last_heartbeat_age_s=age,
        stale_after_s=lease_s,
        queues=list(worker.queues),
        restarts=0,
    )


def create_worker_app(
    app: Forebay,
    worker: Worker,
    metrics: Metrics,
    *,
    readiness_timeout_s: float = READINESS_TIMEOUT_S,
) -> Starlette:
    """The ASGI app a worker process serves: ``/metrics``, ``/healthz`` and ``/readyz``.

    ``metrics`` is fed by a :class:`~forebay.metrics.PrometheusObserver` among ``app``'s
    observers (the caller puts it there before making ``worker``)."""
    started = time.monotonic()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        backend: dict[str, object] = {"ok": True}
        try:
            async with asyncio.timeout(readiness_timeout_s):
                await (await app.open()).ping()
        except (ForebayError, TimeoutError) as exc:
            backend = {"ok": False, "error": str(exc) or type(exc).__name__}
        health = worker_health(worker, started)
        ready = bool(backend["ok"]) and health.fresh
        body = {
            "ready": ready,
            "backend": backend,
            "worker_id": worker.worker_id,
            "workers": health.to_dict(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def exposition(_: Request) -> Response:
        await metrics.read_store(app, timeout_s=readiness_timeout_s)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", exposition, methods=["GET"]),
        ]
    )
