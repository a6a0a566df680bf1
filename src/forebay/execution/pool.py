"""The handler pool: N child processes that run a worker's handler calls, and their supervision.

A worker with a pool (``forebay worker --processes N``, ``forebay serve --worker-processes N``)
leases, heartbeats and settles jobs in its own process (one writer to the job store); each
handler call is sent to a child process (:mod:`forebay.execution.child`), which imported the
app again and calls the queue's real handler there. Parent and child talk over a socket pair
(:mod:`forebay.execution.wire`). A call goes to the ready child with the fewest calls in
flight. A child that dies fails the calls it was running with
:class:`~forebay.worker.isolation.HandlerProcessDied` (not an error of the jobs: they come back
as a crash once their leases expire) and is started again after a capped backoff
(``forebay-handler-pool``, the supervisor loop).

A queue declared ``in_process`` (a command queue, :mod:`forebay.execution.command`) is not sent
to the children: its handler only waits on a program, so it runs in the worker's event loop.

A cancelled job (an operator's cancel, learnt by the worker's heartbeat) stops in its child
too: an ``async def`` handler's call is cancelled there; a plain ``def`` handler runs in a
thread nothing can interrupt, so its child is killed (SIGKILL) — and the other calls that child
was running end as if it had crashed: their jobs run again once their leases expire.

A child ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group, and service managers
signal every process of a service): the parent stops the children itself, once the worker let
their running calls finish, by closing their sockets; :meth:`HandlerPool.stop` waits for them
and kills a straggler.

Concurrency hazards, and why they are safe: the pool runs on the worker's event loop; a child's
state changes only in its reader task or the supervisor, between awaits. A call whose child
dies while it waits is answered by :meth:`HandlerPool._fail_calls`, so no caller waits forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, cast

from forebay.app import Forebay
from forebay.backends.base import Backend
from forebay.errors import ConfigError, TransientError
from forebay.execution.wire import DumpedError, frame, load_error, receive
from forebay.job import Job, Lease
from forebay.lifecycle import BackgroundTask
from forebay.queue_config import QueueConfig
from forebay.worker import Worker, WorkerSettings
from forebay.worker.calls import BatchErrors, ResultText
from forebay.worker.isolation import HandlerProcessDied
from forebay.worker.lanes import CANCEL_REQUESTED
from forebay.worker.outcome_logger import log_progress

__all__ = ["HandlerPool"]

log = logging.getLogger("forebay.execution")

_RESTART_MIN_S: Final = 0.5
_RESTART_MAX_S: Final = 30.0
_SUPERVISE_EVERY_S: Final = 0.25
_EXIT_WAIT_S: Final = 10.0
_CANCEL_GRACE_S: Final = 2.0
"""How long a cancelled call (a timeout, a lost lease, shutdown) may take to stop in its child
before the child is killed: a plain function's thread cannot be stopped otherwise."""


@dataclass(eq=False)
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter | None = None
    reader: BackgroundTask | None = None
    ready: bool = False
    dead: bool = False
    died_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    calls: dict[int, asyncio.Future[tuple[str, object]]] = field(default_factory=dict)


