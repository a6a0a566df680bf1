"""The newcomer's path: ``forebay serve forebay.contrib.labelstudio:app`` and
``forebay labelstudio demo`` as subprocesses, over real HTTP, into a dataset folder that
``datasets`` loads and staging tables on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_labelstudio_helpers import fetch, stage_fixture  # noqa: F401

SECRET = "demo-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_health(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError("forebay serve exited:\n" + log.read_text(errors="replace"))
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("forebay serve did not answer:\n" + log.read_text())
        time.sleep(0.05)


def test_serve_then_demo(tmp_path: Path, stage: tuple[str, str]) -> None:
    dsn, schema = stage
    port = free_port()
    env = {
        **os.environ,
        "FOREBAY_URL": f"sqlite:///{tmp_path / 'forebay.db'}",
        "FOREBAY_LABELSTUDIO_SECRET": SECRET,
        "FOREBAY_DATASET": str(tmp_path / "dataset"),
        "FOREBAY_STAGE_URL": dsn,
        "FOREBAY_STAGE_SCHEMA": schema,
    }
    env.pop("FOREBAY_API_TOKENS", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forebay",
                "serve",
                "forebay.contrib.labelstudio:app",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, server, log)
        unauthorised = httpx.post(f"{base}/v1/sources/labelstudio", json={"action": "X"})
        assert unauthorised.status_code == 401
        demo = subprocess.run(
            [sys.executable, "-m", "forebay", "labelstudio", "demo", "--service", base],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr + log.read_text()
        assert "6 completed" in demo.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0, log.read_text()

    datasets = pytest.importorskip("datasets")
    boxes = datasets.load_dataset(
        str(tmp_path / "dataset"), "pdf_boxes", split="train", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(boxes["label"]) == ["InvoiceNumber", "InvoiceNumber"]  # created, then turned
    rows = asyncio.run(fetch(dsn, schema, "SELECT label, rotation, x1, y1 FROM pdf_boxes"))
    assert rows == [
        {
            "label": "InvoiceNumber",
            "rotation": 90.0,
            "x1": pytest.approx(76.5),
            "y1": pytest.approx(633.6),
        }
    ]
