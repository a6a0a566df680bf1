"""``forebay serve MODULE:ATTR``: HTTP intake, the app's workers and ``/metrics``.

Settings come from the flags, else ``FOREBAY_*`` variables (:class:`ServiceSettings` reads them
in one place). The handlers run in the service's process by default, or, with
``--worker-processes N``, in N child processes (leasing and settling stay here). uvicorn owns
SIGTERM/SIGINT: it stops accepting connections, lets requests in flight finish, then the app's
lifespan stops the workers gracefully (running jobs get ``--shutdown-grace-s``, the rest are
released; then handler processes exit) and the command exits 0. Slow and idle clients are
bounded by :mod:`forebay.http.connections` (headers, connections) and the routes (bodies).

This is where the service is put together: the settings, the user's app and its backend, the
HTTP app (:func:`service_api`), the workers, logging and the server (:func:`run_server`). The
web stack is imported only when the command runs, so the other commands start without it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from forebay.app import Forebay
from forebay.cli.options import (
    CancelledRetentionOption,
    CompletedRetentionOption,
    DeadRetentionOption,
    UrlOption,
    seconds,
)
from forebay.cli.output import EXIT_USAGE, fail
from forebay.cli.session import Use, make_app
from forebay.errors import ConfigError
from forebay.http.settings import ServiceSettings
from forebay.logs import LogLevel, configure_logging

log = logging.getLogger("forebay.service")

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["listen", "run_server", "serve", "service_api"]


def serve(
    app_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="Your Forebay app, e.g. myapp:app (imported from the current folder first).",
        ),
    ],
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (env FOREBAY_HOST; default 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (env FOREBAY_PORT; default 8000)."),
    ] = None,
    url: UrlOption = None,
    workers: Annotated[
        bool | None,
        typer.Option(
            "--workers/--no-workers",
            show_default=False,
            help="Run the app's workers (default), or serve intake only (env FOREBAY_WORKERS).",
        ),
    ] = None,
    worker_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Run handler calls in N child processes; the HTTP intake and the workers' "
            "leasing stay in this one (env FOREBAY_WORKER_PROCESSES; default 0: handlers in "
            "this process). For CPU-heavy handlers, e.g. N=1 on 2 cores.",
        ),
    ] = None,
    api_tokens: Annotated[
        str | None,
        typer.Option(
            metavar="TOKENS",
            help="API tokens TOKEN[:SCOPE+SCOPE],... Prefer the FOREBAY_API_TOKENS variable: "
            "flags are visible to other users of the machine.",
            show_default=False,
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Largest jobs request body (env FOREBAY_MAX_BODY_BYTES; 1 MiB)."),
    ] = None,
    shutdown_grace_s: Annotated[
        float | None,
        typer.Option(min=0, help="On SIGTERM, how long running jobs get to finish (30)."),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            metavar="text|json", help="Log lines as text or JSON (env FOREBAY_LOG_FORMAT)."
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(case_sensitive=False, help="Least severe log lines to print (info)."),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option("--access-log/--no-access-log", help="Log every request (off by default)."),
    ] = None,
    completed_retention: CompletedRetentionOption = None,
    dead_retention: DeadRetentionOption = None,
    cancelled_retention: CancelledRetentionOption = None,
) -> None:
    """Serve the HTTP intake API (and the app's workers) until SIGTERM or Ctrl-C.

    Jobs posted to **POST /v1/queues/QUEUE/jobs** or a declared source are answered
    after they are stored. The dashboard at /, OpenAPI docs at /docs, Prometheus metrics at
    /metrics.
    """
    try:
        settings = ServiceSettings.from_env(
            host=host,
            port=port,
            url=url,
            workers=workers,
            worker_processes=worker_processes,
            api_tokens=api_tokens,
            max_body_bytes=max_body_bytes,
            shutdown_grace_s=shutdown_grace_s,
            completed_retention=seconds(completed_retention),
            dead_retention=seconds(dead_retention),
            cancelled_retention=seconds(cancelled_retention),
            log_format=log_format,
            log_level=None if log_level is None else log_level.value,
            access_log=access_log,
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    app = make_app(settings.url, app_ref, use=Use.SERVE)
    try:
        app.backend  # noqa: B018  # a bad URL or a missing extra fails here, in one line
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    configure_logging(LogLevel(settings.log_level.lower()), log_format=settings.log_format)
    listening = listen(settings.host, settings.port)  # before any worker starts
    if not run_server(service_api(app, settings, app_ref), settings, listening):
        sys.exit(1)


def listen(host: str, port: int) -> socket.socket:
    """The service's listening socket, bound before anything else starts: a port in use is
    one line and exit 1, and /healthz answers as soon as the app has started, whatever the
    backend does."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"cannot listen on {host}:{port}: the port is already in use; stop what "
                "listens there or choose another with --port (env FOREBAY_PORT)"
            )
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    shown = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d", shown, port)
    return listening


def service_api(app: Forebay, settings: ServiceSettings, app_ref: str) -> FastAPI:
    """The HTTP app ``forebay serve`` runs for ``app`` (imported from ``app_ref``)."""
    from forebay.execution.supervisor import ProcessWorkers
    from forebay.http.api import create_app
    from forebay.http.service import retention

    api = create_app(app, settings, tune_gc=True)
    if settings.workers and settings.worker_processes > 0:
        # The service starts, checks (/readyz) and stops whatever runs its workers; here they
        # are child processes that import the app again from the same reference.
        api.state.service.workers = ProcessWorkers(
            app,
            app_ref,
            processes=settings.worker_processes,
            shutdown_grace_s=settings.shutdown_grace_s,
            retention=retention(settings),
            url=settings.url,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
    return api


def run_server(
    api: FastAPI, settings: ServiceSettings, listening: socket.socket | None = None
) -> bool:
    """Serve ``api`` with uvicorn until it stops; False if it could not start. ``listening``:
    the socket to serve on (see :func:`listen`), else uvicorn binds one after start-up."""
    import uvicorn  # here, not at the top: the other commands start without the web stack

    from forebay.http.connections import connection_limits, protocol_for

    limits = connection_limits(settings, on_closed=api.state.service.metrics.connection_closed)
    config = uvicorn.Config(
        api,
        host=settings.host,
        port=settings.port,
        http=protocol_for(limits),  # bounds slow headers and the connections held
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        lifespan="on",
        log_config=None,  # our handlers on the root logger format uvicorn's lines too
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    server = _server(config, api.state.service.stop_now)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with
    # these handlers in place that ends in a normal return (exit code 0) instead of a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_graceful_shutdown)
    server.run(sockets=None if listening is None else [listening])
    return bool(server.started)


def _server(config: uvicorn.Config, stop_now: Callable[[], None]) -> uvicorn.Server:
    """uvicorn's server, told what a second SIGINT/SIGTERM means: stop now.

    The first signal starts the graceful stop (uvicorn's, then the app's lifespan, where the
    workers get the grace); a second one during it calls ``stop_now`` on the server's loop.
    """
    import uvicorn

    class Server(uvicorn.Server):
        _loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            again = self.should_exit
            super().handle_exit(sig, frame)
            if not again:
                log.info("stopping: finishing running jobs (press Ctrl-C again to stop now)")
            elif self._loop is not None:
                # A signal handler runs between two steps of the loop: hand over, thread-safe.
                self._loop.call_soon_threadsafe(stop_now)

    return Server(config)


def _after_graceful_shutdown(signum: int, frame: object) -> None:
    """Handles the signal uvicorn re-raises after its graceful shutdown: nothing left to do."""
