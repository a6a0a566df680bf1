"""Every usage error, click's and the commands' own, is one ``error: ...`` line on stderr with
exit code 2 (no framed box, no ``Usage:`` preamble, no validator jargon); flags are shown as
flags in the help."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.test_cli import APP, Cli, one_error_line

BAD = [
    ("jobs", "--state", "bogus"),
    ("jobs", "--limit", "0"),
    ("jobs", "--nosuch"),
    ("job", "abc"),
    ("job",),
    ("stats", "--interval-s", "x"),
    ("stats", "--watch", "--json"),
    ("enqueue", "documents", "not json"),
    ("enqueue", "documents", "{}", "--delay-s", "5", "--run-at", "2026-01-01T00:00Z"),
    ("dead", "ls", "--since", "yesterday"),
    ("dead", "purge", "--nosuch"),
    ("cancel",),
    ("worker",),
    ("worker", "--burst", "true", "app:app"),
    ("worker", "nosuch_module:app"),
    ("worker", "app:app", "--queue", "not-handled"),
    ("serve", "app:app", "--port", "0"),
    ("serve", "app:app", "--log-format", "xml"),
    ("migrate", "--sql", "--schema", "no good;"),
    ("enqueue", "documents", "{}", "--url", "bogus://x"),
    ("nosuch",),
]


@pytest.mark.parametrize("args", BAD, ids=" ".join)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "app.py").write_text(APP)
    done = Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")(*args)
    line = one_error_line(done)
    assert done.returncode == 2, (args, done.stderr)
    assert "Usage:" not in done.stderr and "╭" not in done.stderr
    assert "Value error" not in line


def test_flags_show_no_value_placeholder(tmp_path: Path) -> None:
    cli = Cli(tmp_path, None)
    for command in (("worker",), ("jobs",), ("stats",), ("dead", "purge"), ("serve",)):
        shown = cli.ok(*command, "-h")
        assert "<bool>" not in shown, command
