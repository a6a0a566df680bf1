"""A handler process: runs the handler calls a :class:`~forebay.execution.pool.HandlerPool`
sends it, each with the one handler-calling function the in-process worker uses
(:func:`forebay.worker.calls.call_handler`).

Run as ``python -m forebay.execution.child FD MODULE:ATTR URL LEVEL FORMAT`` by the pool; not
meant to be started by hand. It imports the app again (:mod:`forebay.app_reference`), logs as
its parent does (:mod:`forebay.logs`), lowers its priority (the parent's intake answers
first), then answers calls over the socket ``FD`` (:mod:`forebay.execution.wire`) until the
socket closes — when the pool stops it, or the parent dies. It ignores SIGINT and SIGTERM: the
parent ends it, after its worker let the running calls finish.

It imports neither the CLI nor the HTTP service: only the app and what the app imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Final, cast

from forebay.app_reference import import_app
from forebay.cancel import cancel_and_wait
from forebay.errors import ConfigError, ForebayError
from forebay.execution.tuning import tune_gc
from forebay.execution.wire import DumpedError, dump_error, frame, receive
from forebay.job import Job, job_enqueuer
from forebay.logs import LogLevel, configure_logging
from forebay.queue_config import QueueConfig
from forebay.worker.calls import call_handler

__all__ = ["main"]

_NICE: Final = 10


def main(argv: list[str]) -> None:
    """The process's entry point: ``FD MODULE:ATTR URL LEVEL FORMAT``."""
    fd, app_ref, url, level, log_format = argv
    # Ctrl-C reaches the whole process group, and service managers (systemd's default) send
    # SIGTERM to every process of the service: the parent stops us itself, after its worker
    # let the running calls finish, by closing our socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(LogLevel(level.lower()), log_format=log_format)
    try:
        app = import_app(app_ref)
    except ForebayError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    if url:
        with contextlib.suppress(ConfigError):  # an app with its own backend object keeps it
            app.use_url(url)  # the URL the parent's app uses
    tune_gc()  # as the parent does (see forebay.execution.tuning)
    job_enqueuer.set(app.enqueue_many)  # job.enqueue() in a handler stores through the app
    with contextlib.suppress(OSError):  # the parent's intake must answer first
        os.nice(_NICE)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(_serve(app.queues, int(fd), app.close))
    else:
        uvloop.run(_serve(app.queues, int(fd), app.close))


async def _serve(
    queues: dict[str, QueueConfig], fd: int, close: Callable[[], Awaitable[None]]
) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**32)
    calls = _Calls(queues, writer)
    calls.send(("ready",))
    while (message := await receive(reader)) is not None:
        if message[0] == "call":
            _, call_id, queue, jobs = message
            calls.start(cast(int, call_id), cast(str, queue), cast("list[Job]", jobs))
        elif message[0] == "cancel":
            calls.cancel(cast(int, message[1]))
    # The parent closed the socket, or is gone.
    await cancel_and_wait(calls.tasks.values())
    writer.close()
    await close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # threads a handler left behind must not keep the process alive


class _Calls:
    """The handler calls this process runs, each as a task, answered over the socket."""

    def __init__(self, queues: dict[str, QueueConfig], writer: asyncio.StreamWriter) -> None:
        self.queues = queues
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, message: tuple[object, ...]) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(message))

    def start(self, call_id: int, queue: str, jobs: list[Job]) -> None:
        self.tasks[call_id] = asyncio.create_task(self._run(call_id, queue, jobs))

    def cancel(self, call_id: int) -> None:
        task = self.tasks.get(call_id)
        if task is not None:
            task.cancel()

    async def _report(self, job: Job, pct: float, message: str | None) -> None:
        self.send(("progress", job.id, job.lease_token, pct, message))

    async def _run(self, call_id: int, queue: str, jobs: list[Job]) -> None:
        try:
            errors, result = await call_handler(
                self.queues[queue], jobs, progress=self._report, wait_for_thread=True
            )
        except asyncio.CancelledError:
            self.send(("result", call_id, "cancelled", None))
            return
        except Exception as exc:
            self.send(("result", call_id, "error", dump_error(exc)))
            return
        finally:
            self.tasks.pop(call_id, None)
        dumped: dict[int, DumpedError | None] = {
            k: None if v is None else dump_error(v) for k, v in errors.items()
        }
        self.send(("result", call_id, "ok", (dumped, result)))


if __name__ == "__main__":
    main(sys.argv[1:])
