"""A queue's stored settings: what every process that uses the store obeys.

Settings live in the job store, not in any one process's memory, so an operator's
``forebay queue pause Q`` stops every worker on every host, and a ``max_depth`` holds for every
producer (an app that declared it, a bare ``Forebay(url)``, ``forebay enqueue``, HTTP).

* ``paused``: workers lease nothing from the queue (the lease itself checks, in the store);
  enqueues are still accepted.
* ``max_depth``: unfinished (queued + running) jobs the queue may hold; an enqueue beyond it is
  refused with :class:`~forebay.errors.QueueFull`, checked inside the enqueue's own transaction
  or script.

* ``limits``: the queue's flow limits (:class:`~forebay.flow.FlowLimits`: rates, caps across
  the fleet, fair leasing, priority aging), written by the workers that declare them and
  enforced by the store when it leases.

A queue without a stored record has the defaults (not paused, no limit).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from forebay.errors import ConfigError
from forebay.flow import NO_LIMITS, FlowLimits
from forebay.job import JSON, validate_queue_name

__all__ = ["KEEP", "Keep", "QueueSettings", "check_settings"]


class Keep(enum.Enum):
    """The type of :data:`KEEP`."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP
"""Leave a setting as stored (``set_queue(q, max_depth=KEEP)``); ``None`` clears it."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """One queue's stored settings (see the module docstring)."""

    queue: str
    paused: bool = False
    max_depth: int | None = None
    updated_at: datetime | None = None
    limits: FlowLimits = NO_LIMITS

    def to_dict(self) -> dict[str, JSON]:
        return {
            "queue": self.queue,
            "paused": self.paused,
            "max_depth": self.max_depth,
            "limits": self.limits.to_dict(),
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }


def check_settings(queue: str, max_depth: int | Keep | None) -> None:
    """Raise ConfigError for a bad queue name or a max_depth below 1."""
    try:
        validate_queue_name(queue)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(max_depth, bool) or (
        max_depth is not None
        and max_depth is not KEEP
        and not (isinstance(max_depth, int) and max_depth >= 1)
    ):
        raise ConfigError(f"queue {queue!r}: max_depth must be a whole number of at least 1")
