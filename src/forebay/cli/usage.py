"""Usage errors in one style: click's own (unknown option, bad value, missing argument) are
reported like the commands' (:func:`forebay.cli.output.fail`): one ``error: ...`` line on stderr
and exit code 2, instead of a framed box with a ``Usage:`` preamble. Boolean flags show no
``<bool>`` in the help, which invited ``--burst true``.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import typer

from forebay.cli.output import EXIT_USAGE, fail

__all__ = ["plain_flags", "run"]


def _base(name: str) -> type[Exception]:
    """click's exception class ``name``, as the installed typer uses it (recent typers carry
    their own copy of click): found from the one typer exports."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_VALIDATION_PREFIX = re.compile(r"\b(Value error|Assertion failed), ")
"""What pydantic puts before a validator's message, which typer passes on."""


def plain_flags(command: Any, help_names: list[str] | None = None) -> None:
    """Show flags as flags in the help: no value placeholder after ``--burst``."""
    if help_names is None:  # the root's; its commands inherit them
        help_names = command.context_settings.get("help_option_names", ["--help"])
    params = list(command.params)
    # Made once (with the names a real context would give it), then reused by click.
    helper = command.get_help_option(typer.Context(command, help_option_names=help_names))
    if helper is not None:
        params.append(helper)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        plain_flags(sub, help_names)


def run(command: Any, prog_name: str) -> None:
    """Run the command line; a usage error is one line and exit code 2."""
    usage_error, click_error = _base("UsageError"), _base("ClickException")
    try:
        code = command.main(prog_name=prog_name, standalone_mode=False)
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stderr.write(ctx.get_help() + "\n")  # a bare group: its help, as click does
            sys.exit(EXIT_USAGE)
        _exit(describe(exc), EXIT_USAGE)
    except click_error as exc:
        _exit(exc.format_message(), getattr(exc, "exit_code", 1))  # type: ignore[attr-defined]
    except typer.Abort:
        _exit("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _exit(message: str, code: int) -> None:
    """Print the error line and exit: out here, no command framework catches typer.Exit."""
    try:
        fail(message, code)
    except typer.Exit:
        sys.exit(code)


def describe(exc: Any) -> str:
    """The one-line message of a usage error, with where to find the command's help."""
    message = _VALIDATION_PREFIX.sub("", exc.format_message())
    message = message[:1].lower() + message[1:].rstrip(".")
    where = exc.ctx.command_path if exc.ctx is not None else "forebay"
    return f"{message} (see {where} -h)"
