"""What a command's exit means for its job, and what a command declaration accepts (no I/O)."""

from __future__ import annotations

import signal

import pytest

from forebay import (
    ConfigError,
    Forebay,
    PermanentError,
    ResourceExhausted,
    TransientError,
)
from forebay.execution.command import Command, exit_error

COMMAND = Command(("/usr/bin/python3", "ingest.py"), permanent_exit_codes=frozenset({2, 3}))


def test_exit_zero_completes() -> None:
    assert exit_error(COMMAND, 0, "warnings are fine") is None


@pytest.mark.parametrize("status", [2, 3])
def test_a_permanent_exit_code_is_a_permanent_error(status: int) -> None:
    error = exit_error(COMMAND, status, "bad document")
    assert type(error) is PermanentError
    assert str(error) == (
        f"python3 exited with status {status} (a permanent exit code); "
        "stderr ends with:\nbad document"
    )


@pytest.mark.parametrize("returncode", [-signal.SIGKILL, 137])
def test_a_kill_from_outside_is_resource_exhausted_and_transient(returncode: int) -> None:
    error = exit_error(COMMAND, returncode, "")
    assert type(error) is ResourceExhausted
    assert isinstance(error, TransientError)
    assert "most likely out of memory" in str(error)
    assert str(error).endswith("stderr was empty")


@pytest.mark.parametrize(
    ("returncode", "status"),
    [(1, "exited with status 1"), (-signal.SIGSEGV, "was killed by SIGSEGV")],
)
def test_any_other_exit_is_transient(returncode: int, status: str) -> None:
    error = exit_error(COMMAND, returncode, "Traceback ...")
    assert type(error) is TransientError
    assert str(error) == f"python3 {status}; stderr ends with:\nTraceback ..."


@pytest.mark.parametrize(
    "options",
    [
        {"argv": ()},
        {"argv": ("",)},
        {"argv": ("python",), "permanent_exit_codes": frozenset({0})},
        {"argv": ("python",), "permanent_exit_codes": frozenset({256})},
        {"argv": ("python",), "max_output_bytes": -1},
        {"argv": ("python",), "term_grace_s": -1.0},
        {"argv": ("python",), "term_grace_s": float("nan")},
    ],
)
def test_a_bad_command_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Command(**options)  # type: ignore[arg-type]


def test_app_command_declares_an_in_process_queue() -> None:
    app = Forebay("sqlite:///unused.db")
    declared = app.command(
        "ingest", ["python", "ingest.py"], permanent_exit_codes=[3], timeout_s=60, concurrency=2
    )
    config = app.queues["ingest"]
    assert config.in_process and config.is_async
    assert (config.timeout_s, config.concurrency) == (60, 2)
    assert declared == Command(("python", "ingest.py"), permanent_exit_codes=frozenset({3}))


def test_app_command_refuses_a_command_line_as_one_string() -> None:
    app = Forebay("sqlite:///unused.db")
    with pytest.raises(ConfigError, match=r"\['sh', '-c', 'python ingest.py'\]"):
        app.command("ingest", "python ingest.py")
    with pytest.raises(ConfigError, match="already has a handler"):
        app.command("twice", ["true"])
        app.command("twice", ["true"])
