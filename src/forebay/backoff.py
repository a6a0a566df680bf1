"""Retry delays: exponential with full jitter and a cap, or a fixed schedule.

``delay = min(cap_s, base_s * factor ** (attempt - 1))``, then (with ``jitter``) a uniform draw
from ``[0, delay]`` ("full jitter": retries of many jobs failing together spread out instead of
stampeding the recovering downstream). ``Backoff.fixed(5, 25)`` gives 5 s after the first
failure, 25 s after the second and every later one, without jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from forebay.errors import ConfigError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: bool = True
    schedule_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0 or self.factor < 1:
            raise ConfigError("Backoff needs base_s >= 0, cap_s >= 0 and factor >= 1")
        if any(s < 0 for s in self.schedule_s):
            raise ConfigError("Backoff schedule delays must not be negative")

    @classmethod
    def fixed(cls, *delays_s: float) -> Backoff:
        """A fixed schedule: the n-th retry waits ``delays_s[n-1]`` (the last one repeats)."""
        if not delays_s:
            raise ConfigError("Backoff.fixed needs at least one delay")
        return cls(jitter=False, schedule_s=tuple(float(d) for d in delays_s))

    def ceiling_s(self, attempt: int) -> float:
        """The delay before jitter after ``attempt`` (1-based) failed."""
        n = max(1, attempt)
        if self.schedule_s:
            return self.schedule_s[min(n, len(self.schedule_s)) - 1]
        # Cap the exponent so huge attempt counts do not overflow.
        return min(self.cap_s, self.base_s * self.factor ** min(n - 1, 64))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay to wait after ``attempt`` (1-based) failed."""
        ceiling = self.ceiling_s(attempt)
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)