class HandlerPool:
    """N handler processes and the proxies that send them a worker's handler calls.

    ``app_ref``: the app as ``MODULE:ATTR``, imported again by every child (same folder and
    environment); ``url``: the backend URL its app uses there (None: the app's own). Build the
    worker that sends it calls with :meth:`worker`.
    """

    def __init__(
        self,
        app_ref: str,
        *,
        processes: int,
        url: str | None = None,
        log_level: str = "info",
        log_format: str = "text",
    ) -> None:
        if processes < 1:
            raise ConfigError("a handler pool needs at least one process")
        self.app_ref = app_ref
        self.processes = processes
        self.url = url
        self.log_level = log_level
        self.log_format = log_format
        self._backend: Backend | None = None  # where the children's job.progress() goes
        self.restarts = 0
        self._children: list[_Child | None] = []
        self._delays: list[float] = []
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None
        self._supervisor = BackgroundTask("forebay-handler-pool", self._supervise)
        self._started = False
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        """Every child is running (a child being started again counts as not alive)."""
        return bool(self._children) and all(
            c is not None and not c.dead and c.process.poll() is None for c in self._children
        )

    def start(self) -> None:
        """Start the children (from a running event loop); they get ready in the background.
        Idempotent."""
        if self._started:
            return
        self._started = True
        self._closing = False
        self._changed = asyncio.Event()
        self._children = [None] * self.processes
        self._delays = [_RESTART_MIN_S] * self.processes
        for index in range(self.processes):
            self._children[index] = self._spawn(index)
        self._supervisor.start()

    async def stop(self) -> None:
        """Close every child's socket (a child then exits), wait for them, kill stragglers.
        Idempotent."""
        if not self._started:
            return
        self._started = False
        self._closing = True
        await self._supervisor.stop()
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
            if child.reader is not None:
                await child.reader.stop()
            self._fail_calls(child)
        self._children = []

    def handler_for(self, config: QueueConfig) -> Callable[[Job | list[Job]], Awaitable[object]]:
        """An async handler for ``config``'s queue that runs the real one in a child."""
        queue = config.name
        interruptible = config.is_async  # the real handler's kind (a thread is not)

        async def handle(job_or_jobs: Job | list[Job]) -> BatchErrors | ResultText | None:
            jobs = job_or_jobs if isinstance(job_or_jobs, list) else [job_or_jobs]
            return await self._call(queue, jobs, interruptible=interruptible)

        handle.__name__ = f"in_process_pool_{queue}"
        return handle

    def worker(
        self, app: Forebay, queues: Iterable[str] | None, settings: WorkerSettings
    ) -> Worker:
        """``app.worker(queues, settings)`` with every handler call sent to this pool; the
        children's ``job.progress()`` is recorded in that worker's store."""
        chosen = app.worker(queues, settings).queues  # refuses unknown queues, as it does
        self._backend = app.backend
        # Payloads cross to the handler processes as their stored text (a leased job's
        # payload is parsed only when first read, which this process never does), read there:
        # a payload model too is applied there, by the child's own declaration of the queue.
        # Queues that run in this process keep their handler here: a command queue (its
        # program is a process already) and the built-in ones (webhook deliveries: network waits).
        configs = [
            q
            if q.in_process or q.name in app.builtin_queues
            else replace(q, handler=self.handler_for(q), payload_model=None)
            for q in chosen.values()
        ]
        return Worker(
            app.backend,
            configs,
            settings,
            observers=app.observers,
            schedules=list(app.schedules.values()),
            enqueue=app.enqueue_many,
            tracing=app.tracing,
        )

    # -- calls ---------------------------------------------------------------------------------
    async def _call(
        self, queue: str, jobs: Sequence[Job], *, interruptible: bool
    ) -> BatchErrors | ResultText | None:
        child = await self._pick()
        writer = child.writer
        assert writer is not None  # a child is ready only once connected
        call_id = next(self._ids)
        future: asyncio.Future[tuple[str, object]] = asyncio.get_running_loop().create_future()
        child.calls[call_id] = future
        try:
            writer.write(frame(("call", call_id, queue, list(jobs))))
            await writer.drain()
            # Shielded: a cancellation of this call must leave its answer to come (_stopped).
            status, value = await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            # A timeout, a lost lease, a cancelled job or shutdown: the child stops the call too,
            # and answers once it did (a plain function: once its thread returned). The call
            # ends only then, so the job never runs again while this run still goes on. A job
            # an operator cancelled is not waited for: a thread's process is killed at once.
            if exc.args == (CANCEL_REQUESTED,) and not interruptible and not child.dead:
                log.warning(
                    "job %s was cancelled while a thread of handler process %s ran it; "
                    "killing that process",
                    ", ".join(str(job.id) for job in jobs),
                    child.process.pid,
                )
                child.process.kill()
            elif not child.dead and not writer.is_closing():
                writer.write(frame(("cancel", call_id)))
            await self._stopped(child, future)
            raise
        except ConnectionError as exc:
            raise HandlerProcessDied(f"handler process {child.process.pid} is gone: {exc}") from exc
        finally:
            child.calls.pop(call_id, None)
        return _answer(child, status, value)

    async def _stopped(self, child: _Child, future: asyncio.Future[tuple[str, object]]) -> None:
        """Wait for a cancelled call's answer; past :data:`_CANCEL_GRACE_S`, kill its child
        (its other calls fail as HandlerProcessDied: their jobs come back as a crash)."""
        deadline = time.monotonic() + _CANCEL_GRACE_S
        while not future.done() and not child.dead:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "handler process %s did not stop a cancelled call within %gs; killing it",
                    child.process.pid,
                    _CANCEL_GRACE_S,
                )
                child.process.kill()
                await asyncio.to_thread(child.process.wait)
                return
            try:
                await asyncio.wait({future}, timeout=left)
            except asyncio.CancelledError:
                continue  # cancelled again (shutdown): the grace still bounds this wait

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
            "forebay.execution.child",
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

        child.reader = BackgroundTask(f"forebay-handler-process-{index}", run)
        child.reader.start()
        return child

    async def _read(self, child: _Child, reader: asyncio.StreamReader) -> None:
        assert self._changed is not None
        while (message := await receive(reader)) is not None:
            self._dispatch(child, message)
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

    def _dispatch(self, child: _Child, message: tuple[object, ...]) -> None:
        assert self._changed is not None
        kind = message[0]
        if kind == "result":
            _, call_id, status, value = message
            future = child.calls.get(cast(int, call_id))
            if future is not None and not future.done():
                future.set_result((cast(str, status), value))
        elif kind == "progress":
            _, job_id, token, pct, text = message
            lease = Lease(cast(int, job_id), cast(str, token))
            self._report(lease, cast(float, pct), cast("str | None", text))
        elif kind == "ready":
            child.ready = True
            self._changed.set()

    def _report(self, lease: Lease, pct: float, message: str | None) -> None:
        """Record a child's ``job.progress()`` in the background (it is advisory)."""
        if self._backend is None:
            return
        log_progress(lease.job_id, pct, message)
        task = asyncio.create_task(self._record_progress(self._backend, lease, pct, message))
        self._background.add(task)  # a reference until it ends: tasks are weakly held
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _record_progress(
        backend: Backend, lease: Lease, pct: float, message: str | None
    ) -> None:
        try:
            await backend.progress(lease, pct=pct, message=message)
        except Exception as exc:  # progress is advisory: the job goes on
            log.warning("could not record the progress of job %s: %s", lease.job_id, exc)

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
                if child is not None:
                    self._restart_if_due(index, child, now)

    def _restart_if_due(self, index: int, child: _Child, now: float) -> None:
        if not child.dead:
            if now - child.started_at > _RESTART_MAX_S:
                self._delays[index] = _RESTART_MIN_S  # it ran a while: a new failure
            return
        if now - child.died_at < self._delays[index]:
            return
        if child.writer is not None:
            child.writer.close()
        self._children[index] = self._spawn(index)
        self.restarts += 1
        self._delays[index] = min(_RESTART_MAX_S, self._delays[index] * 2)


def _answer(child: _Child, status: str, value: object) -> BatchErrors | ResultText | None:
    """What a call's result means in this process: per-job errors (a batch), the result as
    encoded in the child (one job), or the error to raise."""
    if status == "error":
        raise load_error(cast(DumpedError, value))
    if status == "died":
        raise HandlerProcessDied(f"handler process {child.process.pid} died during the call")
    if status != "ok":
        raise TransientError(f"handler call {status} in process {child.process.pid}")
    dumped, result = cast("tuple[dict[int, DumpedError | None], str | None]", value)
    if dumped:
        return {k: None if v is None else load_error(v) for k, v in dumped.items()}
    return None if result is None else ResultText(result)


def _exit_code(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None
