"""``forebay worker module:app``: run a worker process for an app's queues.

The worker installs its own SIGTERM/SIGINT handlers: it stops leasing, gives running jobs
``--shutdown-grace-s`` to finish, releases the rest back to queued, and the command exits 0.

With ``--processes N`` the handler calls run in N child processes
(:class:`~forebay.execution.pool.HandlerPool`), for handlers that need more than one core;
leasing, heartbeats and settling stay in this process. The children ignore SIGTERM/SIGINT: this
process ends them once its worker has shut down.

With ``--metrics-port N`` the worker also answers HTTP on that port (``--metrics-host``, default
every interface): ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes
(:mod:`forebay.http.worker_app`). uvicorn serves them in the worker's own event loop, leaves the
signals to the worker, and stops once the worker has stopped. The port is bound before anything
starts, so a port in use is one line and exit 1. The web stack is imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from forebay.app import Forebay
from forebay.cli.options import (
    CancelledRetentionOption,
    CompletedRetentionOption,
    DeadRetentionOption,
    JsonOption,
    UrlOption,
    seconds,
)
from forebay.cli.output import EXIT_USAGE, fail, print_json, stderr, stdout
from forebay.cli.session import Use, make_app, run
from forebay.errors import ConfigError
from forebay.execution.pool import HandlerPool
from forebay.execution.tuning import tune_gc
from forebay.logs import LogLevel, configure_logging
from forebay.metrics import Metrics, PrometheusObserver
from forebay.worker import Worker, WorkerSettings

if TYPE_CHECKING:
    import uvicorn

__all__ = ["worker"]

log = logging.getLogger("forebay.worker")

_REFRESH_S = 0.1
_METRICS_SHUTDOWN_S = 2
"""How long the metrics server waits for a scrape in flight once the worker has stopped."""


def worker(
    app_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="Your Forebay app, e.g. myapp:app (imported from the current folder first).",
        ),
    ],
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="QUEUE",
            help="Only this queue (repeat for several). Default: every queue with a handler.",
        ),
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Process until no job is due, then exit.")
    ] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Handler calls at once per queue, instead of each queue's own."),
    ] = None,
    shutdown_grace_s: Annotated[
        float | None,
        typer.Option(
            min=0,
            show_default=False,
            help="On SIGTERM/SIGINT, how long running jobs get to finish "
            "(env FOREBAY_SHUTDOWN_GRACE_S; default 30).",
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Run handler calls in N child processes (0: in this one); leasing and "
            "recording outcomes stay here. For CPU-heavy handlers.",
        ),
    ] = 0,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="Least severe log lines to print.")
    ] = LogLevel.INFO,
    log_format: Annotated[
        str,
        typer.Option(
            metavar="text|json",
            envvar="FOREBAY_LOG_FORMAT",
            show_envvar=False,
            help="Log lines as text or JSON (env FOREBAY_LOG_FORMAT).",
        ),
    ] = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            metavar="PORT",
            envvar="FOREBAY_METRICS_PORT",
            show_envvar=False,  # the help says it, as for the other options
            show_default=False,
            help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
            "(env FOREBAY_METRICS_PORT; default: none).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            metavar="HOST",
            envvar="FOREBAY_METRICS_HOST",
            show_envvar=False,
            help="The address --metrics-port listens on (env FOREBAY_METRICS_HOST).",
        ),
    ] = "0.0.0.0",  # noqa: S104  # scraped from other hosts: every interface by default
    completed_retention: CompletedRetentionOption = None,
    dead_retention: DeadRetentionOption = None,
    cancelled_retention: CancelledRetentionOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a worker: lease jobs, run their handlers, record outcomes.

    Logs one line per event on stderr. With **--burst** it exits once no job is due
    (showing a progress bar on a terminal); otherwise it runs until SIGTERM or Ctrl-C, then
    shuts down gracefully and exits 0. With **--processes N** the handlers run in N child
    processes. With **--metrics-port N** it also serves /metrics (Prometheus), /healthz and
    /readyz on that port. Every setting may also come from a FOREBAY_* environment variable (see
    docs/settings.md); a flag wins over its variable.
    """
    try:
        settings = WorkerSettings.from_env(
            given={
                "burst": burst or None,
                "shutdown_grace_s": shutdown_grace_s,
                "completed_retention": seconds(completed_retention),
                "dead_retention": seconds(dead_retention),
                "cancelled_retention": seconds(cancelled_retention),
            }
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    app = make_app(url, app_ref, use=Use.SERVE)
    if concurrency is not None:
        for name, config in app.queues.items():
            app.queues[name] = replace(config, concurrency=concurrency)
    burst = settings.burst
    show_progress = burst and stderr().is_terminal
    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, not {log_format!r}", EXIT_USAGE)
    configure_logging(log_level, console=stderr() if show_progress else None, log_format=log_format)
    listening = None if metrics_port is None else _listen(metrics_host, metrics_port)
    pool = None
    if processes:
        pool = HandlerPool(app_ref, processes=processes, url=url, log_level=log_level.value)
    tune_gc()  # the app is imported and built: this process is a worker from here on
    done = run(_work(app, queues, settings, pool, show_progress=show_progress, metrics=listening))
    if as_json:
        print_json(
            {"worker_id": done.worker_id, "queues": list(done.queues), "processed": done.processed}
        )
    elif burst:
        stdout().print(f"processed {done.processed} job{'' if done.processed == 1 else 's'}")


async def _work(
    app: Forebay,
    queues: Sequence[str] | None,
    settings: WorkerSettings,
    pool: HandlerPool | None,
    *,
    show_progress: bool,
    metrics: socket.socket | None = None,
) -> Worker:
    measured = Metrics() if metrics is not None else None
    if measured is not None:  # before the worker is made: it copies the app's observers
        app.observers.append(PrometheusObserver(measured))
    # Either refuses unknown queues before anything is opened.
    running = app.worker(queues, settings) if pool is None else pool.worker(app, queues, settings)
    async with app:
        if pool is not None:
            pool.start()
        try:
            async with _serving_metrics(app, running, measured, metrics):
                if show_progress:
                    await _run_with_progress(app, running)
                else:
                    await running.run()
        finally:
            if pool is not None:  # after the worker's shutdown: no call is running any more
                await pool.stop()
    return running


def _listen(host: str, port: int) -> socket.socket:
    """The metrics socket, bound before the worker starts: a port in use is one line, exit 1."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"cannot serve metrics on {host}:{port}: the port is already in use; stop what "
                "listens there or choose another with --metrics-port (env FOREBAY_METRICS_PORT)"
            )
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")


@contextlib.asynccontextmanager
async def _serving_metrics(
    app: Forebay, running: Worker, metrics: Metrics | None, listening: socket.socket | None
) -> AsyncIterator[None]:
    """Serve the worker's metrics and probes on ``listening`` while the body runs."""
    if metrics is None or listening is None:
        yield
        return
    import uvicorn  # here, not at the top: a worker without --metrics-port loads no web stack

    from forebay.http.worker_app import create_worker_app

    config = uvicorn.Config(
        create_worker_app(app, running, metrics),
        lifespan="off",
        ws="none",
        log_config=None,  # our handlers on the root logger format uvicorn's lines too
        access_log=False,  # a scrape every few seconds is no news
        server_header=False,
        timeout_graceful_shutdown=_METRICS_SHUTDOWN_S,
    )
    server = _server(config)
    serving = asyncio.create_task(server.serve([listening]), name="forebay-metrics-server")
    host, port = listening.getsockname()[:2]
    log.info("serving metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
    serving.add_done_callback(_report_metrics_server)
    try:
        yield
    finally:
        server.should_exit = True
        # The server's own failure was logged when it happened: it never turns the worker's
        # clean stop into a failure, nor hides the worker's own error.
        await asyncio.gather(serving, return_exceptions=True)


def _report_metrics_server(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the metrics server stopped: %s; the worker goes on without /metrics",
            task.exception(),
        )


def _server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, leaving SIGTERM/SIGINT to the worker (which stops it when done)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


async def _run_with_progress(app: Forebay, running: Worker) -> None:
    """Run a burst worker under a progress bar of the jobs it has processed."""
    counts = await app.counts()
    due = sum(c.queued - c.scheduled for c in counts if c.queue in running.queues)
    columns = (
        SpinnerColumn(),
        TextColumn("processed"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr(), redirect_stderr=True) as progress:
        task = progress.add_task("burst", total=due or None)
        work = asyncio.create_task(running.run(), name="forebay-cli-worker")
        while not work.done():
            # A display refresh, not a synchronisation: the worker runs on regardless.
            await asyncio.wait([work], timeout=_REFRESH_S)
            progress.update(
                task, completed=running.processed, total=max(due, running.processed) or None
            )
        await work
