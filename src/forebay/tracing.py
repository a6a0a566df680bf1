"""Traces: OpenTelemetry spans around every enqueue and every handler run (``forebay[otel]``).

A job crosses processes and time: the request or script that enqueued it is long gone when a
worker runs it, maybe on another host, maybe after retries. So an enqueue starts a PRODUCER span
``send <queue>`` (a child of whatever span is current: the caller's code, an incoming HTTP
request's ``traceparent``) and stores that span's W3C ``traceparent`` with each job
(:attr:`forebay.job.NewJob.traceparent`); the worker runs the handler in a CONSUMER span
``process <queue>`` *linked* to the stored one and current while the handler runs, so the
handler's own spans (and the sends of ``job.enqueue``) nest under it. The process span starts a
trace of its own rather than joining the enqueue's: a job runs once or ten times, minutes or days
later, and a fan-out of ten thousand jobs must not make one trace of ten thousand runs (the
messaging semantic conventions allow both; see docs/tracing.md). Retries, defers and dead
letters are events on the run's span; an error is recorded on it with status ERROR, a completed
job gets status OK.

Spans carry the messaging semantic conventions (``messaging.system = "forebay"``,
``messaging.destination.name`` = the queue, ``messaging.message.id`` = the job id,
``messaging.operation.type`` send or process, ``messaging.batch.message_count``) and forebay's
own ``forebay.job.attempt``, ``forebay.job.deliveries``, ``forebay.tenant``.

``opentelemetry-api`` is optional and imported on first use only. Without it, or while no tracer
provider is configured (the API's default no-op: nobody set up an SDK), nothing is traced and no
traceparent is stored, at the cost of one check per enqueue and per handler call. The tracer
comes from the provider given to :class:`~forebay.Forebay` (``tracer_provider=``), else from the
global one, which the SDK (or ``opentelemetry-instrument``) sets up from the standard ``OTEL_*``
variables.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from importlib import metadata
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, cast

from forebay.errors import Defer
from forebay.job import Completion, Deferral, Failure, Job, Lease, NewJob, Retry
from forebay.outcome import JobOutcome

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, Tracer, TracerProvider

__all__ = ["NOT_PROCESSED", "NOT_SENT", "Processing", "Sending", "Tracing", "continue_trace"]

SYSTEM = "forebay"
"""``messaging.system`` of forebay's spans."""


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (asked once)."""
    return _trace_api() is not None


@functools.cache
def _trace_api() -> ModuleType | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER"
"""The API's variable that names a provider to load on first use (``opentelemetry-instrument``
and friends use it)."""


class Tracing:
    """Makes forebay's spans with one tracer: from ``provider``, else from the global tracer
    provider as it is at each use (so an SDK set up after the app was made applies)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._given = None if provider is None else _tracer_of(provider)
        self._global: object | None = None  # the global provider self._tracer was made from
        self._tracer: Tracer | None = None
        self._from_env = _PROVIDER_FROM_ENV in os.environ

    def tracer(self) -> Tracer | None:
        """The tracer to use now; None while tracing is off (no opentelemetry-api, or no
        provider configured)."""
        if self._given is not None:
            return self._given
        trace = _trace_api()
        if trace is None:
            return None
        # Asked at every enqueue and handler call: read the API's global as its
        # get_tracer_provider() does, without that function's check of os.environ (a
        # microsecond each time), unless a provider comes from the environment or this
        # version of the API keeps its global elsewhere.
        provider: object = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
        if provider is None and not self._from_env:
            return None  # nothing configured: the API would make no-op spans
        if provider is _UNKNOWN or provider is None:
            provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        if provider is not self._global:
            self._global, self._tracer = provider, _tracer_of(cast("TracerProvider", provider))
        return self._tracer

    def send(self, jobs: Sequence[NewJob]) -> Sending:
        """The PRODUCER span of one enqueue (:data:`NOT_SENT` while tracing is off): use it
        as ``with tracing.send(batch) as sent:``, store ``sent.stamped(batch)``, then tell it
        ``sent.stored(jobs)``."""
        tracer = self.tracer()
        if tracer is None or not jobs:
            return NOT_SENT
        from opentelemetry.trace import SpanKind

        queues = {job.queue for job in jobs}
        queue = next(iter(queues)) if len(queues) == 1 else None
        attributes: dict[str, str | int] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if len(jobs) > 1:
            attributes["messaging.batch.message_count"] = len(jobs)
        elif jobs[0].tenant is not None:
            attributes["forebay.tenant"] = jobs[0].tenant
        span = tracer.start_span(
            "send" if queue is None else f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        return Sending(span)

    def process(self, queue: str, jobs: Sequence[Job]) -> Processing:
        """The CONSUMER span of one handler call of ``jobs`` (one job, or a batch), linked to
        the spans that enqueued them (:data:`NOT_PROCESSED` while tracing is off). It starts a
        trace of its own (see the module docstring)."""
        tracer = self.tracer()
        if tracer is None:
            return NOT_PROCESSED
        from opentelemetry.context import Context as Empty
        from opentelemetry.trace import SpanKind

        attributes: dict[str, str | int] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        }
        if len(jobs) == 1:
            job = jobs[0]
            attributes["messaging.message.id"] = str(job.id)
            attributes["forebay.job.attempt"] = job.attempt
            attributes["forebay.job.deliveries"] = job.deliveries
            if job.tenant is not None:
                attributes["forebay.tenant"] = job.tenant
        else:
            attributes["messaging.batch.message_count"] = len(jobs)
        span = tracer.start_span(
            f"process {queue}",
            context=Empty(),  # a root: linked to the enqueues, not their child
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=_links(jobs),
            record_exception=False,
            set_status_on_exception=False,
        )
        return Processing(span, batch=len(jobs) > 1)


