"""Flow control: rate limits, concurrency caps, fair leasing and priority aging, per queue.

The limits are a queue's stored settings (:class:`FlowLimits`, written by the workers that
declare them), and the job store enforces them when it leases, so they hold across every worker
process on every host. A job carries its keys (``rate_key``, ``concurrency_key``, ``fair_key``,
and its ``tenant``), worked out once when it is enqueued (:func:`resolve_key`); leasing never
runs user code.

One lease, whatever the engine (the SQL backends call :func:`plan`; the Redis backend's
``lease.lua`` does the same steps):

1. ``budget`` = the jobs asked for, at most ``concurrency - running`` (the queue's running
   jobs, across the fleet) and at most the queue's free rate tokens.
2. The due queued jobs are taken best first. Best: the higher *effective priority*
   ``priority + floor(waited / aging_s)`` (``waited`` = now - run_at; without aging, the
   priority), then the earlier ``run_at``, then the lower id. With ``fair``, the jobs are grouped
   by ``fair_key`` (no key is a group of its own) and the groups take turns, one job each per
   round, starting with the group served least recently; within a group, best first.
3. A job whose ``rate_key`` has no token left, or whose ``concurrency_key`` has
   ``concurrency_per_key`` jobs running, is skipped: it stays queued, no attempt spent.
4. Every job taken spends a token of the queue's rate and one of its key's rate.

Rates are token buckets kept as GCRA "theoretical arrival times" (one float per bucket; see
:class:`Rate`): over any window of length ``w``, at most ``count * w / period + burst`` jobs start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

from forebay.errors import ConfigError, InvalidPayload

JSON: TypeAlias = Any

__all__ = [
    "MAX_KEY_LENGTH",
    "NO_LIMITS",
    "Candidate",
    "FlowLimits",
    "FlowState",
    "KeySpec",
    "Plan",
    "Rate",
    "check_key",
    "check_tenant",
    "effective_priority",
    "plan",
    "resolve_key",
]

MAX_KEY_LENGTH: Final = 200
"""The longest flow key or tenant, in characters."""

_SLACK_S: Final = 1e-6
"""Times closer than this are equal: epoch seconds near 2e9 carry about 0.2 µs of rounding, so
a token due at ``t`` is free at ``t`` however the sum that made ``t`` rounded."""
_UNITS: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")
_TENANT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` starts per ``period_s`` seconds, ``burst`` of them at once.

    Written ``"50/s"``, ``"10/m"``, ``"1000/h"``, ``"5/10s"`` (5 per 10 seconds) or ``"100/d"``;
    ``burst`` defaults to ``count`` (a quiet bucket refills to one period's worth).

    Kept as GCRA: ``interval = period_s / count``, ``tolerance = (burst - 1) * interval``; a
    bucket is one float ``tat`` (None: full). A start at ``now`` conforms when
    ``max(tat, now) - now <= tolerance``; it moves ``tat`` to ``max(tat, now) + interval``.
    """

    count: int
    period_s: float
    burst: int = 0  # 0: count

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(
                f"rate: count must be a whole number of at least 1, not {self.count!r}"
            )
        if not (isinstance(self.period_s, int | float) and math.isfinite(self.period_s)):
            raise ConfigError("rate: period must be a finite number of seconds")
        if self.period_s <= 0:
            raise ConfigError("rate: period must be positive")
        if self.burst == 0:
            object.__setattr__(self, "burst", self.count)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigError("rate: burst must be a whole number of at least 1")
        object.__setattr__(self, "period_s", float(self.period_s))

    @classmethod
    def parse(cls, text: str | Rate) -> Rate:
        """``"50/s"`` and the like (see the class docstring); ConfigError saying why not."""
        if isinstance(text, Rate):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"a rate is written like '50/s' or '10/m', not {text!r}")
        match = _RATE.match(text.lower())
        if match is None or match[3] not in _UNITS:
            raise ConfigError(
                f"bad rate {text!r}: write COUNT/PERIOD, e.g. '50/s', '10/m', '1000/h', '5/10s'"
            )
        multiple = float(match[2]) if match[2] else 1.0
        return cls(int(match[1]), multiple * _UNITS[match[3]])

    @property
    def interval(self) -> float:
        return self.period_s / self.count

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval

    def available(self, tat: float | None, now: float) -> int:
        """Tokens free at ``now`` in a bucket at ``tat``."""
        if tat is None or tat <= now:
            return self.burst
        spare = self.tolerance - (tat - now)
        if spare < -_SLACK_S:
            return 0
        return min(self.burst, math.floor((spare + _SLACK_S) / self.interval) + 1)

    def spend(self, tat: float | None, now: float, n: int) -> float:
        """The bucket's ``tat`` once ``n`` tokens are spent at ``now``."""
        base = now if tat is None or tat < now else tat
        return base + n * self.interval

    def free_at(self, tat: float | None, now: float) -> float:
        """When the bucket has a token again (``now`` if it has one)."""
        if tat is None:
            return now
        return max(now, tat - self.tolerance)

    def to_text(self) -> str:
        for unit in ("s", "m", "h", "d"):
            if self.period_s == _UNITS[unit]:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period_s:g}s"

    def to_dict(self) -> dict[str, JSON]:
        return {"count": self.count, "period_s": self.period_s, "burst": self.burst}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rate:
        return cls(int(data["count"]), float(data["period_s"]), int(data.get("burst") or 0))


