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
    JobNotFound,
    MissingExtra,
    PermanentError,
    QueueFull,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    TransientError,
)
from forebay.job import DeadCursor, Job, JobFilter, JobState, NewJob, QueueCounts
from forebay.queue_config import QueueConfig
from forebay.sources import HmacSignature, SharedSecret, Source
from forebay.worker import Worker, WorkerSettings

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "ConfigError",
    "DeadCursor",
    "Defer",
    "EnqueueError",
    "Forebay",
    "ForebayError",
    "HmacSignature",
    "InvalidPayload",
    "Job",
    "JobFilter",
    "JobNotFound",
    "JobState",
    "MissingExtra",
    "NewJob",
    "PermanentError",
    "QueueConfig",
    "QueueCounts",
    "QueueFull",
    "SharedSecret",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "Source",
    "TransientError",
    "Worker",
    "WorkerSettings",
]

__version__ = "0.1.0"
