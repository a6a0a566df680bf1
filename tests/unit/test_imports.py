"""Every module of the package imports on its own, in a process that has imported no forebay
module before, and does nothing when imported: no thread started, no logging set up, no file
written.

A module that only imports because another one was imported first hides an import cycle (the
layers that prevent most of them are checked by ``lint-imports``, see pyproject.toml).

``python -c "import forebay.X"`` once per module costs the whole package a few dozen seconds,
nearly all of it spent loading the same third-party libraries again. So one fresh interpreter
loads those libraries (every one the package's modules import at their top), none of forebay,
and forks one child per module, a few at a time; each child imports its module as a fresh
interpreter would, since no forebay module is loaded before it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import forebay

PACKAGE = Path(forebay.__file__).parent

SERVER = r"""
import importlib, json, logging, os, sys, threading

preload, modules, at_once = json.loads(sys.stdin.read())
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:  # an optional extra that is not installed: the module's import will say
        pass
assert not [m for m in sys.modules if m.split(".")[0] == "forebay"], "forebay was preloaded"
assert threading.active_count() == 1 and not logging.getLogger().handlers


def check(module):
    importlib.import_module(module)
    assert threading.active_count() == 1, f"threads started: {threading.enumerate()}"
    assert not logging.getLogger().handlers, "logging was set up"


running, failed = {}, False
for module in modules + [None] * at_once:
    while running and (module is None or len(running) >= at_once):
        pid, status = os.wait()
        failed |= running.pop(pid) is not None and status != 0
    if module is None:
        continue
    pid = os.fork()
    if pid == 0:
        try:
            check(module)
        except BaseException as exc:
            os.write(1, (json.dumps([module, f"{type(exc).__name__}: {exc}"]) + "\n").encode())
            os._exit(1)
        os._exit(0)
    running[pid] = module
sys.exit(1 if failed else 0)
"""


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def third_party_imports() -> list[str]:
    """Every module outside forebay that a module of the package imports at its top."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return sorted(name for name in found if name.split(".")[0] not in ("forebay", "__future__"))


def test_every_module_imports_alone_and_does_nothing(tmp_path: Path) -> None:
    names = modules()
    assert "forebay.http.api" in names and "forebay.cli.serve" in names
    work = json.dumps([third_party_imports(), names, max(2, os.cpu_count() or 1)])
    done = subprocess.run(
        [sys.executable, "-c", SERVER],
        input=work,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    failures = dict(json.loads(line) for line in done.stdout.splitlines())
    assert failures == {}
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written where the imports ran
