"""Ending background tasks for certain.

``task.cancel()`` asks once, and on Python 3.11 a library can drop the request: there,
``asyncio.wait_for`` (which redis-py uses around socket writes) swallows a cancellation that
lands just as its inner call finishes. A loop whose only cancellation was swallowed runs on, and
whoever awaits it waits forever. :func:`cancel_and_wait` asks again until each task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], *, every_s: float = 0.05) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again each ``every_s``
    seconds while one still runs. Their exceptions are retrieved (not raised), as with
    ``asyncio.gather(..., return_exceptions=True)``."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # mark it retrieved
