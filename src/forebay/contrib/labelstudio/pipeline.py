"""The Label Studio pipeline: the source, the batch handler, and the app factory.

A batch of jobs (changes, see :mod:`~forebay.contrib.labelstudio.events`) becomes records
(:mod:`~forebay.contrib.labelstudio.records`) written to two sinks, in this order:

1. the **dataset** (parquet shards), the system of record — a job completes only once its rows
   are on storage;
2. the **staging tables** in PostgreSQL (when configured) — one transaction per batch.

If a sink is unreachable the whole batch is deferred (no attempt spent: an outage delays jobs,
it does not dead-letter them) and tried again later; rows already in the dataset are then
skipped as duplicates. If a sink refuses the data, each job is written alone, so only the jobs
whose data is refused fail (and become dead, replayable once fixed).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from forebay.app import Forebay
from forebay.contrib.labelstudio.events import change_key, split_event
from forebay.contrib.labelstudio.pages import PageSource
from forebay.contrib.labelstudio.reconcile import install_reconcile
from forebay.contrib.labelstudio.records import COLUMNS, Received, Records, Report, build_records
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.contrib.labelstudio.stage import (
    create_stage_schema,
    make_stage_sink,
    stage_statements,
)
from forebay.errors import Defer, SinkError, SinkRejected, SinkUnavailable
from forebay.job import Job, utcnow
from forebay.metrics import count_sink_writes_skipped
from forebay.sinks.base import WriteOutcome, WriteResult
from forebay.sinks.dataset import DatasetSink
from forebay.sinks.hub import HubSync
from forebay.sinks.postgres import PostgresSink
from forebay.sources import SharedSecret

if TYPE_CHECKING:
    from forebay.backends import Backend

__all__ = ["LabelStudioPipeline", "build_app"]

log = logging.getLogger("forebay.labelstudio")

_SKIP_REASONS: Final[tuple[WriteOutcome, ...]] = ("older", "duplicate")

DATASET_DESCRIPTION: Final = (
    "Label Studio annotations exported by forebay's Label Studio pipeline: projects, "
    "documents (tasks), annotations, extractions (one row per region) and pdf_boxes "
    "(rectangles in PDF points). Rows are changes (`op` = upsert or delete); the latest "
    "`updated_at` per key is the current state, and an annotation's extractions are those of "
    "its latest version. A version is deleted by the earliest delete of its id, its task or "
    "its project that is not before its `created_at` (one created later is a new object "
    "under a reused id)."
)


class LabelStudioPipeline:
    """Writes batches of Label Studio changes to the dataset and the staging tables."""

    def __init__(
        self,
        *,
        dataset: DatasetSink,
        stage: PostgresSink | None = None,
        pages: PageSource | None = None,
        outage_retry_s: float = 2.0,
        max_outage_retry_s: float = 60.0,
    ) -> None:
        self.dataset = dataset
        self.stage = stage
        self.pages = pages or PageSource()
        self.outage_retry_s = outage_retry_s
        self.max_outage_retry_s = max_outage_retry_s
        self.written = WriteResult()
        """Totals of every write so far (applied and skipped, per table and sink)."""
        # Building records is pure Python: one thread at a time does it (threads would only
        # take turns with the GIL, and pay for the switching), off the event loop.
        self._builder: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: LabelStudioSettings) -> LabelStudioPipeline:
        hub = (
            HubSync(settings.hub_repo, commit_interval_s=settings.hub_commit_interval_s)
            if settings.hub_repo
            else None
        )
        dataset = DatasetSink(
            settings.dataset,
            tables=COLUMNS,
            flush_interval_s=settings.flush_interval_s,
            title="Label Studio annotations",
            description=DATASET_DESCRIPTION,
            hub=hub,
        )
        stage = (
            make_stage_sink(settings.stage_url, settings.stage_schema)
            if settings.stage_url
            else None
        )
        return cls(dataset=dataset, stage=stage, pages=PageSource(settings.pdf_folder))

    def install(self, app: Forebay, settings: LabelStudioSettings) -> None:
        """Declare the source and the queue's batch handler on ``app``."""
        app.source(
            settings.source,
            queue=settings.queue,
            auth=SharedSecret(header=settings.header, secret=settings.webhook_secret()),
            key=change_key,
            split=split_event,
            max_body_bytes=settings.max_body_bytes,
        )
        app.handler(
            settings.queue,
            batch_size=settings.batch_size,
            concurrency=settings.concurrency,
            max_attempts=10,
            max_defers=100_000,  # an outage of the staging database defers, never kills
            timeout_s=600.0,
        )(self.handle)

    async def close(self) -> None:
        if self._builder is not None:
            self._builder.shutdown(wait=False)
            self._builder = None
        await self.dataset.close()
        if self.stage is not None:
            await self.stage.close()

    # -- the handler ----------------------------------------------------------------------
    async def handle(self, jobs: Sequence[Job]) -> dict[int, BaseException]:
        """The batch handler: both sinks, dataset first. Returns the jobs that failed."""
        if self._builder is None:
            self._builder = ThreadPoolExecutor(1, thread_name_prefix="forebay-labelstudio-build")
        loop = asyncio.get_running_loop()
        built, failures = await loop.run_in_executor(self._builder, self._build, jobs)
        if not built:
            return failures
        try:
            await self._write(_merge(list(built.values())))
        except SinkUnavailable as exc:
            raise self._defer(jobs, exc) from exc
        except SinkRejected:
            # Write each job alone: only the jobs whose own rows are refused fail.
            for job_id, records in built.items():
                try:
                    await self._write(records)
                except SinkRejected as exc:
                    failures[job_id] = exc
                except SinkUnavailable as exc:
                    failures[job_id] = self._defer(jobs, exc)
        return failures

    def _build(self, jobs: Sequence[Job]) -> tuple[dict[int, Records], dict[int, BaseException]]:
        """Each job's records (reading PDFs for page geometry may block: runs in a thread)."""
        built: dict[int, Records] = {}
        failures: dict[int, BaseException] = {}
        for job in jobs:
            try:
                records, report = build_records(
                    [Received(job.payload, job.created_at or utcnow())], self.pages
                )
            except Exception as exc:
                failures[job.id] = exc
                continue
            _log_report(job, report)
            built[job.id] = records
        return built, failures

    async def _write(self, records: Records) -> None:
        result = await self.dataset.write(records)
        self._count("dataset", result)
        if self.stage is None:
            return
        statements, dropped = stage_statements(records)
        self._count("postgres", dropped)
        if statements:
            self._count("postgres", await self.stage.write(statements))

    def _count(self, sink: str, result: WriteResult) -> None:
        self.written = WriteResult.merge(
            [
                self.written,
                WriteResult({(f"{sink}.{t}", o): n for (t, o), n in result.counts.items()}),
            ]
        )
        for outcome in _SKIP_REASONS:
            skipped = result.skipped(outcome)
            if skipped:
                count_sink_writes_skipped(sink, outcome, skipped)

    def _defer(self, jobs: Sequence[Job], error: SinkError) -> Defer:
        defers = max((j.defers for j in jobs), default=0)
        delay = min(self.max_outage_retry_s, self.outage_retry_s * 2 ** min(defers, 16))
        log.warning("%s; %d job(s) will be tried again in about %.1fs", error, len(jobs), delay)
        return Defer(random.uniform(delay / 2, delay), reason=str(error))