class Sending:
    """The span of one enqueue; see :meth:`Tracing.send`. Current while the ``with`` block
    runs; an error escaping the block is recorded on it (status ERROR); it ends with the block."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> Sending:
        if self._span is not None:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if span is None:
            return
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        if self._token is not None:
            context.detach(self._token)
        if e is not None and isinstance(e, Exception):
            span.record_exception(e)
            span.set_attribute("error.type", type(e).__name__)
            span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
        span.end()

    def stamped(self, jobs: list[NewJob]) -> list[NewJob]:
        """``jobs``, each that carries no traceparent yet given this span's."""
        if self._span is None:
            return jobs
        context = self._span.get_span_context()
        if not context.is_valid:
            return jobs
        parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        from dataclasses import replace

        return [job if job.traceparent else replace(job, traceparent=parent) for job in jobs]

    def stored(self, jobs: Sequence[Job]) -> None:
        """The jobs as stored: a single job's id becomes ``messaging.message.id``."""
        if self._span is not None and len(jobs) == 1:
            self._span.set_attribute("messaging.message.id", str(jobs[0].id))
            self._span.set_attribute("forebay.job.created", jobs[0].created)


class Processing:
    """The span of one handler call; see :meth:`Tracing.process`.

    The lane makes it :meth:`current` while the handler runs; the settler tells it each
    recorded outcome (:meth:`settled`) and ends it (:meth:`end`, also for a call that was
    cancelled or whose outcome was not recorded). Its status is set as it ends: ERROR when the
    handler raised or a job of it failed, else OK when a job completed.
    """

    __slots__ = ("_batch", "_completed", "_ended", "_failure", "_span")

    def __init__(self, span: Span | None, *, batch: bool = False) -> None:
        self._span = span
        self._batch = batch
        self._ended = span is None
        self._failure: str | None = None
        self._completed = False

    def current(self) -> AbstractContextManager[None]:
        """This span current in the block (and in the threads it starts with a copy of the
        context); an error escaping it, but :class:`~forebay.Defer`, is recorded on the span;
        a cancellation is an event ``cancelled``."""
        return _UNTRACED_BLOCK if self._span is None else self._current(self._span)

    @contextmanager
    def _current(self, span: Span) -> Iterator[None]:
        from opentelemetry import trace

        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                yield
            except Exception as exc:
                if not isinstance(exc, Defer):
                    span.record_exception(exc)
                    self._failed(type(exc).__name__, str(exc))
                raise
            except BaseException:
                span.add_event("cancelled")
                raise

    def settled(
        self,
        job: Job,
        outcome: JobOutcome,
        transition: Lease | Completion | Retry | Failure | Deferral,
    ) -> None:
        """``job``'s outcome was recorded: ``retry``, ``defer`` and ``dead_letter`` become
        events (with the error type and, when it runs again, when)."""
        span = self._span
        if span is None or self._ended:
            return
        attributes: dict[str, str | int] = {"forebay.job.attempt": job.attempt}
        if self._batch:
            attributes["messaging.message.id"] = str(job.id)
        if isinstance(transition, Retry):
            attributes["error.type"] = transition.error_type
            attributes["forebay.job.run_at"] = _iso(transition.run_at)
            span.add_event("retry", attributes)
            self._failed(transition.error_type, transition.error)
        elif isinstance(transition, Failure):
            attributes["error.type"] = transition.error_type
            span.add_event("dead_letter", attributes)
            self._failed(transition.error_type, transition.error)
        elif isinstance(transition, Deferral):
            attributes["forebay.job.run_at"] = _iso(transition.run_at)
            span.add_event("defer", attributes)
        elif outcome is JobOutcome.COMPLETED:
            self._completed = True

    def end(self) -> None:
        """End the span, its status set (see the class docstring); a second call does nothing."""
        if self._ended:
            return
        self._ended = True
        assert self._span is not None
        from opentelemetry.trace import Status, StatusCode

        if self._failure is not None:
            self._span.set_status(Status(StatusCode.ERROR, self._failure))
        elif self._completed:
            self._span.set_status(Status(StatusCode.OK))
        self._span.end()

    def _failed(self, kind: str, text: str) -> None:
        if self._failure is None:
            assert self._span is not None
            self._span.set_attribute("error.type", kind)
            self._failure = text if text.startswith(kind) else f"{kind}: {text}"