def _positive_int(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """One queue's flow limits, as stored (see the module docstring).

    * ``rate``: starts per period for the whole queue (``rate_limit=``).
    * ``rate_per_key``: starts per period for each ``rate_key`` (``rate_limit_per_key=``).
    * ``concurrency``: jobs of the queue running at once across the fleet
      (``global_concurrency=``).
    * ``concurrency_per_key``: jobs running at once per ``concurrency_key``.
    * ``fair``: lease round-robin over ``fair_key`` (set by ``fair_key=``).
    * ``aging_s``: a queued job's effective priority rises by one per ``aging_s`` seconds it
      has been due (``priority_aging=``).
    """

    rate: Rate | None = None
    rate_per_key: Rate | None = None
    concurrency: int | None = None
    concurrency_per_key: int | None = None
    fair: bool = False
    aging_s: float | None = None

    def __post_init__(self) -> None:
        _positive_int("global_concurrency", self.concurrency)
        _positive_int("concurrency_per_key", self.concurrency_per_key)
        if self.aging_s is not None and not (
            isinstance(self.aging_s, int | float)
            and not isinstance(self.aging_s, bool)
            and math.isfinite(self.aging_s)
            and self.aging_s > 0
        ):
            raise ConfigError("priority_aging must be a positive number of seconds")

    @property
    def active(self) -> bool:
        """Whether any limit is set (a lease without any takes the plain path)."""
        return self != NO_LIMITS

    @property
    def keyed(self) -> bool:
        """Whether leasing looks at the jobs' keys (per-key limits, or fairness)."""
        return self.rate_per_key is not None or self.concurrency_per_key is not None or self.fair

    def to_dict(self) -> dict[str, JSON]:
        """The stored form (JSON), also what ``GET /v1/queues`` shows under ``limits``."""
        return {
            "rate": None if self.rate is None else self.rate.to_dict(),
            "rate_per_key": None if self.rate_per_key is None else self.rate_per_key.to_dict(),
            "concurrency": self.concurrency,
            "concurrency_per_key": self.concurrency_per_key,
            "fair": self.fair,
            "aging_s": self.aging_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FlowLimits:
        if not data:
            return NO_LIMITS
        rate, per_key = data.get("rate"), data.get("rate_per_key")
        return cls(
            rate=None if rate is None else Rate.from_dict(rate),
            rate_per_key=None if per_key is None else Rate.from_dict(per_key),
            concurrency=data.get("concurrency"),
            concurrency_per_key=data.get("concurrency_per_key"),
            fair=bool(data.get("fair")),
            aging_s=None if data.get("aging_s") is None else float(data["aging_s"]),
        )

    def describe(self) -> str:
        """One line for ``forebay stats``: ``rate 50/s, 2 per key, fair`` and the like."""
        parts = []
        if self.rate is not None:
            parts.append(f"rate {self.rate.to_text()}")
        if self.rate_per_key is not None:
            parts.append(f"{self.rate_per_key.to_text()} per key")
        if self.concurrency is not None:
            parts.append(f"cap {self.concurrency}")
        if self.concurrency_per_key is not None:
            parts.append(f"{self.concurrency_per_key} running per key")
        if self.fair:
            parts.append("fair")
        if self.aging_s is not None:
            parts.append(f"aging +1/{self.aging_s:g}s")
        return ", ".join(parts) or "-"


NO_LIMITS: Final = FlowLimits()


def effective_priority(priority: int, run_at: float, now: float, aging_s: float | None) -> int:
    """``priority + floor((now - run_at) / aging_s)`` for a due job (no aging: ``priority``)."""
    if aging_s is None or now <= run_at:
        return priority
    return priority + int((now - run_at) // aging_s)


# ---------------------------------------------------------------------------------------------
# Keys


KeySpec: TypeAlias = str | Callable[[Any], object]
"""A flow key as declared on a queue: a path such as ``"payload.user_id"`` or ``"tenant"``, or
a callable given the :class:`~forebay.job.NewJob` (its ``payload``, ``tenant``, ``key``...)
returning the key (a str or an int; None: no key)."""


def check_key(name: str, value: object) -> str | None:
    """A flow key as stored: a non-empty str of at most MAX_KEY_LENGTH characters, or None. An
    int becomes its decimal text; anything else is InvalidPayload naming ``name``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise InvalidPayload(
            f"{name} must be a non-empty string of at most {MAX_KEY_LENGTH} characters "
            f"(or a whole number), not {value!r:.80}"
        )
    if "\x00" in value:
        raise InvalidPayload(f"{name} must not contain NUL characters")
    return value


def check_tenant(value: object) -> str | None:
    """A tenant name: letters, digits and ``_.:@-``, at most 100, starting alphanumeric."""
    if value is None:
        return None
    if not isinstance(value, str) or not _TENANT.match(value):
        raise InvalidPayload(
            "tenant must be 1 to 100 letters, digits or _.:@- starting with a letter or digit, "
            f"not {value!r:.80}"
        )
    return value


def check_key_spec(name: str, spec: object) -> None:
    """ConfigError unless ``spec`` is a callable or a path (``payload.a.b``, ``tenant``)."""
    if spec is None or callable(spec):
        return
    if not isinstance(spec, str) or not _path(spec):
        raise ConfigError(
            f"{name} must be a callable or a path such as 'payload.user_id' or 'tenant', "
            f"not {spec!r}"
        )


def _path(spec: str) -> list[str] | None:
    parts = spec.split(".")
    if parts[0] in ("tenant", "key", "queue") and len(parts) == 1:
        return parts
    if parts[0] == "payload" and len(parts) > 1 and all(parts[1:]):
        return parts
    return None


def resolve_key(name: str, spec: KeySpec | None, job: Any) -> str | None:
    """The key ``spec`` gives for ``job`` (None: the path is missing or the callable said None).

    A path walks ``payload`` (mappings by key, lists by index); a callable is given the job.
    What it finds must be a str or an int (see :func:`check_key`), else InvalidPayload.
    """
    value: object
    if spec is None:
        return None
    if callable(spec):
        try:
            value = spec(job)
        except InvalidPayload:
            raise
        except Exception as exc:  # the caller's code: say which key failed
            raise InvalidPayload(f"{name}: the key function raised {exc!r}") from exc
        return check_key(name, value)
    parts = _path(spec) or []
    if parts[0] != "payload":
        value = getattr(job, parts[0], None)
        return check_key(name, value)
    value = job.payload
    for part in parts[1:]:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return check_key(name, value)


# ---------------------------------------------------------------------------------------------
# The lease plan (the SQL backends; lease.lua does the same)


class Candidate(NamedTuple):
    """A due queued job as a lease sees it (a tuple: a lease makes one per row it reads)."""

    id: int
    priority: int
    run_at: float
    rate_key: str | None = None
    concurrency_key: str | None = None
    fair_key: str | None = None


@dataclass(slots=True)
class FlowState:
    """What a lease reads from the store before it plans."""

    queue_tat: float | None = None
    """The queue's rate bucket (None: full)."""
    key_tats: dict[str, float] = field(default_factory=dict)
    """Each rate key's bucket (absent: full)."""
    running: int = 0
    """The queue's running jobs (counted when ``concurrency`` is set)."""
    running_per_key: dict[str, int] = field(default_factory=dict)
    """Running jobs per concurrency key (counted when ``concurrency_per_key`` is set)."""
    served: dict[str | None, float] = field(default_factory=dict)
    """When each fair key was last served (absent: never; such keys go first)."""


@dataclass(slots=True)
class Plan:
    """What one lease takes, and what it writes back."""

    ids: list[int] = field(default_factory=list)
    queue_tat: float | None = None
    """The queue bucket's new ``tat`` (None: unchanged)."""
    key_tats: dict[str, float] = field(default_factory=dict)
    """The rate keys' new ``tat`` (only those that spent)."""
    served: dict[str | None, float] = field(default_factory=dict)
    """The fair keys served, with their new marker."""
    throttled_until: float | None = None
    """When a token frees for jobs this lease held back by a rate (None: none held back by a
    rate, or the wait is on running jobs)."""


def budget(
    limits: FlowLimits, state: FlowState, limit: int, now: float
) -> tuple[int, float | None]:
    """How many jobs the queue-wide limits let a lease take, and (when the queue's rate is what
    bounds it to 0) when its next token frees."""
    room = limit
    if limits.concurrency is not None:
        room = min(room, limits.concurrency - state.running)
    if limits.rate is not None and room > 0:
        tokens = limits.rate.available(state.queue_tat, now)
        if tokens <= 0:
            return 0, limits.rate.free_at(state.queue_tat, now)
        room = min(room, tokens)
    return max(0, room), None


def blocked_keys(limits: FlowLimits, state: FlowState, now: float) -> tuple[set[str], set[str]]:
    """The rate keys without a token, and the concurrency keys at their cap, at ``now``: a
    lease skips their jobs (the SQL backends leave them out of the candidate query)."""
    no_token: set[str] = set()
    full: set[str] = set()
    if limits.rate_per_key is not None:
        rate = limits.rate_per_key
        no_token = {k for k, tat in state.key_tats.items() if rate.available(tat, now) <= 0}
    if limits.concurrency_per_key is not None:
        cap = limits.concurrency_per_key
        full = {k for k, n in state.running_per_key.items() if n >= cap}
    return no_token, full


class _Admission:
    """The per-key limits within one lease: which candidate may start, and what it spends."""

    def __init__(self, limits: FlowLimits, state: FlowState, now: float) -> None:
        self.rate, self.cap = limits.rate_per_key, limits.concurrency_per_key
        self.state, self.now = state, now
        self.tokens: dict[str, int] = {}
        self.running = dict(state.running_per_key)
        self.spent: dict[str, int] = {}
        self.held_until: list[float] = []

    def __call__(self, c: Candidate) -> bool:
        rate, key = self.rate, c.rate_key
        if rate is not None and key is not None:
            left = self.tokens.get(key)
            if left is None:
                left = self.tokens[key] = rate.available(self.state.key_tats.get(key), self.now)
            if left <= 0:
                self.held_until.append(rate.free_at(self.key_tat(key), self.now))
                return False
        if self.cap is not None and c.concurrency_key is not None:
            if self.running.get(c.concurrency_key, 0) >= self.cap:
                return False
            self.running[c.concurrency_key] = self.running.get(c.concurrency_key, 0) + 1
        if rate is not None and key is not None:
            self.tokens[key] -= 1
            self.spent[key] = self.spent.get(key, 0) + 1
        return True

    def key_tat(self, key: str) -> float:
        assert self.rate is not None
        return self.rate.spend(self.state.key_tats.get(key), self.now, self.spent.get(key, 0))

    def new_tats(self) -> dict[str, float]:
        """Each spent key's ``key_tat`` (Rate.spend, once per key: a lease may spend hundreds)."""
        assert self.rate is not None
        tats, now, step = self.state.key_tats, self.now, self.rate.interval
        out: dict[str, float] = {}
        for key, n in self.spent.items():
            tat = tats.get(key)
            out[key] = (now if tat is None or tat < now else tat) + n * step
        return out


def plan(
    limits: FlowLimits,
    state: FlowState,
    candidates: Iterable[Candidate],
    *,
    limit: int,
    now: float,
) -> Plan:
    """Which of ``candidates`` one lease of up to ``limit`` jobs takes, in lease order.

    ``candidates``: due queued jobs, at least the best ``limit`` of each priority (and, with
    ``fair``, of each fair key) that are not of a blocked key; more do no harm.

    ``throttled_until`` is set when a rate held a job back: a rate key without a token, or the
    queue's tokens used up before ``limit`` jobs were taken (not when the cap on running jobs
    is what bounded the lease: a finish frees that, not time).
    """
    out = Plan()
    room, wait = budget(limits, state, limit, now)
    if room <= 0:
        out.throttled_until = wait
        return out
    aging = limits.aging_s

    if aging is None:

        def order(c: Candidate) -> tuple[int, float, int]:
            return (-c.priority, c.run_at, c.id)

    else:

        def order(c: Candidate) -> tuple[int, float, int]:
            return (-effective_priority(c.priority, c.run_at, now, aging), c.run_at, c.id)

    admit = _Admission(limits, state, now)
    if not limits.fair:
        for c in sorted(candidates, key=order):
            if len(out.ids) >= room:
                break
            if admit(c):
                out.ids.append(c.id)
    else:
        out.served = _take_turns(candidates, order, admit, state, room, out.ids, now)
    taken = len(out.ids)
    if taken and limits.rate is not None:
        out.queue_tat = limits.rate.spend(state.queue_tat, now, taken)
    if admit.rate is not None:
        out.key_tats = admit.new_tats()
    if taken < limit:
        out.throttled_until = _next_token(limits, state, out, admit.held_until, now)
    return out


def _next_token(
    limits: FlowLimits, state: FlowState, out: Plan, held: list[float], now: float
) -> float | None:
    """When a token frees for jobs a lease that took less than asked may have held back: the
    earliest of the queue's bucket (when its tokens ran out: not when the cap on running jobs
    bounded the lease, which a finish frees, not time), the keys it skipped, and the rate keys
    without a token (the SQL backends leave their jobs out of the candidates, so the plan never
    sees them; a wake-up for a key with no job left is harmless)."""
    times = list(held)
    rate = limits.rate
    if rate is not None and len(out.ids) >= rate.available(state.queue_tat, now):
        times.append(rate.free_at(out.queue_tat, now))
    per_key = limits.rate_per_key
    if per_key is not None:
        times.extend(
            per_key.free_at(tat, now)
            for tat in state.key_tats.values()
            if per_key.available(tat, now) <= 0
        )
    later = [t for t in times if t > now + _SLACK_S]
    return min(later) if later else (min(times) if times else None)


def _take_turns(
    candidates: Iterable[Candidate],
    order: Callable[[Candidate], tuple[int, float, int]],
    admit: _Admission,
    state: FlowState,
    room: int,
    ids: list[int],
    now: float,
) -> dict[str | None, float]:
    """Fair leasing: the fair keys take turns, one job each per round, least recently served
    first; append the ids taken to ``ids`` and return the keys served with their new marker
    (later for a key served later in this lease)."""
    groups: dict[str | None, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.fair_key, []).append(c)
    turns = sorted(groups, key=lambda k: (state.served.get(k, -math.inf), k or ""))
    for k in turns:
        groups[k].sort(key=order)
    cursor = dict.fromkeys(turns, 0)
    served: dict[str | None, None] = {}  # in the order last served
    while len(ids) < room and turns:
        still: list[str | None] = []
        for k in turns:
            jobs, i = groups[k], cursor[k]
            if len(ids) < room:
                while i < len(jobs) and not admit(jobs[i]):
                    i += 1
                if i < len(jobs):
                    ids.append(jobs[i].id)
                    served.pop(k, None)
                    served[k] = None
                    i += 1
                cursor[k] = i
            if i < len(jobs):
                still.append(k)
        turns = still
    return {k: now + n * 1e-6 for n, k in enumerate(served)}


def keys_of(candidates: Sequence[Candidate]) -> set[str]:
    """The rate keys among ``candidates`` (the buckets a lease must read)."""
    return {c.rate_key for c in candidates if c.rate_key is not None}
