"""Logging for the service: plain text or one JSON object per line, and enqueue log lines.

Every state change has one log line with ``job_id``, ``queue`` and ``attempt``: the worker logs
outcomes (logger ``forebay.worker``; completions at DEBUG, the rest at INFO) and
:class:`EnqueueLogger` logs new jobs (logger ``forebay.intake``, at DEBUG, so a busy intake does
not pay for them unless asked: ``--log-level debug``). With ``--log-format json`` each line is a
JSON object carrying those fields, ready for a log pipeline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from forebay.job import Job
from forebay.observer import Outcome

__all__ = ["EnqueueLogger", "JsonFormatter"]

log = logging.getLogger("forebay.intake")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class EnqueueLogger:
    """An observer that logs each new job (DEBUG): the none → queued state change."""

    def enqueued(self, jobs: Sequence[Job]) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        for job in jobs:
            log.debug(
                "job %s %s",
                job.id,
                "queued" if job.created else "already stored (same key)",
                extra={
                    "job_id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "state": str(job.state),
                    "key": job.key,
                },
            )

    def settled(self, job: Job, outcome: Outcome, duration_s: float) -> None:
        """Outcomes are logged by the worker itself."""
