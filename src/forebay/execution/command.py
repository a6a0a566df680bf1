"""The subprocess runner: a queue whose jobs each run a program (``app.command(...)``).

Much ingestion code is a script, not an async function. A command queue runs one process per
job, and this is the whole contract between the job and the program (docs/subprocess.md):

* **stdin**: the job's payload as JSON text, then closed;
* **environment**: the worker's, then the command's ``env``, then ``FOREBAY_JOB_ID``,
  ``FOREBAY_ATTEMPT``, ``FOREBAY_QUEUE`` (and ``FOREBAY_RUN_ID`` when the job is in a run);
* **stdout**: a line ``PROGRESS: <0-100> [message]`` is the job's progress (written to the store
  at most every :data:`PROGRESS_EVERY_S`, the latest value winning); the last line that is JSON
  is the job's result; every other line is output;
* **output**: each stream's lines are logged (logger ``forebay.command``, INFO, with ``job_id``,
  ``queue`` and ``stream``) up to ``max_output_bytes`` per stream and run; past that one marker
  line says so, and the rest is read and dropped;
* **exit status**: 0 completes; one of ``permanent_exit_codes`` is a
  :class:`~forebay.PermanentError` (dead at once); killed by SIGKILL, or status 137 (how a shell
  reports that), is :class:`~forebay.ResourceExhausted` (retried with backoff, counted apart):
  on Linux that is the kernel's out-of-memory killer or a container's memory limit; any other
  status (another signal included) is a :class:`~forebay.TransientError`. The error text names
  the status and holds the last :data:`STDERR_TAIL_CHARS` characters of stderr.

**No orphans.** The program starts in a session, so a process group, of its own
(``start_new_session``): everything it forks is in that group unless it leaves on purpose
(``setsid``). Whenever the run ends — the program exited, its time ran out, the job was cancelled
by an operator, its lease was lost, or the worker is shutting down past its grace — the whole
group gets SIGTERM, then SIGKILL after ``term_grace_s``, and only then does the handler call end.
A timeout is the worker's own (the queue's ``timeout_s``, or the job's): it cancels the call, the
group is ended as above, and the job fails with the worker's ``TimeoutError`` (transient). A
worker that is itself SIGKILLed cannot end the group: the program then runs on until it exits,
or until it writes to its output pipes, whose reader is gone (SIGPIPE).

**Memory stays flat** however much the program prints: the pipes are read as the data arrives,
straight into a protocol (no stream buffers), so the program never blocks on a full pipe; each
line is looked at and dropped. What is kept per stream is bounded: the start of the line being
read (at most ``max(max_output_bytes, max_result_bytes)`` bytes), the last JSON line (at most
``max_result_bytes``), the progress not yet written, and the last bytes of stderr.

**In the worker's event loop, never in a handler process.** A command's handler only starts a
process and reads its pipes; the program is already isolated from the worker by the process
boundary, and its memory and CPU are its own. Sending the call to a handler process
(``forebay worker --processes N``) would add a hop and a second process per call for nothing, and
would leave the group to a process the worker cannot see. So a command queue is declared
``in_process`` (:class:`~forebay.queue_config.QueueConfig`): a handler pool runs every other
queue's calls in its processes, and this one's here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from forebay import jsonio
from forebay.cancel import cancel_and_wait
from forebay.errors import (
    ConfigError,
    PermanentError,
    ResourceExhausted,
    ResultTooLarge,
    TransientError,
)
from forebay.job import Job

__all__ = ["PROGRESS_EVERY_S", "STDERR_TAIL_CHARS", "Command", "command_handler", "exit_error"]

log = logging.getLogger("forebay.command")

PROGRESS_EVERY_S: Final = 0.5
"""Least time between two progress writes of one run (a program may print thousands)."""
STDERR_TAIL_CHARS: Final = 1000
"""How much of the end of stderr a failed run's error text holds."""
_TAIL_BYTES: Final = 4 * STDERR_TAIL_CHARS  # enough bytes for that many characters of UTF-8
_GROUP_POLL_S: Final = 0.02
"""How often a group whose leader exited is checked for members left (they are not this
process's children, so nothing signals their end)."""
_KILLED_WAIT_S: Final = 1.0
"""How long the members of a SIGKILLed group may take to be gone."""
_PIPES_WAIT_S: Final = 2.0
"""How long the output pipes may stay open once the group is gone: a descendant that left
the group (``setsid``) holds them open, and the run does not wait for it longer."""
_SHELL_SIGKILL: Final = 128 + signal.SIGKILL
_PROGRESS_LINE: Final = re.compile(rb"PROGRESS:[ \t]*([0-9]+(?:\.[0-9]*)?)(?:[ \t]+(.*?))?[ \t\r]*")
_MAX_PROGRESS_MESSAGE: Final = 500
_JSON_STARTS: Final = frozenset(b'{["-0123456789tfn')


