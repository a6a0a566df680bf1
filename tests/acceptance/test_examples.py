"""The examples in the docs run as written."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_documents_demo_drains_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "documents.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert "documents: 196 completed, 4 dead" in done.stdout
    assert (tmp_path / "forebay.db").exists()


def test_orders_demo_refuses_a_bad_order_and_handles_the_models(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "orders.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
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
