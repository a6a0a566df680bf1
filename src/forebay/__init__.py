"""forebay: a durable buffer in front of ingestion.

Producers hand it work and get an answer in milliseconds, after the work is safely stored;
workers then push that work into systems of record with retries, backoff, idempotency, dead
letters, progress and backpressure — on an embedded SQLite file by default, or PostgreSQL or
Redis Streams.

    from forebay import Forebay

    app = Forebay()

    @app.handler("documents", max_attempts=5)
    async def ingest(job):
        ...
"""

from forebay.app import Forebay
from forebay.backoff import Backoff
from forebay.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    Defer,
    EnqueueError,
    ForebayError,
    InvalidPayload,
    InvalidResult,
    JobNotFound,
    MissingExtra,
    PayloadValidationError,
    PermanentError,
    QueueFull,
    ResourceExhausted,
    ResultTooLarge,
    RunNotFound,
    RunSealed,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    TenantQuotaFull,
    TransientError,
    UnknownParent,
    UnknownRun,
    WaitTimeout,
)
from forebay.fleet import QueueTotals, Throughput, WorkerInfo
from forebay.flow import FlowLimits, Rate
from forebay.job import AttemptError, DeadCursor, Job, JobFilter, JobState, NewJob, QueueCounts
from forebay.queue_config import QueueConfig
from forebay.runs import NewRun, Run, RunState
from forebay.schedules import Cron, Every, Schedule
from forebay.sources import HmacSignature, SharedSecret, Source
from forebay.webhooks import WebhookSettings
from forebay.worker import Worker, WorkerSettings

__all__ = [
    "AttemptError",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "ConfigError",
    "Cron",
    "DeadCursor",
    "Defer",
    "EnqueueError",
    "Every",
    "FlowLimits",
    "Forebay",
    "ForebayError",
    "HmacSignature",
    "InvalidPayload",
    "InvalidResult",
    "Job",
    "JobFilter",
    "JobNotFound",
    "JobState",
    "MissingExtra",
    "NewJob",
    "NewRun",
    "PayloadValidationError",
    "PermanentError",
    "QueueConfig",
    "QueueCounts",
    "QueueFull",
    "QueueTotals",
    "Rate",
    "ResourceExhausted",
    "ResultTooLarge",
    "Run",
    "RunNotFound",
    "RunSealed",
    "RunState",
    "Schedule",
    "SharedSecret",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "Source",
    "TenantQuotaFull",
    "Throughput",
    "TransientError",
    "UnknownParent",
    "UnknownRun",
    "WaitTimeout",
    "WebhookSettings",
    "Worker",
    "WorkerInfo",
    "WorkerSettings",
]

__version__ = "0.1.0"
