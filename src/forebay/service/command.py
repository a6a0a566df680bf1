"""``forebay serve MODULE:ATTR``: HTTP intake, the app's workers and ``/metrics`` in one process.

Settings come from the flags, else ``FOREBAY_*`` variables (:class:`ServiceSettings` reads them
in one place). uvicorn owns SIGTERM/SIGINT: it stops accepting connections, lets requests in
flight finish, then the app's lifespan stops the workers gracefully (running jobs get
``--shutdown-grace-s``, the rest are released) and the command exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer

from forebay.app import Forebay
from forebay.cli.logs import LogLevel
from forebay.cli.logs import configure_logging as configure_text_logging
from forebay.cli.options import UrlOption
from forebay.cli.output import EXIT_USAGE, fail
from forebay.cli.session import make_app
from forebay.errors import ConfigError
from forebay.service.logs import JsonFormatter
from forebay.service.settings import ServiceSettings

__all__ = ["serve"]


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
            help="Run the app's workers in this process (default), or serve intake only "
            "(env FOREBAY_WORKERS).",
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
    bench_endpoint: Annotated[bool | None, typer.Option("--bench-endpoint", hidden=True)] = None,
) -> None:
    """Serve the HTTP intake API (and the app's workers) until SIGTERM or Ctrl-C.

    Jobs posted to [bold]POST /v1/queues/QUEUE/jobs[/] or a declared source are answered
    after they are stored. The dashboard at /, OpenAPI docs at /docs, Prometheus metrics at
    /metrics.
    """
    try:
        settings = ServiceSettings.from_env(
            host=host,
            port=port,
            url=url,
            workers=workers,
            api_tokens=api_tokens,
            max_body_bytes=max_body_bytes,
            shutdown_grace_s=shutdown_grace_s,
            log_format=log_format,
            log_level=None if log_level is None else log_level.value,
            access_log=access_log,
            bench_endpoint=bench_endpoint,
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    app = make_app(settings.url, app_ref)
    try:
        app.backend  # noqa: B018  # a bad URL or a missing extra fails here, in one line
    except ConfigError as exc:
        fail(str(exc))
    _configure_logging(settings)
    if not _run(app, settings):
        sys.exit(1)


def _configure_logging(settings: ServiceSettings) -> None:
    configure_text_logging(LogLevel(settings.log_level.lower()))
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_color_message)
        if settings.log_format == "json":
            handler.setFormatter(JsonFormatter())


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn attaches a copy of its message with terminal colours; one message is enough."""
    record.__dict__.pop("color_message", None)
    return True


def _run(app: Forebay, settings: ServiceSettings) -> bool:
    """Run uvicorn until it stops; False if it could not start."""
    import uvicorn  # here, not at the top: the other commands start without the web stack

    from forebay.service.api import create_app

    config = uvicorn.Config(
        create_app(app, settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,  # our handlers on the root logger format uvicorn's lines too
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with
    # these handlers in place that ends in a normal return (exit code 0) instead of a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_graceful_shutdown)
    server.run()
    return bool(server.started)


def _after_graceful_shutdown(signum: int, frame: object) -> None:
    """Handles the signal uvicorn re-raises after its graceful shutdown: nothing left to do."""
