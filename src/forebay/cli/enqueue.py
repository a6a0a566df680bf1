"""``forebay enqueue``: one job from a JSON argument, or many from a JSON Lines file or stdin."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, BinaryIO, TypeAlias

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from forebay.app import Forebay
from forebay.cli.options import AppOption, JsonOption, UrlOption, parse_json, parse_time
from forebay.cli.output import EXIT_USAGE, fail, format_time, print_json, stderr, stdout
from forebay.cli.session import make_app, run
from forebay.errors import ForebayError, InvalidPayload, PayloadValidationError
from forebay.flow import check_key, check_tenant
from forebay.job import (
    JSON,
    MAX_ATTEMPTS_LIMIT,
    Job,
    JobState,
    NewJob,
    check_overrides,
    utcnow,
)
from forebay.payloads import PayloadModel, validate_jobs

__all__ = ["AfterPolicy", "enqueue"]


class AfterPolicy(enum.StrEnum):
    """``--after-policy``: when a job with parents runs."""

    COMPLETED = "completed"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class _Links:
    """A job's links to other things: its run, its parents, the URL told when it finishes."""

    run: str | None = None
    after: tuple[int, ...] = ()
    after_policy: str = "completed"
    webhook: str | None = None


@dataclass(frozen=True, slots=True)
class _Flow:
    """Whose job it is and its flow keys (see :mod:`forebay.flow`); a key not given here is
    worked out by the ``--app``'s queue declaration, if it declares one."""

    tenant: str | None = None
    rate_key: str | None = None
    concurrency_key: str | None = None
    fair_key: str | None = None

    def check(self) -> None:
        """Exit with a usage error naming the option whose value cannot be stored."""
        try:
            check_tenant(self.tenant)
        except InvalidPayload as exc:
            fail(f"--{exc}", EXIT_USAGE)
        for name in ("rate_key", "concurrency_key", "fair_key"):
            try:
                check_key(f"--{name.replace('_', '-')}", getattr(self, name))
            except InvalidPayload as exc:
                fail(str(exc), EXIT_USAGE)


@dataclass(frozen=True, slots=True)
class _JobOptions:
    """What every job of one ``forebay enqueue`` gets besides its payload."""

    queue: str
    key: str | None = None
    key_field: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    delay_s: float | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    links: _Links = field(default_factory=_Links)
    flow: _Flow = field(default_factory=_Flow)
    models: Mapping[str, PayloadModel] = field(default_factory=dict)
    """The payload models of the ``--app`` (checked before anything is stored)."""

    def new_job(self, payload: object) -> NewJob:
        job = NewJob.create(
            self.queue,
            payload,
            key=self._key(payload),
            priority=self.priority,
            run_at=self.run_at,
            delay=self.delay_s,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            run=self.links.run,
            after=self.links.after,
            after_policy=self.links.after_policy,
            webhook=self.links.webhook,
            tenant=self.flow.tenant,
            rate_key=self.flow.rate_key,
            concurrency_key=self.flow.concurrency_key,
            fair_key=self.flow.fair_key,
        )
        return validate_jobs([job], self.models)[0] if self.models else job

    def _key(self, payload: object) -> str | None:
        if self.key_field is None:
            return self.key
        value = payload.get(self.key_field) if isinstance(payload, dict) else None
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise InvalidPayload(
                f"payload has no string or integer field {self.key_field!r} for --key-field"
            )
        return str(value)


@dataclass(slots=True)
class _Tally:
    created: int = 0
    existing: int = 0

    def add(self, jobs: list[Job], ids: list[int]) -> None:
        for job in jobs:
            ids.append(job.id)
            if job.created:
                self.created += 1
            else:
                self.existing += 1


class _BadLine(Exception):
    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number


