"""Handler processes: ``forebay serve --worker-processes N`` runs handler calls in N children.

The service's worker leases, heartbeats and settles jobs in the service's own process (one
writer to the job store); each handler call is sent to a child process, which imported the app
again and calls the queue's real handler there. Parent and child talk over a socket pair:
length-prefixed pickles of

* parent → child: ``("call", call_id, queue, job_or_jobs)``, ``("cancel", call_id)``; the
  jobs' payloads travel as their stored JSON text (the service's worker leases them
  undecoded) and are read in the child;
* child → parent: ``("ready",)``, ``("result", call_id, "ok" | "error" | "cancelled", value)``,
  ``("progress", job_id, lease_token, pct, message)`` (``job.progress()`` inside a handler).

Exceptions travel as their class, ``args`` and attributes (rebuilt without calling
``__init__``), so ``Defer``, ``PermanentError`` and the sinks' errors keep their meaning; the
child's traceback rides along as a note. A child ignores SIGINT and SIGTERM (Ctrl-C reaches
the whole process group, service managers signal every process of a service: the service's
process stops the children itself, once their running calls are done) and exits when its
socket closes — when the service stops it, or dies.

Run as ``python -m forebay.service.handler_process FD MODULE:ATTR URL LEVEL FORMAT`` by
:class:`HandlerPool`; not meant to be started by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from forebay.cancel import cancel_and_wait
from forebay.errors import ConfigError, TransientError
from forebay.isolation import HandlerProcessDied
from forebay.job import Job, Lease, PayloadText, progress_reporter
from forebay.queue_config import QueueConfig

__all__ = ["HandlerPool"]

log = logging.getLogger("forebay.service")

_HEADER: Final = struct.Struct("!Q")
_RESTART_MIN_S: Final = 0.5
_RESTART_MAX_S: Final = 30.0
_SUPERVISE_EVERY_S: Final = 0.25
_EXIT_WAIT_S: Final = 10.0
_NICE: Final = 10

ProgressSink = Callable[[Lease, float, "str | None"], Coroutine[Any, Any, None]]


# -- wire format -------------------------------------------------------------------------------
def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _receive(reader: asyncio.StreamReader) -> Any:
    """The next message, or None when the other side closed the socket."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        return pickle.loads(await reader.readexactly(size))  # noqa: S301  # our own child
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def dump_error(exc: BaseException) -> tuple[bytes | None, str]:
    """An exception as (pickled class, args and attributes; or None) and its text."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if k != "__notes__"}
    try:
        return pickle.dumps((type(exc), exc.args, state)), text
    except Exception:  # an attribute that does not pickle: the class and message still help
        try:
            return pickle.dumps((type(exc), exc.args, {})), text
        except Exception:
            return None, text


def load_error(dumped: tuple[bytes | None, str]) -> BaseException:
    """The exception :func:`dump_error` described (a RuntimeError if it cannot be rebuilt)."""
    data, text = dumped
    exc: BaseException
    try:
        if data is None:
            raise ValueError("not pickled")
        cls, args, state = pickle.loads(data)  # noqa: S301  # our own child
        exc = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(state)
    except Exception:
        last = text.splitlines()[-1] if text else "unknown error"
        exc = RuntimeError(f"in a handler process: {last}")
    exc.add_note(f"raised in a handler process:\n{text}")
    return exc


# -- the parent's side -------------------------------------------------------------------------
@dataclass(eq=False)
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    ready: bool = False
    dead: bool = False
    died_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    calls: dict[int, asyncio.Future[tuple[str, Any]]] = field(default_factory=dict)


class HandlerPool:
    """N handler processes and the proxies that send them the worker's handler calls."""

    def __init__(
        self,
        app_ref: str,
        *,
        processes: int,
        url: str | None = None,
        log_level: str = "info",
        log_format: str = "text",
        progress: ProgressSink | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("a handler pool needs at least one process")
        self.app_ref = app_ref
        self.processes = processes
        self.url = url
        self.log_level = log_level
        self.log_format = log_format
        self.progress = progress
        self.restarts = 0
        self._children: list[_Child | None] = []
        self._delays: list[float] = []
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def alive(self) -> bool:
        """Every child is running (a child being started again counts as not alive)."""
        return bool(self._children) and all(
            c is not None and not c.dead and c.process.poll() is None for c in self._children
        )

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c is not None and not c.dead]

    def start(self) -> None:
        """Start the children (from a running event loop); they get ready in the background."""
        if self._supervisor is not None:
            return
        self._closing = False
        self._changed = asyncio.Event()
        self._children = [None] * self.processes
        self._delays = [_RESTART_MIN_S] * self.processes
        for index in range(self.processes):
            self._children[index] = self._spawn(index)
        self._supervisor = asyncio.create_task(self._supervise(), name="forebay-handler-pool")

    async def stop(self) -> None:
        """Close every child's socket (a child then exits), wait for them, kill stragglers."""
        if self._supervisor is None:
            return
        self._closing = True
        await cancel_and_wait([self._supervisor])
        self._supervisor = None
        children = [c for c in self._children if c is not None]
        for child in children:
            if child.writer is not None:
                child.writer.close()
        deadline = time.monotonic() + _EXIT_WAIT_S
        for child in children:
            try:
                await asyncio.to_thread(
                    child.process.wait, timeout=max(0.1, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                log.error("handler process %s did not exit; killing it", child.process.pid)
                child.process.kill()
                await asyncio.to_thread(child.process.wait)
            if child.reader_task is not None:
                await cancel_and_wait([child.reader_task])
            self._fail_calls(child)
        self._children = []

    def handler_for(self, config: QueueConfig) -> Callable[[Any], Awaitable[Any]]:
        """An async handler for ``config``'s queue that runs the real one in a child."""
        queue = config.name

        async def handle(job_or_jobs: Job | list[Job]) -> Any:
            return await self._call(queue, job_or_jobs)

        handle.__name__ = f"in_process_pool_{queue}"
        return handle

    # -- calls ---------------------------------------------------------------------------------
    async def _call(self, queue: str, argument: Job | list[Job]) -> Any:
        child = await self._pick()
        writer = child.writer
        assert writer is not None  # a child is ready only once connected
        call_id = next(self._ids)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        child.calls[call_id] = future
        try:
            writer.write(_frame(("call", call_id, queue, argument)))
            await writer.drain()
            status, value = await future
        except asyncio.CancelledError:
            # A timeout, a lost lease or shutdown: the child stops the call too.
            if not child.dead and not writer.is_closing():
                writer.write(_frame(("cancel", call_id)))
            raise
        except ConnectionError as exc:
            raise HandlerProcessDied(f"handler process {child.process.pid} is gone: {exc}") from exc
        finally:
            child.calls.pop(call_id, None)
        if status == "error":
            raise load_error(value)
        if status == "died":
            raise HandlerProcessDied(f"handler process {child.process.pid} died during the call")
        if status != "ok":
            raise TransientError(f"handler call {status} in process {child.process.pid}")
        if isinstance(value, dict):
            return {k: None if v is None else load_error(v) for k, v in value.items()}
        return value

    async def _pick(self) -> _Child:
        """The ready child with the fewest calls in flight (waits while none is ready)."""
        assert self._changed is not None
        while True:
            ready = [
                c
                for c in self._children
                if c is not None and c.ready and not c.dead and c.writer is not None
            ]
            if ready:
                return min(ready, key=lambda c: len(c.calls))
            if self._closing:
                raise TransientError("the handler processes are stopping")
            self._changed.clear()
            await self._changed.wait()

    # -- children ------------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Child:
        ours, theirs = socket.socketpair()
        argv = [
            sys.executable,
            "-m",
            "forebay.service.handler_process",
            str(theirs.fileno()),
            self.app_ref,
            self.url or "",
            self.log_level,
            self.log_format,
        ]
        try:
            process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        child = _Child(index, process)
        log.info("handler process %d started (pid %s)", index, process.pid)

        async def run() -> None:
            reader, child.writer = await asyncio.open_unix_connection(sock=ours, limit=2**32)
            await self._read(child, reader)

        child.reader_task = asyncio.create_task(run(), name=f"forebay-handler-process-{index}")
        return child

    async def _read(self, child: _Child, reader: asyncio.StreamReader) -> None:
        assert self._changed is not None
        while True:
            message = await _receive(reader)
            if message is None:
                break
            kind = message[0]
            if kind == "result":
                _, call_id, status, value = message
                future = child.calls.get(call_id)
                if future is not None and not future.done():
                    future.set_result((status, value))
            elif kind == "progress":
                _, job_id, token, pct, text = message
                if self.progress is not None:
                    task = asyncio.create_task(self.progress(Lease(job_id, token), pct, text))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            elif kind == "ready":
                child.ready = True
                self._changed.set()
        child.dead = True
        child.died_at = time.monotonic()
        self._changed.set()
        if not self._closing:
            code = await asyncio.to_thread(_exit_code, child.process)
            log.error(
                "handler process %d (pid %s) exited (code %s); %d call(s) failed, "
                "starting a new one in %.1fs",
                child.index,
                child.process.pid,
                code,
                len(child.calls),
                self._delays[child.index],
            )
        self._fail_calls(child)

    def _fail_calls(self, child: _Child) -> None:
        for future in child.calls.values():
            if not future.done():
                future.set_result(("died", None))
        child.calls.clear()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(_SUPERVISE_EVERY_S)
            now = time.monotonic()
            for index, child in enumerate(self._children):
                if child is None:
                    continue
                if not child.dead:
                    if now - child.started_at > _RESTART_MAX_S:
                        self._delays[index] = _RESTART_MIN_S  # it ran a while: a new failure
                    continue
                if now - child.died_at < self._delays[index]:
                    continue
                if child.writer is not None:
                    child.writer.close()
                self._children[index] = self._spawn(index)
                self.restarts += 1
                self._delays[index] = min(_RESTART_MAX_S, self._delays[index] * 2)


def _exit_code(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


# -- the child's side --------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    fd, app_ref, url, level, log_format = argv
    # Ctrl-C reaches the whole process group, and service managers (systemd's default) send
    # SIGTERM to every process of the service: the service's process stops us itself, after
    # its worker let the running calls finish, by closing our socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from forebay.app_reference import import_app
    from forebay.logs import LogLevel, configure_logging
    from forebay.service.tuning import tune_gc

    configure_logging(LogLevel(level.lower()), log_format=log_format)
    try:
        app = import_app(app_ref)
        if url:
            app.use_url(url)  # the URL the service's own app uses
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    tune_gc()  # as the service's process does (see forebay.service.tuning)
    with contextlib.suppress(OSError):  # the webhook must answer first: see HandlerPool
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
    child = _ChildCalls(queues, writer)
    child.send(("ready",))
    while True:
        message = await _receive(reader)
        if message is None:
            break  # the service closed the socket, or is gone
        if message[0] == "call":
            _, call_id, queue, argument = message
            child.tasks[call_id] = asyncio.create_task(child.run(call_id, queue, argument))
        elif message[0] == "cancel":
            task = child.tasks.get(message[1])
            if task is not None:
                task.cancel()
    await cancel_and_wait(child.tasks.values())
    writer.close()
    await close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # threads a handler left behind must not keep the process alive


class _ChildCalls:
    """The handler calls a child runs, each as a task, answered over the socket."""

    def __init__(self, queues: dict[str, QueueConfig], writer: asyncio.StreamWriter) -> None:
        self.queues = queues
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, message: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(_frame(message))

    async def report(self, job: Job, pct: float, message: str | None) -> None:
        self.send(("progress", job.id, job.lease_token, pct, message))

    async def run(self, call_id: int, queue: str, argument: Job | list[Job]) -> None:
        config = self.queues[queue]
        assert config.handler is not None
        progress_reporter.set(self.report)
        value: Any
        try:
            for job in argument if isinstance(argument, list) else [argument]:
                if isinstance(job.payload, PayloadText):  # this process's own copy: read it
                    job.payload = job.payload.parse()
            if config.is_async:
                value = await config.handler(argument)  # type: ignore[arg-type,misc]
            else:
                value = await asyncio.to_thread(config.handler, argument)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            self.send(("result", call_id, "cancelled", None))
            return
        except Exception as exc:
            self.send(("result", call_id, "error", dump_error(exc)))
            return
        finally:
            self.tasks.pop(call_id, None)
        if isinstance(argument, list):
            outcomes = value if isinstance(value, dict) else {}
            value = {k: None if v is None else dump_error(v) for k, v in outcomes.items()}
        else:
            value = None
        self.send(("result", call_id, "ok", value))


if __name__ == "__main__":
    main(sys.argv[1:])
