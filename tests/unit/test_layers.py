"""Layers only point down: the worker never loads handler processes or the HTTP service, and a
handler process never loads the CLI or the web stack (each checked in a fresh interpreter,
which also imports the ``forebay`` package itself)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import {module}
print(" ".join(sorted(m for m in sys.modules if m.startswith({forbidden!r}))))
"""


def loaded(module: str, forbidden: tuple[str, ...]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module, forbidden=forbidden)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


WEB_AND_CLI = (
    "forebay.cli",
    "forebay.http",
    "forebay.cli.serve",
    "fastapi",
    "uvicorn",
)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("forebay.worker", ("forebay.execution", *WEB_AND_CLI)),
        ("forebay.execution.child", WEB_AND_CLI),
        ("forebay.execution.supervisor", WEB_AND_CLI),
    ],
)
def test_a_module_loads_nothing_above_it(module: str, forbidden: tuple[str, ...]) -> None:
    assert loaded(module, forbidden) == []
