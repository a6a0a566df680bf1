"""Intake limits: how many requests each API token (``FOREBAY_TOKEN_RATE``) and each webhook
source (``app.source(..., rate_limit=)``) may send, so one noisy producer cannot flood the store.

Each limit is a :class:`~forebay.flow.Rate` kept as a GCRA bucket per caller (one float: the
bucket's theoretical arrival time), in this process: every service instance counts its own, so
behind N instances a caller may send N times the rate. A request over the limit is answered 429
``rate_limited`` before its body is stored, with ``Retry-After`` and the headers of
draft-ietf-httpapi-ratelimit-headers::

    RateLimit-Policy: "token";q=100;w=1
    RateLimit: "token";r=0;t=1

(``q``: the quota, ``w``: its window in seconds, ``r``: requests left, ``t``: seconds until one is
free again). The policy is named ``token`` or ``source``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from forebay.flow import Rate
from forebay.http.errors import ApiError

__all__ = ["IntakeLimiter", "rate_limit_headers"]


def rate_limit_headers(policy: str, rate: Rate, remaining: int, wait_s: float) -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` headers of ``policy`` (``token``, ``source``)."""
    window = max(1, math.ceil(rate.period_s))
    return {
        "RateLimit-Policy": f'"{policy}";q={rate.count};w={window}',
        "RateLimit": f'"{policy}";r={remaining};t={max(0, math.ceil(wait_s))}',
    }


class IntakeLimiter:
    """One GCRA bucket per (policy, caller), in memory.

    The buckets are read and written with no await in between, so requests served
    concurrently by the one event loop never spend the same token twice. A bucket whose time
    has passed is as good as absent; the map holds one float per token or source, a bounded
    set fixed by the configuration.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[tuple[str, str], float] = {}

    def admit(self, policy: str, caller: str, rate: Rate, *, what: str) -> None:
        """Spend one of ``caller``'s tokens, or raise ApiError 429 ``rate_limited`` (``what``
        names the caller in the message, e.g. ``this API token``)."""
        now = self._clock()
        tat = self._tats.get((policy, caller))
        if rate.available(tat, now) < 1:
            wait_s = rate.free_at(tat, now) - now
            retry_s = max(1, math.ceil(wait_s))
            raise ApiError(
                429,
                "rate_limited",
                f"{what} is over its rate of {rate.to_text()}; nothing was stored, retry after "
                f"{retry_s}s",
                headers={
                    "Retry-After": str(retry_s),
                    **rate_limit_headers(policy, rate, 0, retry_s),
                },
            )
        self._tats[(policy, caller)] = rate.spend(tat, now, 1)