def enqueue(
    queue: Annotated[str, typer.Argument(help="The queue to put the job on.")],
    payload: Annotated[
        str | None,
        typer.Argument(metavar="JSON", help="The job's payload as JSON, e.g. '{\"id\": 7}'."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH",
            help="Enqueue one job per line of a JSON Lines file; - reads stdin.",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Idempotency key: a second enqueue with it returns the first job."),
    ] = None,
    key_field: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD",
            help="With --file: take each job's key from this payload field (reruns are harmless).",
        ),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    delay_s: Annotated[
        float | None, typer.Option(min=0, help="Run no earlier than this many seconds from now.")
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option(metavar="ISO", help="Run no earlier than this time, e.g. 2026-11-22T09:00Z."),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_ATTEMPTS_LIMIT,
            show_default=False,
            help="This job's own limit of error attempts, instead of its queue's.",
        ),
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout-s",
            "--timeout",
            metavar="SECONDS",
            show_default=False,
            help="This job's own time limit per run (above 0, at most a week), instead of "
            "its queue's.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run", metavar="RUN", help="Join this open run (forebay runs start gives one)."
        ),
    ] = None,
    after: Annotated[
        list[int] | None,
        typer.Option(
            "--after",
            metavar="ID",
            min=1,
            help="Wait (state waiting) until this job finished; repeat for several parents.",
        ),
    ] = None,
    after_policy: Annotated[
        AfterPolicy,
        typer.Option(
            "--after-policy",
            help="completed: run once every parent completed (a dead or cancelled one cancels "
            "this job); always: once every parent finished, however it ended.",
        ),
    ] = AfterPolicy.COMPLETED,
    webhook: Annotated[
        str | None,
        typer.Option(metavar="URL", help="An http(s) URL told the job's final state, signed."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            metavar="TENANT",
            help="Whose job it is: letters, digits and _.:@- (a tenant quota may refuse it).",
        ),
    ] = None,
    rate_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Count its start against this key's rate limit."),
    ] = None,
    concurrency_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Count it while running against this key's cap."),
    ] = None,
    fair_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Take turns with the other keys' jobs (a fair queue)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="With --file: jobs per transaction.")
    ] = 1000,
    app_ref: AppOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enqueue a job, or one job per line of a JSON Lines file.

    Prints the job id and whether it was created (**created=false**: the key already
    existed, and the existing job is shown).

    **--tenant** and the flow keys apply to every job; a key not given is worked out by the
    queue's declaration in the **--app** (e.g. ``rate_limit_key="payload.domain"``).
    """
    _check_combination(payload, file, key, key_field, delay_s, run_at)
    try:
        check_overrides(max_attempts, timeout_s)
    except InvalidPayload as exc:
        fail(f"--{str(exc).replace('_', '-', 1)}", EXIT_USAGE)
    flow = _Flow(tenant, rate_key, concurrency_key, fair_key)
    flow.check()
    app = make_app(url, app_ref)
    when = parse_time(run_at, "--run-at")
    links = _Links(run_id, tuple(after or ()), str(after_policy), webhook)
    options = _JobOptions(
        queue,
        key,
        key_field,
        priority,
        when,
        delay_s,
        max_attempts,
        timeout_s,
        links,
        flow,
        app.payload_models,
    )
    if file is None:
        assert payload is not None
        job = run(_enqueue_one(app, options, parse_json(payload, "the payload")), app)
        _print_job(job, as_json)
        return
    tally, ids = run(_enqueue_file(app, options, file, batch_size), app)
    _print_tally(queue, tally, ids, as_json)


def _check_combination(
    payload: str | None,
    file: str | None,
    key: str | None,
    key_field: str | None,
    delay_s: float | None,
    run_at: str | None,
) -> None:
    if payload is None and file is None:
        fail("give the job's payload as JSON, or --file PATH with one payload per line", EXIT_USAGE)
    if payload is not None and file is not None:
        fail("give a JSON payload or --file PATH, not both", EXIT_USAGE)
    if file is not None and key is not None:
        fail("--key names one job; with --file use --key-field FIELD", EXIT_USAGE)
    if file is None and key_field is not None:
        fail("--key-field works with --file; for one job use --key", EXIT_USAGE)
    if delay_s is not None and run_at is not None:
        fail("give --delay-s or --run-at, not both", EXIT_USAGE)


async def _enqueue_one(app: Forebay, options: _JobOptions, payload: object) -> Job:
    try:
        new = options.new_job(payload)  # validates before anything is opened
    except PayloadValidationError as exc:
        fail(str(exc), EXIT_USAGE)
    async with app:
        return (await app.enqueue_many([new]))[0]


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        print_json({**job.to_dict(), "created": job.created})
        return
    scheduled = job.run_at is not None and job.run_at > utcnow() and job.state == JobState.QUEUED
    when = f", runs at {format_time(job.run_at)}" if scheduled else ""
    if job.state is JobState.WAITING:
        when = f", after job{'s' if len(job.after) > 1 else ''} {', '.join(map(str, job.after))}"
    run = f" in run {job.run_id}" if job.run_id else ""
    if job.created:
        stdout().print(
            f"job {job.id} {job.state} on {job.queue}{run}{when} (created=true)", markup=False
        )
    else:
        stdout().print(
            f"job {job.id} on {job.queue} already exists with key {job.key}, "
            f"state {job.state} (created=false)",
            markup=False,
        )


# -- many jobs from a file --------------------------------------------------------------------
_Advance: TypeAlias = Callable[[int, int], None]
"""Told (jobs so far, bytes just read) as lines are read."""


async def _enqueue_file(
    app: Forebay, options: _JobOptions, file: str, batch_size: int
) -> tuple[_Tally, list[int]]:
    """Check every line of a file first (so bad input stores nothing), then enqueue in batches.

    Stdin cannot be read twice: a bad line there stops the command after the batches before it.
    """
    path = None if file == "-" else Path(file)
    total = path.stat().st_size if path is not None else None
    with _progress() as progress:
        if path is not None:
            checking = progress.add_task("checking", total=total, jobs=0)
            with path.open("rb") as stream:
                _check_lines(stream, options, _advancer(progress, checking))
        task = progress.add_task("enqueueing", total=total, jobs=0)
        async with app:
            with _open(path) as stream:
                return await _enqueue_lines(
                    app, stream, options, batch_size, _advancer(progress, task)
                )


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[jobs]:,} jobs"),
        TimeElapsedColumn(),
        console=stderr(),
        disable=not stderr().is_terminal,
    )


def _advancer(progress: Progress, task: TaskID) -> _Advance:
    def advance(jobs: int, size: int) -> None:
        progress.update(task, advance=size, jobs=jobs)

    return advance


@contextmanager
def _open(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdin.buffer  # not ours to close
        return
    with path.open("rb") as stream:
        yield stream


def _check_lines(stream: Iterable[bytes], options: _JobOptions, seen: _Advance) -> None:
    try:
        for count, (_job, size) in enumerate(_read_jobs(stream, options), 1):
            seen(count, size)
    except _BadLine as bad:
        fail(f"{bad}; nothing was enqueued", EXIT_USAGE)


async def _enqueue_lines(
    app: Forebay, stream: Iterable[bytes], options: _JobOptions, batch_size: int, done: _Advance
) -> tuple[_Tally, list[int]]:
    tally, ids = _Tally(), list[int]()
    batch: list[NewJob] = []
    size = 0
    try:
        for job, line_size in _read_jobs(stream, options):
            batch.append(job)
            size += line_size
            if len(batch) >= batch_size:
                await _store(app, batch, tally, ids)
                done(len(ids), size)
                batch, size = [], 0
        await _store(app, batch, tally, ids)
        done(len(ids), size)
    except _BadLine as bad:
        fail(f"{bad}; the {len(ids)} jobs before it were enqueued", EXIT_USAGE)
    except ForebayError as exc:
        fail(f"{exc}; the {len(ids)} jobs before this batch were enqueued")
    return tally, ids


async def _store(app: Forebay, batch: list[NewJob], tally: _Tally, ids: list[int]) -> None:
    if batch:
        tally.add(await app.enqueue_many(batch), ids)


def _read_jobs(stream: Iterable[bytes], options: _JobOptions) -> Iterator[tuple[NewJob, int]]:
    """(job, bytes of its line) per non-blank line; _BadLine names the first bad one."""
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            job = options.new_job(json.loads(raw))
        except PayloadValidationError as exc:
            raise _BadLine(number, exc.reason) from None
        except InvalidPayload as exc:
            raise _BadLine(number, str(exc)) from None
        except ValueError as exc:  # JSON (or its UTF-8) is malformed
            raise _BadLine(number, f"not valid JSON ({exc})") from None
        yield job, len(raw)


def _print_tally(queue: str, tally: _Tally, ids: list[int], as_json: bool) -> None:
    if as_json:
        document: dict[str, JSON] = {
            "queue": queue,
            "jobs": len(ids),
            "created": tally.created,
            "existing": tally.existing,
            "ids": list[JSON](ids),
        }
        print_json(document)
        return
    stdout().print(
        f"enqueued {len(ids):,} jobs on {queue}: {tally.created:,} created, "
        f"{tally.existing:,} already existed (same key)",
        markup=False,
    )
