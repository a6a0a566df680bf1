#!/usr/bin/env bash
# Set up a virtualenv with forebay and its test dependencies, then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The dashboard is tested in a real headless Chromium (Debian's package; no browser download).
if [ -n "${CI:-}" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq chromium >/dev/null
fi
# The alert rules are checked with promtool (Debian's prometheus package).
if [ -n "${CI:-}" ] && ! command -v promtool >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The deploy recipes: podman builds deploy/Dockerfile (runc starts its containers where crun
# cannot, debootstrap makes a Python base image from Debian's packages when no registry serves
# one), docker-compose validates deploy/compose.yaml.
if [ -n "${CI:-}" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    for tool in podman runc debootstrap docker-compose; do
        command -v "$tool" >/dev/null || apt-get install -y -qq "$tool" >/dev/null
    done
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports  # the floor plan: layers only point down (pyproject.toml)
# Two workers (pytest-xdist); tests marked with xdist_group share one worker (tests/conftest.py).
# Arguments come last and win: `bash scripts/test.sh tests/unit -n 0` runs in one process.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