def build_app(settings: LabelStudioSettings | None = None, *, url: str | None = None) -> Forebay:
    """A :class:`~forebay.Forebay` app with the Label Studio pipeline installed.

    Defaults: the SQLite backend (``FOREBAY_URL``), a local dataset folder, and Postgres
    staging tables when ``FOREBAY_STAGE_URL`` is set (see :class:`LabelStudioSettings`); their
    schema is created when the app opens (the service's start-up), not at the first event.
    The ``labelstudio.reconcile`` queue runs reconciliation when a job is put on it, at every
    tick of the ``labelstudio.reconcile`` schedule (``FOREBAY_LABELSTUDIO_RECONCILE_EVERY_S``,
    or ``forebay labelstudio reconcile --every N``). Raises ConfigError without the webhook's
    shared secret.
    """
    settings = settings or LabelStudioSettings.from_env()
    app = _StagedApp(url, settings)
    LabelStudioPipeline.from_settings(settings).install(app, settings)
    install_reconcile(app, settings)
    return app


class _StagedApp(Forebay):
    """A Forebay app that also creates the staging schema (migrations) when it opens."""

    def __init__(self, url: str | None, settings: LabelStudioSettings) -> None:
        super().__init__(url)
        self._stage = (
            None if settings.stage_url is None else (settings.stage_url, settings.stage_schema)
        )

    async def open(self) -> Backend:
        backend = await super().open()
        if self._stage is not None:
            dsn, schema = self._stage
            self._stage = None  # once: concurrent callers do not wait for it
            try:
                await create_stage_schema(dsn, schema)
            except SinkUnavailable as exc:
                log.warning("%s; the staging tables are created at the first write instead", exc)
        return backend


def _merge(parts: list[Records]) -> Records:
    merged: Records = {table: [] for table in COLUMNS}
    for records in parts:
        for table, rows in records.items():
            merged[table].extend(rows)
    return merged


def _log_report(job: Job, report: Report) -> None:
    for action in report.unknown_actions:
        log.warning(
            "job %s: Label Studio sent an unknown action %r; stored in the events table",
            job.id,
            action,
        )
    for action in report.empty_actions:
        log.info(
            "job %s: Label Studio sent %s without its payload (turn on 'Send payload' on the "
            "webhook); `forebay labelstudio reconcile` recovers the change",
            job.id,
            action,
        )
    if report.boxes_without_geometry:
        log.info(
            "job %s: %d box(es) not converted to PDF points: the task has no page geometry "
            "(give data.page_geometry, data.pdf, or FOREBAY_LABELSTUDIO_PDFS)",
            job.id,
            report.boxes_without_geometry,
        )
