"""The example of docs/flow-control.md runs as written, and its limits hold."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_flow_demo_takes_turns_caps_and_paces_the_tenants(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "flow.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
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
