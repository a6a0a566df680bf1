from pathlib import Path

import pytest

from forebay import ConfigError, Forebay, Job, MissingExtra
from forebay.backends import backend_from_url
from forebay.backends.sqlite import SQLiteBackend


def test_default_url_is_a_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOREBAY_URL", raising=False)
    assert Forebay().url == "sqlite:///./forebay.db"
    monkeypatch.setenv("FOREBAY_URL", "sqlite:///elsewhere.db")
    assert Forebay().url == "sqlite:///elsewhere.db"
    assert Forebay("sqlite:///given.db").url == "sqlite:///given.db"


def test_sqlite_urls(tmp_path: Path) -> None:
    rel = backend_from_url("sqlite:///./jobs.db")
    assert isinstance(rel, SQLiteBackend) and rel.path == Path("jobs.db")
    absolute = backend_from_url(f"sqlite:///{tmp_path}/jobs.db?synchronous=normal&poll_ms=5")
    assert isinstance(absolute, SQLiteBackend)
    assert absolute.path == tmp_path / "jobs.db"
    assert absolute.synchronous == "NORMAL" and absolute.poll_s == 0.005


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x", "unsupported backend URL"),
        ("forebay.db", "unsupported backend URL"),
        ("sqlite://host/x.db", "has a host"),
        ("sqlite:///x.db?journal=off", "unknown SQLite URL options"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous must be one of"),
        ("sqlite:///:memory:", "needs a file"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        backend_from_url(url)


def test_missing_extra_names_the_pip_line() -> None:
    err = MissingExtra("postgres", "asyncpg")
    assert "pip install 'forebay[postgres]'" in str(err)


def test_handler_declaration_is_validated() -> None:
    app = Forebay("sqlite:///unused.db")

    async def handle(job: Job) -> None:
        pass

    with pytest.raises(ConfigError, match="concurrency"):
        app.handler("q", concurrency=0)(handle)
    with pytest.raises(ConfigError, match="max_deliveries"):
        app.handler("q", max_attempts=5, max_deliveries=2)(handle)
    app.handler("q")(handle)
    with pytest.raises(ConfigError, match="already has a handler"):
        app.handler("q")(handle)
    with pytest.raises(ConfigError, match="no handler for queue"):
        app.worker(["other"])


async def test_progress_outside_a_handler_is_an_error() -> None:
    from forebay import JobState

    job = Job(id=1, queue="q", payload={}, state=JobState.QUEUED)
    with pytest.raises(RuntimeError, match="inside a running handler"):
        await job.progress(10)
