"""The example of docs/runs.md runs as written."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runs_demo_completes_its_run_once_and_orders_the_diamond(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "runs.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "crawl complete: 39 pages, 36 completed, 3 dead, 0 cancelled"
    assert lines[1] == "run completed: 36 + 3 + 0 == 39"
    assert lines[2].startswith("D is waiting for jobs ")
    assert lines[3] == "ran A, then B and C, then D"
    assert len(lines) == 4  # one completion job, announced once