@dataclass(frozen=True, slots=True)
class Command:
    """The program a command queue runs for each job, and how (see the module docstring)."""

    argv: tuple[str, ...]
    """The program and its arguments (no shell: ``["sh", "-c", "..."]`` for one)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to (or replacing) the worker's environment."""
    cwd: str | None = None
    """The program's working directory (None: the worker's)."""
    permanent_exit_codes: frozenset[int] = frozenset()
    """Exit statuses that mean retrying cannot help: the job is dead at once."""
    max_output_bytes: int = 1_048_576
    """Output logged per stream and run; the rest is dropped (after a marker line)."""
    term_grace_s: float = 5.0
    """Time between SIGTERM and SIGKILL when the process group is ended."""
    max_result_bytes: int = 1_048_576
    """The longest JSON line that can be the job's result (the queue's ``max_result_bytes``)."""

    def __post_init__(self) -> None:
        argv = tuple(self.argv)
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise ConfigError("a command's argv is a non-empty list of strings, the program first")
        env = dict(self.env)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError("a command's env maps variable names to strings")
        codes = frozenset(self.permanent_exit_codes)
        if not all(isinstance(c, int) and 1 <= c <= 255 for c in codes):
            raise ConfigError("permanent_exit_codes are exit statuses from 1 to 255")
        if self.max_output_bytes < 0 or self.max_result_bytes < 1 or not self.term_grace_s >= 0:
            raise ConfigError(
                "max_output_bytes must be 0 or more, max_result_bytes 1 or more, "
                "term_grace_s 0 or more seconds"
            )
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "permanent_exit_codes", codes)

    @property
    def name(self) -> str:
        """The program, as errors and log lines name it."""
        return os.path.basename(self.argv[0])


def command_handler(command: Command) -> Callable[[Job], Awaitable[object]]:
    """The handler of a command queue: runs ``command`` for a job and returns its result."""

    async def run_command(job: Job) -> object:
        return await _Run(command, job).run()

    run_command.__name__ = f"command_{command.name}"
    return run_command


def exit_error(
    command: Command, returncode: int, stderr_tail: str
) -> PermanentError | TransientError | None:
    """What a program's exit means for its job: None (completed) or the error to fail it with.

    ``returncode`` as asyncio reports it (``-N``: killed by signal N). The caller knows the
    group was not ended by the worker (no timeout, no cancel): a SIGKILL came from elsewhere.
    """
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            status = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            status = f"was killed by signal {-returncode}"
    else:
        status = f"exited with status {returncode}"
    stderr = f"; stderr ends with:\n{stderr_tail}" if stderr_tail else "; stderr was empty"
    if returncode in command.permanent_exit_codes:
        return PermanentError(f"{command.name} {status} (a permanent exit code){stderr}")
    if returncode in (-signal.SIGKILL, _SHELL_SIGKILL):
        return ResourceExhausted(
            f"{command.name} {status}, not by forebay: most likely out of memory (the "
            f"kernel's OOM killer or a container's memory limit){stderr}"
        )
    return TransientError(f"{command.name} {status}{stderr}")