_UNKNOWN = object()
_UNTRACED_BLOCK: AbstractContextManager[None] = nullcontext()

NOT_SENT = Sending(None)
"""What :meth:`Tracing.send` answers while tracing is off: stores nothing, costs nothing."""
NOT_PROCESSED = Processing(None)
"""What :meth:`Tracing.process` answers while tracing is off (and what a call without a span
carries)."""


@contextmanager
def continue_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Continue, in this block, the trace of an incoming request: the context its headers carry
    (``traceparent``, and whatever else the configured propagators read, ``OTEL_PROPAGATORS``)
    becomes current, so an enqueue made in the block is part of the caller's trace. Nothing
    changes when no such header came, or when a span is current already (an instrumented server
    continued the trace itself)."""
    if not available():
        yield
        return
    from opentelemetry import context, propagate, trace

    fields = propagate.get_global_textmap().fields
    continued = trace.get_current_span().get_span_context().is_valid
    if continued or not any(name in headers for name in fields):
        yield
        return
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)


def _tracer_of(provider: TracerProvider) -> Tracer:
    try:
        version: str | None = metadata.version("forebay")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = None
    return provider.get_tracer("forebay", version)


def _links(jobs: Sequence[Job]) -> list[Link]:
    """A link to the span that enqueued each job that carries one."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    links = []
    for job in jobs:
        parent = job.traceparent
        if parent is None:
            continue
        context = SpanContext(
            trace_id=int(parent[3:35], 16),
            span_id=int(parent[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parent[53:55], 16)),
        )
        links.append(Link(context, {"messaging.message.id": str(job.id)}))
    return links


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
