"""docs/subprocess.md: its examples are the files in examples/subprocess/, and they run as shown."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "subprocess"


def test_the_page_shows_the_example_files_as_they_are() -> None:
    page = (ROOT / "docs" / "subprocess.md").read_text()
    for name in ("ingest.py", "checksum.sh", "app.py"):
        assert (EXAMPLES / name).read_text() in page, f"docs/subprocess.md lost {name}"


def test_the_example_app_runs_a_python_and_a_shell_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "app.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    name = Path(sys.executable).name
    assert lines == [
        "words job 1: completed, result {'name': 'a.txt', 'words': 4}",
        "words job 2: dead, result None",
        f"  error: PermanentError: {name} exited with status 3 (a permanent exit code); "
        "stderr ends with:",
        "document 'empty.txt' is empty",
        "checksums job 3: completed, result {'cksum': 3906805896, 'bytes': 16}",
    ]


def test_a_program_runs_by_hand_with_a_payload_on_stdin() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "ingest.py")],
        input='{"name": "a.txt", "text": "one two"}',
        capture_output=True,
        text=True,
        timeout=30,
        env={"FOREBAY_JOB_ID": "1", "FOREBAY_ATTEMPT": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == '{"name": "a.txt", "words": 2}'