class _Run:
    """One run of a command for one job: the process, its pipes, its progress."""

    def __init__(self, command: Command, job: Job) -> None:
        self._command = command
        self._job = job
        self._progress = _ProgressWriter(job)
        line_limit = max(command.max_output_bytes, command.max_result_bytes)
        self._stdout_log = _Output("stdout", job, command.max_output_bytes)
        self._stderr_log = _Output("stderr", job, command.max_output_bytes)
        self._result = _LastJson(command.max_result_bytes)
        self._stdout = _Lines(line_limit, self._stdout_line)
        self._stderr = _Lines(command.max_output_bytes, self._stderr_log.line)
        self._stderr_tail = bytearray()

    async def run(self) -> object:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(self._stdout.feed, self._stderr_data),
                *self._command.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(),
                cwd=self._command.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise PermanentError(f"cannot start {list(self._command.argv)}: {exc}") from exc
        group = transport.get_pid()
        writing = asyncio.create_task(self._progress.run(), name=f"forebay-progress-{self._job.id}")
        try:
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            stdin.write(self._job.payload_text.encode())
            stdin.close()  # once the payload is written: the program reads it to its end
            await protocol.exited.wait()
        except BaseException:  # cancelled: a timeout, an operator's cancel, a lost lease, shutdown
            await _to_the_end(self._stop(transport, protocol, group, writing, cancelled=True))
            raise
        await _to_the_end(self._stop(transport, protocol, group, writing, cancelled=False))
        returncode = transport.get_returncode()
        assert returncode is not None  # it exited
        error = exit_error(self._command, returncode, self._tail())
        if error is not None:
            raise error
        return self._result.value()

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self._command.env}
        env.pop("FOREBAY_RUN_ID", None)
        env.update(
            FOREBAY_JOB_ID=str(self._job.id),
            FOREBAY_ATTEMPT=str(self._job.attempt),
            FOREBAY_QUEUE=self._job.queue,
        )
        if self._job.run_id is not None:
            env["FOREBAY_RUN_ID"] = self._job.run_id
        return env

    async def _stop(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: _Protocol,
        group: int,
        writing: asyncio.Task[None],
        *,
        cancelled: bool,
    ) -> None:
        """End the group (what the program left running, or all of it when cancelled), take in
        the output still in the pipes, and write the last progress of a run that finished."""
        how = await _end_group(group, protocol.exited, self._command.term_grace_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_PIPES_WAIT_S):
                await protocol.closed.wait()
        transport.close()
        self._stdout.close()
        self._stderr.close()
        self._stdout_log.close()
        self._stderr_log.close()
        await cancel_and_wait([writing])
        if cancelled:
            self._log_stopped(group, how)
        else:
            await self._progress.flush()

    def _log_stopped(self, group: int, how: str | None) -> None:
        tail = self._tail()
        log.warning(
            "job %s: stopped %s (it ran out of time, was cancelled, or the worker is stopping): "
            "process group %s ended by %s%s",
            self._job.id,
            self._command.name,
            group,
            how or "its own exit",
            f"; stderr ends with:\n{tail}" if tail else "",
            extra={"job_id": self._job.id, "queue": self._job.queue},
        )

    def _stdout_line(self, head: bytes, length: int) -> None:
        if head.startswith(b"PROGRESS:"):
            progress = _progress_of(head)
            if progress is not None:
                self._progress.update(*progress)
                return
        self._stdout_log.line(head, length)
        self._result.consider(head, length)

    def _stderr_data(self, data: bytes) -> None:
        self._stderr.feed(data)
        self._stderr_tail += data[-_TAIL_BYTES:]
        del self._stderr_tail[:-_TAIL_BYTES]

    def _tail(self) -> str:
        text = self._stderr_tail.decode(errors="replace").rstrip()
        return text[-STDERR_TAIL_CHARS:]


