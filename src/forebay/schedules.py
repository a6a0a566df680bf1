"""Schedules: jobs enqueued on a cron expression or at a fixed interval (DESIGN §10).

A :class:`Schedule` is stored in the job store (name, queue, cron or interval, timezone,
payload, and the last tick it fired); every worker process runs a scheduler
(:mod:`forebay.worker.scheduler`) that reads the stored schedules and fires their due ticks.

This module holds the values and the pure decision, testable without a store:

* **ticks** are the instants a schedule fires at. A cron schedule ticks when its expression
  matches the wall clock of its timezone (parsed and walked by ``cronsim``, which follows
  cron's rules at DST changes: a time skipped by a spring-forward runs at the first instant
  after the gap, a time repeated by a fall-back runs once). An interval schedule ticks at
  every multiple of its interval since the Unix epoch, the same instants in every process.
* :func:`due` says, for a schedule and its stored last tick, which ticks to enqueue now: those
  after the last tick up to now, at most ``catch_up`` of them (the newest); older missed ticks
  are skipped and counted. A schedule never fired before is *armed*: its last tick is set to
  the newest tick up to now, and it fires from the next one on.
* :func:`tick_key` is a tick's job key, ``schedule:<name>:<tick time, ISO 8601 UTC>``: the
  enqueue of a tick is idempotent by (queue, key), whoever enqueues it.

Sits with the values (``job``, ``errors``) because the backend seam carries them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from forebay import jsonio
from forebay.errors import ConfigError, InvalidPayload
from forebay.job import JSON, NewJob, dump_payload, validate_queue_name

__all__ = [
    "Cron",
    "Due",
    "Every",
    "Firing",
    "Schedule",
    "due",
    "firing",
    "next_tick",
    "tick_key",
]

MIN_INTERVAL = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SKIPPED_COUNT_LIMIT = 10_000
"""Missed cron ticks counted one by one for the log, at most (past it: "at least")."""


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval, for ``@app.handler(queue, schedule=Every(timedelta(seconds=30)))``."""

    interval: timedelta


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression (five fields) read in a timezone, for ``@app.handler(..., schedule=)``."""

    expression: str
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule. Build it with :meth:`create` (or :meth:`forebay.Forebay.schedule`).

    ``last_tick`` is the store's state, not part of the definition: the newest tick fired (or
    armed), None for a schedule no scheduler has seen yet. Saving a schedule keeps it.
    """

    name: str
    queue: str
    cron: str | None = None
    every: timedelta | None = None
    tz: str = "UTC"
    payload_json: str = "null"
    priority: int = 0
    catch_up: int = 1
    last_tick: datetime | None = field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        queue: str,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        payload: object = None,
        name: str | None = None,
        tz: str = "UTC",
        catch_up: int = 1,
        priority: int = 0,
    ) -> Schedule:
        """Check every field; raise ConfigError saying what is wrong."""
        schedule = cls(
            name=queue if name is None else name,
            queue=queue,
            cron=cron,
            every=every,
            tz=tz,
            payload_json=_payload(payload),
            priority=priority,
            catch_up=catch_up,
        )
        schedule.check()
        return schedule

    def check(self) -> None:
        """Raise ConfigError unless this schedule can fire (see :meth:`create`)."""
        where = f"schedule {self.name!r}"
        try:
            validate_queue_name(self.queue)
            validate_queue_name(self.name)
        except InvalidPayload as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if (self.cron is None) == (self.every is None):
            raise ConfigError(f"{where}: give cron=... or every=..., one of them")
        zone = timezone(self.tz, where)
        if self.every is not None:
            if not isinstance(self.every, timedelta) or self.every < MIN_INTERVAL:
                raise ConfigError(f"{where}: every must be a timedelta of at least 1 second")
            if self.tz != "UTC":
                raise ConfigError(
                    f"{where}: tz applies to cron schedules; an interval ticks at multiples "
                    "of itself since the Unix epoch, the same in every timezone"
                )
        else:
            _cron(self.cron or "", datetime.now(zone), where)
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int):
            raise ConfigError(f"{where}: catch_up must be an integer")
        if self.catch_up < 1:
            raise ConfigError(f"{where}: catch_up must be at least 1 (the newest missed tick)")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigError(f"{where}: priority must be an integer")

    @property
    def payload(self) -> JSON:
        """The payload every tick's job carries."""
        value: JSON = jsonio.loads(self.payload_json)
        return value

    def next_run(self, now: datetime) -> datetime:
        """When the next tick is due: the first after the last tick (in the past when no
        scheduler has fired it since), or after ``now`` for a schedule not armed yet."""
        return next_tick(self, self.last_tick or now)

    def to_dict(self, now: datetime) -> dict[str, JSON]:
        """The JSON view (``forebay schedules --json``, ``GET /v1/schedules``)."""
        return {
            "name": self.name,
            "queue": self.queue,
            "cron": self.cron,
            "every_s": None if self.every is None else self.every.total_seconds(),
            "tz": self.tz,
            "payload": self.payload,
            "priority": self.priority,
            "catch_up": self.catch_up,
            "last_tick": None if self.last_tick is None else _iso(self.last_tick),
            "next_tick": _iso(self.next_run(now)),
        }

    @property
    def spec(self) -> str:
        """The timing in words: the cron expression, or ``every 30s``."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {_seconds(self.every)}"


@dataclass(frozen=True, slots=True)
class Due:
    """What a scheduler does for one schedule now (:func:`due`)."""

    ticks: tuple[datetime, ...]
    """Ticks to enqueue, oldest first: at most ``catch_up``."""
    skipped: int
    """Missed ticks left out (older than those enqueued); at least this many for cron."""
    last: datetime | None
    """The schedule's new last tick; None when nothing changes (no tick since the last)."""


