"""The ``forebay`` command line (typer + rich): the composition root, the one place that puts
settings, backends, sinks, the HTTP service and workers together.

Every command opens the backend named by ``--url`` (else ``FOREBAY_URL``, else
``sqlite:///./forebay.db``) inside one ``asyncio.run``, prints tables for people or one JSON
document with ``--json``, and reports a mistake as one ``error: ...`` line on stderr with a
non-zero exit code (1: it failed, 2: the command line or the input is wrong), never a traceback.

Adding commands (``forebay serve``, ``forebay labelstudio ...``): write them in a module of this
package and register them below, next to the others::

    from forebay.cli import serve, labelstudio

    cli.command("serve")(serve.serve)                       # one command
    cli.add_typer(labelstudio.app, name="labelstudio")      # a group: forebay labelstudio ...

Import optional extras (fastapi, uvicorn, pyarrow...) inside the command's function, not at the
top of its module, so the other commands work without them; a missing one should raise
:class:`~forebay.errors.MissingExtra`. Run the async body with :func:`forebay.cli.session.run`
so its errors become one line, and reuse the options of :mod:`forebay.cli.options`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from forebay.cli import (
    dead,
    enqueue,
    jobs,
    labelstudio,
    migrate,
    queues,
    runs,
    schedules,
    serve,
    stats,
    usage,
    worker,
    workers,
)

__all__ = ["cli", "main"]

cli = typer.Typer(
    name="forebay",
    help="forebay: a durable job queue. Enqueue jobs, run workers, inspect and replay.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from forebay import __version__

        typer.echo(f"forebay {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """forebay: a durable job queue. Enqueue jobs, run workers, inspect and replay them."""


cli.command("worker")(worker.worker)
cli.command("enqueue")(enqueue.enqueue)
cli.command("jobs")(jobs.jobs)
cli.command("job")(jobs.job)
cli.command("cancel")(jobs.cancel)
cli.add_typer(runs.runs, name="runs")
cli.add_typer(dead.dead, name="dead")
cli.add_typer(queues.queue, name="queue")
cli.command("stats")(stats.stats)
cli.command("workers")(workers.workers)
cli.add_typer(schedules.schedules, name="schedules")
cli.command("migrate")(migrate.migrate)
cli.command("serve")(serve.serve)
cli.add_typer(labelstudio.app, name="labelstudio")


def main() -> None:
    """Entry point of the ``forebay`` script and of ``python -m forebay``.

    Every usage error (click's too: an unknown option, a bad value, a missing argument) is one
    ``error: ...`` line with exit code 2, like the commands' own; see :mod:`forebay.cli.usage`.
    """
    command = typer.main.get_command(cli)
    usage.plain_flags(command)
    usage.run(command, prog_name="forebay")
