"""Every Prometheus metric forebay exports: the names live here and nowhere else.

=========================================  =========  ==================  =========================
name                                       type       labels              what
=========================================  =========  ==================  =========================
``forebay_jobs_enqueued_total``            counter    queue               jobs stored (new keys)
``forebay_jobs_deduplicated_total``        counter    queue               enqueues that found the
                                                                          job's key already stored
``forebay_jobs_completed_total``           counter    queue               handler succeeded
``forebay_jobs_retried_total``             counter    queue               failed, will run again
``forebay_jobs_dead_total``                counter    queue               dead-lettered
``forebay_jobs_deferred_total``            counter    queue               put back by ``Defer``
``forebay_jobs_released_total``            counter    queue               released at shutdown
``forebay_jobs_resource_exhausted_total``  counter    queue, outcome      a command killed for
                                                                          memory (retried, dead)
``forebay_job_duration_seconds``           histogram  queue, outcome      time in the handler
``forebay_queue_jobs``                     gauge      queue, state        jobs per state (waiting
                                                                          too; also the
                                                                          derived ``scheduled``,
                                                                          ``retrying``)
``forebay_queue_oldest_queued_age_seconds``gauge      queue               age of the oldest due job
``forebay_queue_finished_total``           counter    queue, outcome      jobs the store finished
                                                                          since it was created
                                                                          (completed, dead,
                                                                          reclaimed)
``forebay_queue_workers``                  gauge      queue               live workers consuming
                                                                          the queue (0: none)
``forebay_workers``                        gauge                          live workers registered
                                                                          in the store
``forebay_backend_up``                     gauge                          1 if the last scrape
                                                                          reached the backend
``forebay_intake_requests_total``          counter    source, status      intake answers
``forebay_intake_latency_seconds``         histogram  source              request to answer
``forebay_intake_throttled_total``         counter    limit, source       intake requests refused
                                                                          429 by an intake limit
                                                                          (``token``, ``source``)
``forebay_http_connections_closed_total``  counter    reason              connections the server
                                                                          closed (header_timeout,
                                                                          body_timeout, evicted,
                                                                          over_limit)
``forebay_sink_writes_skipped_total``      counter    sink, reason        sink writes skipped as
                                                                          duplicate or older
=========================================  =========  ==================  =========================

Job counters are fed by :class:`PrometheusObserver` through the observer seam, so they count
what this process did (its enqueues, its workers' outcomes). The store metrics
(``forebay_queue_*``, ``forebay_workers``, ``forebay_backend_up``) are read from the backend at
scrape time (:meth:`Metrics.read_store`) and so describe the whole fleet: every process that
exports metrics (``forebay serve``, ``forebay worker --metrics-port``) reports the same values,
and alert rules aggregate them with ``max by (queue)``. ``forebay_queue_finished_total`` is the
store's own count of finished jobs (:class:`~forebay.fleet.QueueTotals`), kept in the
transaction that finished each job and never pruned, so it only goes up whichever process
reports it; ``outcome="reclaimed"`` counts expired leases taken back from a worker that stopped
answering. Intake metrics use ``source="api"`` for
``POST /v1/queues/{queue}/jobs`` and ``source="unknown"`` for requests to an undeclared source;
a client that hung up before its body arrived is counted with ``status="499"``.
``forebay_intake_throttled_total`` counts the requests an intake limit refused
(:mod:`forebay.http.intake_limits`): ``limit="token"`` (an API token over ``FOREBAY_TOKEN_RATE``,
``source=""``: a token or a tenant is never a label) or ``limit="source"`` (``source`` names the
webhook source over its ``rate_limit``).
``forebay_http_connections_closed_total`` counts what ``forebay serve`` closed to bound slow or
idle clients (:mod:`forebay.http.connections`). A run that failed with ``ResourceExhausted`` (a
command killed for memory: :mod:`forebay.execution.command`) is counted in its outcome's counter
and again in ``forebay_jobs_resource_exhausted_total``, labelled with that outcome.

Each service has its own :class:`~prometheus_client.CollectorRegistry` (no global state, so
tests can build many services). The one exception is the sink counter: sinks run inside
handlers, far from any service object, so they call :func:`count_sink_writes_skipped`, which
adds to a small process-wide tally that every registry exports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from forebay.errors import ForebayError, ResourceExhausted
from forebay.fleet import QueueTotals, WorkerInfo, queue_consumers
from forebay.job import Job, QueueCounts
from forebay.outcome import JobOutcome

__all__ = ["FleetStore", "Metrics", "PrometheusObserver", "count_sink_writes_skipped"]

log = logging.getLogger("forebay.metrics")

_DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)
_INTAKE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_STATE_FIELDS = (
    "waiting",
    "queued",
    "running",
    "completed",
    "dead",
    "cancelled",
    "scheduled",
    "retrying",
)

_FINISHED_OUTCOMES = ("completed", "dead", "reclaimed")

_sink_skips: Tally[tuple[str, str]] = Tally()
_sink_lock = threading.Lock()


def count_sink_writes_skipped(sink: str, reason: str = "duplicate", count: int = 1) -> None:
    """Count sink writes skipped because they were duplicates or older than what is stored.

    Safe from any thread. ``sink`` names the sink (e.g. ``postgres``), ``reason`` why
    (``duplicate``, ``older``). Exported as ``forebay_sink_writes_skipped_total``.
    """
    if count:
        with _sink_lock:
            _sink_skips[(sink, reason)] += count


class _SinkSkipCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "forebay_sink_writes_skipped",
            "Sink writes skipped because the row was a duplicate or older than the stored one.",
            labels=["sink", "reason"],
        )
        with _sink_lock:
            items = list(_sink_skips.items())
        for (sink, reason), count in sorted(items):
            family.add_metric([sink, reason], count)
        yield family


class _FinishedCollector(Collector):
    """``forebay_queue_finished_total``: the store's totals as last read, exported as counters
    (the store keeps them for ever, so they never go back; a process that restarts reports
    the same values at once)."""

    def __init__(self) -> None:
        self.totals: Sequence[QueueTotals] = ()

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "forebay_queue_finished",
            "Jobs the store finished since it was created, by queue and outcome (completed, "
            "dead, reclaimed = a lease taken back from a worker that stopped answering); read "
            "from the store at scrape time, the same in every process.",
            labels=["queue", "outcome"],
        )
        for totals in self.totals:  # replaced whole, never changed in place: no lock needed
            for outcome in _FINISHED_OUTCOMES:
                family.add_metric([totals.queue, outcome], getattr(totals, outcome))
        yield family


class FleetStore(Protocol):
    """What :meth:`Metrics.read_store` reads (a :class:`~forebay.Forebay` app is one)."""

    async def counts(self) -> list[QueueCounts]: ...

    async def totals(self) -> list[QueueTotals]: ...

    async def list_workers(self) -> list[WorkerInfo]: ...


class Metrics:
    """One service's metrics, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_enqueued = Counter(
            "forebay_jobs_enqueued", "Jobs stored by this process.", ["queue"], registry=r
        )
        self.jobs_deduplicated = Counter(
            "forebay_jobs_deduplicated",
            "Enqueues answered with an existing job because its key was already stored.",
            ["queue"],
            registry=r,
        )
        self.outcomes: dict[str, Counter] = {
            "completed": Counter(
                "forebay_jobs_completed", "Jobs whose handler succeeded.", ["queue"], registry=r
            ),
            "retried": Counter(
                "forebay_jobs_retried", "Failed runs that will be retried.", ["queue"], registry=r
            ),
            "dead": Counter("forebay_jobs_dead", "Jobs dead-lettered.", ["queue"], registry=r),
            "deferred": Counter(
                "forebay_jobs_deferred", "Runs put back by Defer.", ["queue"], registry=r
            ),
            "released": Counter(
                "forebay_jobs_released",
                "Running jobs released back to queued at shutdown.",
                ["queue"],
                registry=r,
            ),
        }
        self.resource_exhausted = Counter(
            "forebay_jobs_resource_exhausted",
            "Runs whose command was killed for memory (ResourceExhausted), by outcome "
            "(retried or dead); also counted in those outcomes' counters.",
            ["queue", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "forebay_job_duration_seconds",
            "Time a job (or a batch) spent in its handler, by outcome.",
            ["queue", "outcome"],
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.queue_jobs = Gauge(
            "forebay_queue_jobs",
            "Jobs per queue and state, read from the backend at scrape time "
            "(scheduled and retrying are subsets of queued).",
            ["queue", "state"],
            registry=r,
        )
        self.oldest_queued_age = Gauge(
            "forebay_queue_oldest_queued_age_seconds",
            "Age of the oldest due queued job, read from the backend at scrape time.",
            ["queue"],
            registry=r,
        )
        self.queue_workers = Gauge(
            "forebay_queue_workers",
            "Live workers consuming the queue (registered in the store, heartbeat recent), "
            "read from the store at scrape time; 0 for a queue with jobs and no consumer.",
            ["queue"],
            registry=r,
        )
        self.workers = Gauge(
            "forebay_workers",
            "Live workers registered in the store (every host), read at scrape time.",
            registry=r,
        )
        self._finished = _FinishedCollector()
        r.register(self._finished)
        self.backend_up = Gauge(
            "forebay_backend_up", "1 if the backend answered at the last scrape.", registry=r
        )
        self.intake_requests = Counter(
            "forebay_intake_requests",
            "Intake requests answered, by source (api = the jobs endpoint) and status code.",
            ["source", "status"],
            registry=r,
        )
        self.intake_latency = Histogram(
            "forebay_intake_latency_seconds",
            "Time from request to answer on the intake endpoints.",
            ["source"],
            buckets=_INTAKE_BUCKETS_S,
            registry=r,
        )
        self.intake_throttled = Counter(
            "forebay_intake_throttled",
            "Intake requests refused (429) by an intake limit: limit=token (an API token's "
            "rate; source empty) or limit=source (a webhook source's rate_limit).",
            ["limit", "source"],
            registry=r,
        )
        self.connections_closed = Counter(
            "forebay_http_connections_closed",
            "Connections closed by the server: header_timeout or body_timeout (too slow), "
            "evicted (idle, to make room), over_limit (refused: every connection busy).",
            ["reason"],
            registry=r,
        )
        r.register(_SinkSkipCollector())
        self._intake_counters: dict[tuple[str, int], Counter] = {}
        self._intake_histograms: dict[str, Histogram] = {}

    def observe_intake(self, source: str, status: int, seconds: float) -> None:
        # On every intake request: the labelled children are looked up once and kept.
        counter = self._intake_counters.get((source, status))
        if counter is None:
            counter = self._intake_counters[(source, status)] = self.intake_requests.labels(
                source, str(status)
            )
        histogram = self._intake_histograms.get(source)
        if histogram is None:
            histogram = self._intake_histograms[source] = self.intake_latency.labels(source)
        counter.inc()
        histogram.observe(seconds)

    def throttled(self, limit: str, source: str = "") -> None:
        """Count a request an intake limit refused (``limit``: ``token`` or ``source``)."""
        self.intake_throttled.labels(limit, source).inc()

    def connection_closed(self, reason: str) -> None:
        """Count a connection the server closed (see :mod:`forebay.http.connections`)."""
        self.connections_closed.labels(reason).inc()

    async def read_store(self, store: FleetStore, *, timeout_s: float) -> None:
        """Read the store metrics from ``store`` (counts, totals, live workers) within
        ``timeout_s`` and :meth:`update_store` with them; a store that does not answer sets
        ``forebay_backend_up`` to 0 and leaves the last values. Workers that cannot be listed
        (a record this version cannot read) leave the fleet gauges as they were."""
        try:
            async with asyncio.timeout(timeout_s):
                counts = await store.counts()
                totals = await store.totals()
        except (ForebayError, TimeoutError) as exc:
            log.warning("could not read the store metrics: %s", exc or type(exc).__name__)
            self.update_store(None)
            return
        workers: list[WorkerInfo] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                workers = await store.list_workers()
        except (ForebayError, TimeoutError) as exc:
            log.warning("could not list the live workers: %s", exc or type(exc).__name__)
        self.update_store(counts, totals, workers)

    def update_store(
        self,
        counts: Sequence[QueueCounts] | None,
        totals: Sequence[QueueTotals] = (),
        workers: Sequence[WorkerInfo] | None = (),
    ) -> None:
        """Refresh the store metrics: per queue and state the jobs (``counts``; None: the
        backend did not answer, the last values stay), the finished totals and the live
        ``workers``. Every queue the store counts or a live worker consumes gets a
        ``forebay_queue_workers`` sample, 0 when nothing consumes it (``workers`` None: not
        known, the fleet gauges keep their last values)."""
        if counts is None:
            self.backend_up.set(0)
            return
        self.backend_up.set(1)
        # No await from here to the end: a scrape never sees a half-filled gauge.
        self.queue_jobs.clear()
        self.oldest_queued_age.clear()
        for c in counts:
            for state in _STATE_FIELDS:
                self.queue_jobs.labels(c.queue, state).set(getattr(c, state))
            self.oldest_queued_age.labels(c.queue).set(c.oldest_queued_age_s or 0.0)
        if workers is not None:
            self.queue_workers.clear()
            for consumed in queue_consumers(workers, (c.queue for c in counts)):
                self.queue_workers.labels(consumed.queue).set(consumed.workers)
            self.workers.set(len(workers))
        self._finished.totals = tuple(totals)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


_RESOURCE_EXHAUSTED = ResourceExhausted.__name__  # the error type a settled job records


class PrometheusObserver:
    """Feeds the job counters and the duration histogram (see :mod:`forebay.observer`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # queue -> (enqueued, deduplicated) children: labels() costs a lock and a lookup
        self._enqueue_counters: dict[str, tuple[Counter, Counter]] = {}

    def enqueued(self, jobs: Sequence[Job]) -> None:
        if len(jobs) == 1:  # the common case: one request, one job
            job = jobs[0]
            self._counters(job.queue)[0 if job.created else 1].inc()
            return
        created: Tally[str] = Tally()
        duplicates: Tally[str] = Tally()
        for job in jobs:
            (created if job.created else duplicates)[job.queue] += 1
        for queue, n in created.items():
            self._counters(queue)[0].inc(n)
        for queue, n in duplicates.items():
            self._counters(queue)[1].inc(n)

    def _counters(self, queue: str) -> tuple[Counter, Counter]:
        counters = self._enqueue_counters.get(queue)
        if counters is None:
            counters = self._enqueue_counters[queue] = (
                self.metrics.jobs_enqueued.labels(queue),
                self.metrics.jobs_deduplicated.labels(queue),
            )
        return counters

    def settled(self, job: Job, outcome: JobOutcome, duration_s: float) -> None:
        self.metrics.outcomes[outcome].labels(job.queue).inc()
        if job.error_type == _RESOURCE_EXHAUSTED:
            self.metrics.resource_exhausted.labels(job.queue, outcome).inc()
        if outcome != "released":
            self.metrics.job_duration.labels(job.queue, outcome).observe(duration_s)
