"""Helpers for the Label Studio and sink tests (no tests here).

* ``stage`` (:func:`stage_fixture`) — a fresh schema on the real PostgreSQL for one test, dropped afterwards;
* :class:`Outage` — a TCP relay in front of PostgreSQL that the test opens and cuts, to make
  the database unreachable and reachable again (connections are really refused and reset);
* :class:`Settled` — an observer that lets a test wait for job outcomes instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from forebay.job import Job
from forebay.observer import Outcome
from tests.servers import PG_URL, require_server, unique_name


@pytest.fixture(name="stage")
async def stage_fixture() -> AsyncIterator[tuple[str, str]]:
    """``(dsn, schema)``: a schema name no other test uses; dropped after the test."""
    require_server("PostgreSQL", PG_URL)
    schema = unique_name("stage_test")
    try:
        yield PG_URL, schema
    finally:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def fetch(dsn: str, schema: str, sql: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


class Outage:
    """A relay on 127.0.0.1 to PostgreSQL: ``cut()`` refuses and resets, ``restore()`` relays."""

    def __init__(self, target: str = PG_URL) -> None:
        parts = urlsplit(target)
        self._target = target
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        parts = urlsplit(self._target)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self._server is None:  # accepted just before a cut
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
            except OSError:
                return
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            # Always, even when cut while still connecting upstream: a transport left open
            # is reported when it is garbage-collected, in whatever test runs then.
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.transport.abort()
            self._pipes.discard(task)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Settled:
    """An observer that records outcomes and wakes waiters as they come."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[int, Outcome]] = []
        self._changed = asyncio.Event()

    def enqueued(self, jobs: Sequence[Job]) -> None:
        pass

    def settled(self, job: Job, outcome: Outcome, duration_s: float) -> None:
        self.outcomes.append((job.id, outcome))
        self._changed.set()

    def count(self, outcome: Outcome) -> int:
        """How many distinct jobs have had ``outcome`` (at least once)."""
        return len({job_id for job_id, o in self.outcomes if o == outcome})

    async def until(self, outcome: Outcome, n: int, timeout_s: float = 30.0) -> None:
        """Wait until ``n`` distinct jobs have had ``outcome``."""
        async with asyncio.timeout(timeout_s):
            while self.count(outcome) < n:
                self._changed.clear()
                await self._changed.wait()
