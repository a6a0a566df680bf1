"""A stored schedule as a :class:`~forebay.schedules.Schedule`: the one mapping every backend
feeds, from a row of :data:`SCHEDULE_COLUMNS` in that order (the Redis backend keeps them in
a JSON object and a hash of last ticks, and makes such a row of them first); and back, a
schedule's definition by column name (:func:`schedule_definition`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from forebay.schedules import Schedule

__all__ = ["SCHEDULE_COLUMNS", "schedule_definition", "schedule_from_row"]

SCHEDULE_COLUMNS: Final = (
    "name",
    "queue",
    "cron",
    "every_s",
    "timezone",
    "payload",
    "priority",
    "catch_up",
    "last_tick",
)


def schedule_definition(schedule: Schedule) -> dict[str, Any]:
    """What a backend stores of a schedule, by column name: every column but ``last_tick``
    (which only a firing moves)."""
    s = schedule
    return {
        "name": s.name,
        "queue": s.queue,
        "cron": s.cron,
        "every_s": None if s.every is None else s.every.total_seconds(),
        "timezone": s.tz,
        "payload": s.payload_json,
        "priority": s.priority,
        "catch_up": s.catch_up,
    }


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    """A schedule from its stored columns; ``last_tick`` as epoch seconds (a number or its
    text) or an aware datetime, or None."""
    name, queue, cron, every_s, tz, payload, priority, catch_up, last_tick = row
    return Schedule(
        name=name,
        queue=queue,
        cron=cron,
        every=None if every_s is None else timedelta(seconds=float(every_s)),
        tz=tz,
        payload_json=payload,
        priority=int(priority),
        catch_up=int(catch_up),
        last_tick=_time(last_tick),
    )


def _time(value: object) -> datetime | None:
    if value is None or value is False or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(str(value)), UTC)
