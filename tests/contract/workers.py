"""Running a worker in this process for the length of a ``with`` block, as the contract tests
that drive real workers do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from forebay import Worker


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """``worker`` running as a task; stopped, and waited for (30 s at most), on leaving."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
