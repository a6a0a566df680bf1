"""The examples in the docs run as written (docs/quickstart.md, docs/payloads.md, docs/runs.md,
docs/flow-control.md), and what they print holds."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` in ``tmp_path`` as a user would, with only forebay's source on
    the path; fail with its stderr unless it exits 0."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_documents_demo_drains_and_reports(tmp_path: Path) -> None:
    done = run_example("documents.py", tmp_path)
    assert "documents: 196 completed, 4 dead" in done.stdout
    assert (tmp_path / "forebay.db").exists()


def test_orders_demo_refuses_a_bad_order_and_handles_the_models(tmp_path: Path) -> None:
    done = run_example("orders.py", tmp_path)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: queue 'orders' refuses the payload")
    assert lines[1:4] == [
        "  sku: String should have at least 1 character",
        "  qty: Input should be greater than 0",
        "  placed_at: Field required",
    ]
    assert (
        "stored as: {'id': 1, 'sku': 'A-7', 'qty': 2, 'placed_at': '2026-11-02T09:00:00Z'}" in lines
    )
    assert "order 1: 2 x A-7, placed 2026-11-02" in lines
    assert any(line.startswith("order 2: 1 x B-1") for line in lines)


def test_runs_demo_completes_its_run_once_and_orders_the_diamond(tmp_path: Path) -> None:
    done = run_example("runs.py", tmp_path)
    lines = done.stdout.splitlines()
    assert lines[0] == "crawl complete: 39 pages, 36 completed, 3 dead, 0 cancelled"
    assert lines[1] == "run completed: 36 + 3 + 0 == 39"
    assert lines[2].startswith("D is waiting for jobs ")
    assert lines[3] == "ran A, then B and C, then D"
    assert len(lines) == 4  # one completion job, announced once


def test_flow_demo_takes_turns_caps_and_paces_the_tenants(tmp_path: Path) -> None:
    done = run_example("flow.py", tmp_path)
    lines = done.stdout.splitlines()
    # The tenant quota refuses globex's third job; acme has no quota.
    assert lines[0] == "globex #3 refused: tenant globex holds its quota of 2"
    started = [line.split() for line in lines[1:9]]
    assert sorted((tenant, n) for _, tenant, n in started) == sorted(
        [("acme", f"#{n}") for n in range(1, 7)] + [("globex", "#1"), ("globex", "#2")]
    )
    # Fair turns: globex's two jobs start among the first four, though acme queued six first.
    assert lines[9] == "order: acme globex acme globex acme acme acme acme"
    # 2/s per tenant with a burst of 2: acme's 6 leases span (6 - 2) / 2 = 2 s (the handler
    # calls, a little after their leases, may be a little closer on a busy machine); without
    # the rate they would all start within a few tenths of a second.
    span = re.fullmatch(r"acme: 6 starts over ([\d.]+)s \(2/s, a burst of 2\)", lines[10])
    assert span is not None, lines[10]
    assert float(span[1]) >= 1.7
    # The global cap: never more than 2 of the queue's jobs at once.
    assert lines[11] == "at most 2 running at once (global_concurrency=2)"
    assert len(lines) == 12
