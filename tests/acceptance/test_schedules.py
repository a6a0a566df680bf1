"""Schedules across processes: three ``forebay worker`` processes per backend fire a 1-second
interval schedule for 20 seconds, on SQLite, PostgreSQL and Redis at once.

Every tick is enqueued exactly once: the ticks' jobs are the contiguous run of seconds from
the first tick fired to the last one (20 of them while the schedule's last tick moved 20 s
on), no tick twice, and each tick was logged as enqueued by exactly
one of the three processes (the others found it fired). The test waits on the store's own
last tick, not on a clock.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from forebay import Forebay, JobFilter
from forebay.testing import until
from tests.servers import BACKENDS, backend_url

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
SECONDS = 20

APP = textwrap.dedent(
    """
    from datetime import timedelta
    from forebay import Forebay

    app = Forebay()  # FOREBAY_URL, set by the test

    app.schedule("ticks", every=timedelta(seconds=1), name="tick", payload={"from": "schedule"})

    @app.handler("ticks", concurrency=2)
    async def handle(job):
        assert job.payload == {"from": "schedule"}
    """
)

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, url: str, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if k != "FOREBAY_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp_path)])
    env["FOREBAY_URL"] = url
    log = tmp_path / f"worker-{n}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "forebay", "worker", "tickapp:app", "--log-level", "info"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    return process, log


async def _last_tick(app: Forebay) -> datetime | None:
    found = [s for s in await app.list_schedules() if s.name == "tick"]
    return found[0].last_tick if found else None


async def _run_one(kind: str, tmp_path: Path) -> None:
    folder = tmp_path / kind
    folder.mkdir()
    (folder / "tickapp.py").write_text(APP)
    url = backend_url(kind, folder)
    started = [_start(folder, url, n) for n in range(WORKERS)]
    app = Forebay(url)
    try:
        await until(lambda: _armed(app), timeout_s=60, interval_s=0.05, what=f"{kind}: armed")
        armed = await _last_tick(app)
        assert armed is not None
        end = armed + timedelta(seconds=SECONDS)
        await until(
            lambda: _reached(app, end),
            timeout_s=SECONDS + 30,
            interval_s=0.05,
            what=f"{kind}: 20 ticks fired",
        )
    finally:
        for process, _ in started:
            process.send_signal(signal.SIGTERM)
        for process, _ in started:
            await asyncio.to_thread(process.wait, 60)
    try:
        jobs = await app.list_jobs(JobFilter(queue="ticks"), limit=1000)
        last = await _last_tick(app)
    finally:
        await app.close()
    assert all(process.returncode == 0 for process, _ in started), kind
    assert last is not None and last >= end

    keys = sorted(j.key or "" for j in jobs)
    assert len(keys) == len(set(keys)), f"{kind}: a tick twice"
    ticks = [datetime.fromisoformat(k.removeprefix("schedule:tick:")) for k in keys]
    # The test first reads the schedule's last tick after it was armed: on a busy machine the
    # first tick may already have fired by then, so the ticks start at or before armed + 1 s.
    first = ticks[0]
    assert first <= armed + timedelta(seconds=1), f"{kind}: the first tick is missing"
    seconds = round((last - first).total_seconds())
    assert ticks == [first + timedelta(seconds=s) for s in range(seconds + 1)], kind
    within = [t for t in ticks if armed < t <= end]
    assert len(within) == SECONDS, f"{kind}: {len(within)} ticks in 20 s"

    # Each tick was enqueued by one process: the others found it already fired.
    logged: list[str] = []
    firers = 0
    for _, log in started:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text
        mine = re.findall(r"enqueued (schedule:tick:\S+)", text)
        logged += mine
        firers += bool(mine)
    assert sorted(logged) == keys, kind
    assert firers >= 1


async def _armed(app: Forebay) -> bool:
    return await _last_tick(app) is not None


async def _reached(app: Forebay, end: datetime) -> bool:
    last = await _last_tick(app)
    return last is not None and last >= end


async def test_three_workers_fire_each_tick_of_a_one_second_schedule_once(
    tmp_path: Path,
) -> None:
    await asyncio.gather(*(_run_one(kind, tmp_path) for kind in BACKENDS))
