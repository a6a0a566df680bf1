"""deploy/compose.yaml: an intake (`serve --no-workers`), workers that scale
(`--scale worker=N`), PostgreSQL and Redis with healthchecks, and the store's URL in every
forebay service. Read as YAML and checked for that shape; validated by `docker-compose config`
(the Compose file schema) where it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
ENV = {"FOREBAY_API_TOKENS": "s3cr3t:enqueue+read+admin"}


def render() -> dict[str, Any]:
    """The file as Compose resolves it (anchors merged), `${VAR:-default}` left as written."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "config", *args],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FOREBAY_")}, **env},
        cwd=COMPOSE.parent,
    )


def test_the_intake_serves_without_workers_and_the_workers_scale() -> None:
    services = render()["services"]
    intake, worker = services["intake"], services["worker"]
    assert intake["command"][0] == "serve" and intake["command"][-1] == "--no-workers"
    assert worker["command"][0] == "worker"
    assert worker["command"][-2:] == ["--metrics-port", "9100"]
    assert intake["command"][1] == worker["command"][1]  # one app for both
    # Scalable: no fixed name, no published port (several replicas would collide).
    assert "container_name" not in worker and "ports" not in worker
    assert intake["ports"] == ["${FOREBAY_PUBLISH:-127.0.0.1:8000}:8000"]
    # The worker's health is asked on its metrics port; its stop grace outlasts its jobs'.
    assert worker["environment"]["FOREBAY_HEALTHCHECK_URL"].endswith(":9100/healthz")
    grace_s = float(worker["environment"]["FOREBAY_SHUTDOWN_GRACE_S"])
    assert int(worker["stop_grace_period"].removesuffix("s")) > grace_s


def test_every_forebay_service_gets_the_store_and_waits_for_the_migration() -> None:
    services = render()["services"]
    for name in ("intake", "worker"):
        env = services[name]["environment"]
        assert env["FOREBAY_URL"].startswith("${FOREBAY_URL:-postgresql://")
        assert "@postgres:5432/" in env["FOREBAY_URL"]
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    # Off loopback the intake needs API tokens: the file refuses to start without them.
    assert services["intake"]["environment"]["FOREBAY_API_TOKENS"].startswith(
        "${FOREBAY_API_TOKENS:?"
    )


def test_postgres_and_redis_have_healthchecks_and_volumes() -> None:
    spec = render()
    for name, probe in (("postgres", "pg_isready"), ("redis", "redis-cli")):
        service = spec["services"][name]
        assert probe in " ".join(service["healthcheck"]["test"])
        volume = service["volumes"][0].split(":")[0]
        assert volume in spec["volumes"]


def test_docker_compose_validates_the_file() -> None:
    checked = compose_config("-q", env=ENV)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(compose_config(env=ENV).stdout)
    assert resolved["services"]["worker"]["command"] == [
        "worker",
        "documents:app",
        "--metrics-port",
        "9100",
    ]
    assert resolved["services"]["intake"]["environment"]["FOREBAY_URL"] == (
        "postgresql://forebay:forebay@postgres:5432/forebay"
    )
    # The store is chosen by FOREBAY_URL, for every forebay service at once.
    redis = yaml.safe_load(
        compose_config(env={**ENV, "FOREBAY_URL": "redis://redis:6379/0"}).stdout
    )
    for name in ("migrate", "intake", "worker"):
        assert redis["services"][name]["environment"]["FOREBAY_URL"] == "redis://redis:6379/0"


def test_docker_compose_refuses_to_start_without_api_tokens() -> None:
    refused = compose_config("-q", env={})
    assert refused.returncode != 0
    assert "FOREBAY_API_TOKENS" in refused.stderr