class _Protocol(asyncio.SubprocessProtocol):
    """Hands each chunk a pipe delivers to its stream's reader, as it arrives."""

    def __init__(
        self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> None:
        self._readers = {1: on_stdout, 2: on_stderr}
        self.exited = asyncio.Event()
        """The program (the group's leader) exited and was reaped."""
        self.closed = asyncio.Event()
        """It exited and every pipe is closed: all its output was read."""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._readers[fd](data)

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class _Lines:
    """Splits a stream into lines for ``on_line(head, length)``: ``head`` is the line's first
    ``limit`` bytes at most (without its newline), ``length`` its full length."""

    def __init__(self, limit: int, on_line: Callable[[bytes, int], None]) -> None:
        self._limit = limit
        self._on_line = on_line
        self._head = bytearray()
        self._length = 0

    def feed(self, data: bytes) -> None:
        lines = data.split(b"\n")
        if len(lines) > 1:
            self._add(lines[0])
            self._emit()
            for line in lines[1:-1]:
                self._on_line(line[: self._limit], len(line))
        self._add(lines[-1])

    def close(self) -> None:
        """The stream ended: a last line without a newline is a line too."""
        if self._length:
            self._emit()

    def _add(self, piece: bytes) -> None:
        room = self._limit - len(self._head)
        if room > 0:
            self._head += piece[:room]
        self._length += len(piece)

    def _emit(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        length, self._length = self._length, 0
        self._on_line(head, length)


class _Output:
    """Logs one stream's lines, up to ``cap`` bytes per run; then one marker, then nothing."""

    def __init__(self, stream: str, job: Job, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self._kept = 0
        self._dropped = 0
        self._job_id = job.id
        self._extra = {"job_id": job.id, "queue": job.queue, "stream": stream}

    def line(self, head: bytes, length: int) -> None:
        size = length + 1  # its newline
        if not self._dropped and self._kept + size <= self._cap:
            self._kept += size
            if log.isEnabledFor(logging.INFO):
                text = head.decode(errors="replace").rstrip("\r")
                log.info("job %s %s: %s", self._job_id, self._stream, text, extra=self._extra)
            return
        if not self._dropped:
            log.warning(
                "job %s %s: [more than max_output_bytes=%d bytes; the rest is dropped]",
                self._job_id,
                self._stream,
                self._cap,
                extra=self._extra,
            )
        self._dropped += size

    def close(self) -> None:
        if self._dropped:
            log.warning(
                "job %s %s: [%d bytes dropped past max_output_bytes=%d]",
                self._job_id,
                self._stream,
                self._dropped,
                self._cap,
                extra=self._extra,
            )


class _LastJson:
    """The last stdout line that is JSON: what the run returns as its result."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._value: object = None
        self._too_large: int | None = None  # the length of a last JSON-looking line too long

    def consider(self, head: bytes, length: int) -> None:
        start = head[:1]
        if start in (b" ", b"\t"):  # rare: the one case that copies the line
            start = head.lstrip()[:1]
        if not start or start[0] not in _JSON_STARTS:
            return
        if length > self._max_bytes:
            if start in (b"{", b"["):  # looks like a result, too long to be one
                self._too_large = length
            return
        try:
            self._value = jsonio.loads(head)
        except (ValueError, RecursionError):
            return
        self._too_large = None

    def value(self) -> object:
        if self._too_large is not None:
            raise ResultTooLarge(self._too_large, self._max_bytes)
        return self._value


class _ProgressWriter:
    """Writes a run's progress to the store, at most every :data:`PROGRESS_EVERY_S`; a value
    printed meanwhile replaces the one waiting (only the latest matters)."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._latest: tuple[float, str | None] | None = None
        self._written: tuple[float, str | None] | None = None
        self._changed = asyncio.Event()

    def update(self, pct: float, message: str | None) -> None:
        self._latest = (pct, message)
        self._changed.set()

    async def run(self) -> None:
        """The writing task (started in the handler's task: ``job.progress()`` works there)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.flush()
            await asyncio.sleep(PROGRESS_EVERY_S)  # the rate limit, not a wait for something

    async def flush(self) -> None:
        """Write the latest value unless it is written already (a write the run's end
        cancelled half-way is not)."""
        value = self._latest
        if value is None or value == self._written:
            return
        try:
            await self._job.progress(*value)
        except Exception as exc:  # progress is advisory: the run goes on
            log.warning("could not record the progress of job %s: %s", self._job.id, exc)
        else:
            self._written = value


def _progress_of(line: bytes) -> tuple[float, str | None] | None:
    """``(pct, message)`` of a ``PROGRESS: <0-100> [message]`` line; None if it is not one."""
    match = _PROGRESS_LINE.fullmatch(line)
    if match is None:
        return None
    pct = float(match[1])
    if not 0 <= pct <= 100:
        return None
    message = match[2].decode(errors="replace")[:_MAX_PROGRESS_MESSAGE] if match[2] else None
    return pct, message


async def _end_group(group: int, leader_exited: asyncio.Event, grace_s: float) -> str | None:
    """SIGTERM to every process of ``group``, SIGKILL to what is left after ``grace_s``;
    return which signal ended it (None: nothing was left to signal)."""
    if not _signal_group(group, signal.SIGTERM):
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await leader_exited.wait()
            await _emptied(group)
            return "SIGTERM"
    if not _signal_group(group, signal.SIGKILL):
        return "SIGTERM"
    # SIGKILL is never refused, but it is delivered after the call returns: wait for the
    # members to go (bounded: one nobody reaps stays in the group as a zombie).
    await leader_exited.wait()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_KILLED_WAIT_S):
            await _emptied(group)
    return f"SIGKILL ({grace_s:g}s after SIGTERM)"


async def _emptied(group: int) -> None:
    """Return once ``group`` has no process left. Its members other than the leader are not
    this process's children, so no event tells of their end: it is checked every
    :data:`_GROUP_POLL_S`."""
    while True:
        if not _signal_group(group, 0):
            return
        await asyncio.sleep(_GROUP_POLL_S)


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when it has no process left."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its user: it is beyond reach
        log.warning("cannot signal process group %s: permission denied", group)
        return False
    return True


async def _to_the_end(work: Awaitable[None]) -> None:
    """Await ``work`` to its end even when cancelled meanwhile (a worker shutting down
    cancels again and again); a cancellation is raised once it ended."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
