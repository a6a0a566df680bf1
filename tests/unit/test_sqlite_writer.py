"""The SQLite writer thread: group commit, per-caller outcomes, and nothing lost at stop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forebay.backends.sqlite.writer import Writer
from forebay.errors import BackendError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
    return path


@pytest.fixture
def commits() -> list[int]:
    return []


@pytest.fixture
def writer(db: Path, commits: list[int]) -> Iterator[Writer]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.set_trace_callback(lambda sql: commits.append(1) if sql == "COMMIT" else None)
        return conn

    w = Writer(connect)
    w.start()
    yield w
    w.stop()


def insert(v: int):  # type: ignore[no-untyped-def]
    def op(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO t (v) VALUES (?) RETURNING v", (v,)).fetchone()[0])

    return op


def stored(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


async def test_concurrent_writes_share_commits_and_each_caller_gets_its_own_result(
    writer: Writer, db: Path, commits: list[int]
) -> None:
    results = await asyncio.gather(*(writer.submit(insert(i)) for i in range(300)))
    assert results == list(range(300))
    assert stored(db) == list(range(300))
    assert 1 <= len(commits) <= 3  # submitted in one turn of the loop: one group (or a few)


async def test_a_failing_write_fails_only_its_caller(writer: Writer, db: Path) -> None:
    await writer.submit(insert(7))
    results = await asyncio.gather(
        writer.submit(insert(1)),
        writer.submit(insert(7)),
        writer.submit(insert(2)),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], BackendError) and "UNIQUE" in str(results[1])
    assert stored(db) == [1, 2, 7]


async def test_writes_submitted_just_before_stop_are_still_committed(
    writer: Writer, db: Path
) -> None:
    futures = [writer.submit(insert(i)) for i in range(5)]
    writer.stop()  # before the loop's turn ends: the pending writes are handed over first
    assert stored(db) == [0, 1, 2, 3, 4]
    assert await asyncio.gather(*futures) == [0, 1, 2, 3, 4]
    with pytest.raises(BackendError, match="closed"):
        writer.submit(insert(9))


async def test_writes_from_several_event_loops_are_each_answered_on_their_own_loop(
    writer: Writer, db: Path
) -> None:
    answers: dict[int, list[int]] = {}

    def in_thread(n: int) -> None:
        async def main() -> list[int]:
            return list(
                await asyncio.gather(*(writer.submit(insert(n * 100 + i)) for i in range(50)))
            )

        answers[n] = asyncio.run(main())

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(1, 4)]
    for t in threads:
        t.start()
    mine = await asyncio.gather(*(writer.submit(insert(i)) for i in range(50)))
    for t in threads:
        t.join()
    assert mine == list(range(50))
    assert answers == {n: [n * 100 + i for i in range(50)] for n in range(1, 4)}
    assert len(stored(db)) == 200


async def test_a_lease_that_fails_after_its_first_piece_keeps_what_it_leased(
    tmp_path: Path,
) -> None:
    """A big lease is committed in pieces: when a later piece fails, the jobs of the earlier
    ones are handed out (they are leased to this worker), not stranded until their lease ends."""
    from forebay.backends.sqlite.backend import _ROWS_PER_OP, SQLiteBackend
    from forebay.errors import BackendUnavailable
    from forebay.job import JobState, NewJob

    store = SQLiteBackend(tmp_path / "jobs.db")
    await store.open()
    try:
        await store.enqueue([NewJob.create("q", {"i": i}) for i in range(_ROWS_PER_OP + 50)])
        real_write, calls = store._write, []

        def failing_second(op):  # type: ignore[no-untyped-def]
            calls.append(op)
            if len(calls) == 2:
                raise BackendUnavailable("database is locked (test)")
            return real_write(op)

        store._write = failing_second  # type: ignore[method-assign]
        jobs = await store.lease(queue="q", limit=_ROWS_PER_OP + 50, worker_id="w", lease_s=30)
        store._write = real_write  # type: ignore[method-assign]
        assert len(jobs) == _ROWS_PER_OP
        counts = {c.queue: c for c in await store.counts()}["q"]
        assert (counts.running, counts.queued) == (_ROWS_PER_OP, 50)
        assert all(j.state is JobState.RUNNING for j in jobs)
        with pytest.raises(BackendUnavailable):  # nothing leased yet: the error is the answer
            store._write = failing_second  # type: ignore[method-assign]
            calls.clear()
            calls.append(None)
            await store.lease(queue="q", limit=10, worker_id="w", lease_s=30)
    finally:
        store._write = real_write  # type: ignore[method-assign]
        await store.close()