@dataclass(frozen=True, slots=True)
class Firing:
    """One atomic step of a schedule, as the store applies it (``Backend.fire_schedule``):
    if its stored last tick is still ``after``, it becomes ``tick`` and ``jobs`` are enqueued;
    else nothing happens (another process fired it first)."""

    name: str
    after: float | None
    """The last tick the scheduler read (epoch seconds), None for a schedule not armed yet."""
    tick: float
    """The new last tick (epoch seconds)."""
    jobs: tuple[NewJob, ...]
    """The ticks' jobs, each keyed by :func:`tick_key`; none when arming or skipping."""


def timezone(name: str, where: str = "schedule") -> ZoneInfo:
    """The IANA timezone ``name`` (``UTC``, ``Europe/Berlin``), or ConfigError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"{where}: unknown timezone {name!r} (use an IANA name)") from None


def tick_key(name: str, tick: datetime) -> str:
    """The job key of one tick: ``schedule:<name>:<tick time ISO 8601 UTC>``."""
    return f"schedule:{name}:{_iso(tick)}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def due(schedule: Schedule, now: datetime) -> Due:
    """The ticks of ``schedule`` to enqueue at ``now``, given its stored ``last_tick``."""
    newest = _newest_at(schedule, now)
    last = schedule.last_tick
    if newest is None or (last is not None and newest <= last):
        return Due((), 0, None)
    if last is None:  # armed: the next tick is the first to fire
        return Due((), 0, newest)
    ticks, skipped = (
        _interval_since(schedule, last, now)
        if schedule.every is not None
        else _cron_since(schedule, last, now)
    )
    return Due(ticks, skipped, newest)


def firing(schedule: Schedule, verdict: Due) -> Firing | None:
    """The store step that carries out ``verdict`` (None: nothing to do)."""
    if verdict.last is None:
        return None
    jobs = tuple(
        NewJob.create(
            schedule.queue,
            schedule.payload,
            key=tick_key(schedule.name, tick),
            priority=schedule.priority,
        )
        for tick in verdict.ticks
    )
    after = None if schedule.last_tick is None else schedule.last_tick.timestamp()
    return Firing(schedule.name, after, verdict.last.timestamp(), jobs)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """The first tick strictly after ``after``."""
    if schedule.every is not None:
        return _EPOCH + (_index(after, schedule.every) + 1) * schedule.every
    zone = timezone(schedule.tz)
    start = after.astimezone(zone)
    return next(_cron(schedule.cron or "", start, schedule.name)).astimezone(UTC)


def _newest_at(schedule: Schedule, now: datetime) -> datetime | None:
    """The newest tick at or before ``now``."""
    if schedule.every is not None:
        return _EPOCH + _index(now, schedule.every) * schedule.every
    start = (now + timedelta(microseconds=1)).astimezone(timezone(schedule.tz))
    walk = _cron(schedule.cron or "", start, schedule.name, reverse=True)
    return next(walk, None)


def _interval_since(
    schedule: Schedule, last: datetime, now: datetime
) -> tuple[tuple[datetime, ...], int]:
    every = schedule.every
    assert every is not None
    first = _index(last, every) + 1
    newest = _index(now, every)
    count = newest - first + 1
    taken = min(count, schedule.catch_up)
    ticks = tuple(_EPOCH + i * every for i in range(newest - taken + 1, newest + 1))
    return ticks, count - taken


def _index(moment: datetime, every: timedelta) -> int:
    """The number of the newest interval tick at or before ``moment`` (exact: timedeltas
    count whole microseconds)."""
    return (moment - _EPOCH) // every


def _cron_since(
    schedule: Schedule, last: datetime, now: datetime
) -> tuple[tuple[datetime, ...], int]:
    start = (now + timedelta(microseconds=1)).astimezone(timezone(schedule.tz))
    newest_first: list[datetime] = []
    skipped = 0
    for tick in _cron(schedule.cron or "", start, schedule.name, reverse=True):
        if tick <= last:
            break
        if len(newest_first) < schedule.catch_up:
            newest_first.append(tick.astimezone(UTC))
            continue
        skipped += 1
        if skipped >= _SKIPPED_COUNT_LIMIT:
            break
    return tuple(reversed(newest_first)), skipped


def _cron(expression: str, start: datetime, where: str, *, reverse: bool = False) -> CronSim:
    try:
        return CronSim(expression, start, reverse=reverse)
    except CronSimError as exc:
        raise ConfigError(f"{where}: bad cron expression {expression!r}: {exc}") from None


def _payload(payload: object) -> str:
    try:
        return dump_payload(payload)
    except InvalidPayload as exc:
        raise ConfigError(f"schedule payload: {exc}") from None


def _seconds(interval: timedelta) -> str:
    seconds = interval.total_seconds()
    return f"{seconds:g}s"
