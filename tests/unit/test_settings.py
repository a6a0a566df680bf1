"""The one reader of ``FOREBAY_*`` variables, the one resolution of the backend URL, and the app
loaded from ``MODULE:ATTR`` (no I/O beyond a module written to a temporary folder)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest

from forebay import ConfigError, Forebay, WorkerSettings
from forebay.app_reference import import_app
from forebay.backends import DEFAULT_URL
from forebay.settings import NOT_FROM_ENV, from_env, resolve_url, variable


@dataclass(frozen=True, slots=True)
class Example:
    name: str = "x"
    count: int = 1
    wait_s: float = 0.5
    every: timedelta = timedelta(minutes=1)
    loud: bool = False
    mode: Literal["text", "json"] = "text"
    tags: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    where: str | None = None
    secret: str = field(default="", metadata=variable("OTHER_SECRET"))
    batch: int = field(default=10, metadata=variable(at_least=1))
    words: tuple[str, ...] = field(default=(), metadata=variable(parse=lambda t: tuple(t)))
    code_only: int = field(default=3, metadata=NOT_FROM_ENV)


def test_each_field_is_read_by_its_type() -> None:
    env = {
        "FOREBAY_NAME": " forebay ",
        "FOREBAY_COUNT": "8",
        "FOREBAY_WAIT_S": "2.5",
        "FOREBAY_EVERY": "90",
        "FOREBAY_LOUD": "Yes",
        "FOREBAY_MODE": "JSON",
        "FOREBAY_TAGS": "a, b,,c ",
        "FOREBAY_IDS": "1,2",
        "FOREBAY_WHERE": "there",
        "OTHER_SECRET": "s3cr3t",
        "FOREBAY_SECRET": "not this one",
        "FOREBAY_WORDS": "ab",
        "FOREBAY_CODE_ONLY": "99",
        "FOREBAY_BATCH": "",  # empty: the default stays
    }
    assert from_env(Example, env) == Example(
        name="forebay",
        count=8,
        wait_s=2.5,
        every=timedelta(seconds=90),
        loud=True,
        mode="json",
        tags=("a", "b", "c"),
        ids=(1, 2),
        where="there",
        secret="s3cr3t",
        words=("a", "b"),
    )
    assert from_env(Example, {}) == Example()


def test_given_values_win_and_none_is_not_given() -> None:
    env = {"FOREBAY_COUNT": "8", "FOREBAY_NAME": "env"}
    settings = from_env(Example, env, given={"count": 9, "name": None, "words": "xy"})
    assert (settings.count, settings.name, settings.words) == (9, "env", ("x", "y"))
    with pytest.raises(ConfigError, match="no setting nope"):
        from_env(Example, {}, given={"nope": 1})


def test_another_prefix() -> None:
    assert from_env(Example, {"APP_COUNT": "4"}, prefix="APP_").count == 4


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FOREBAY_COUNT": "many"}, r"FOREBAY_COUNT='many' is not a number: give a whole number"),
        ({"FOREBAY_WAIT_S": "soon"}, "FOREBAY_WAIT_S='soon' is not a number: give seconds"),
        ({"FOREBAY_EVERY": "inf"}, "FOREBAY_EVERY='inf' is not a number: give seconds"),
        ({"FOREBAY_LOUD": "maybe"}, "FOREBAY_LOUD='maybe': use true or false"),
        ({"FOREBAY_MODE": "xml"}, "FOREBAY_MODE='xml': use text or json"),
        ({"FOREBAY_IDS": "1,two"}, "FOREBAY_IDS='1,two': give whole numbers separated by commas"),
        ({"FOREBAY_BATCH": "0"}, "FOREBAY_BATCH must be at least 1"),
    ],
)
def test_a_mistake_is_a_config_error_naming_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        from_env(Example, env)


def test_a_field_of_a_type_it_cannot_read_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Odd:
        shape: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match="FOREBAY_SHAPE"):
        from_env(Odd, {})


def test_the_worker_settings_can_be_read_too() -> None:
    env = {
        "FOREBAY_SHUTDOWN_GRACE_S": "5",
        "FOREBAY_DEAD_RETENTION": "3600",
        "FOREBAY_HANDLE_SIGNALS": "off",
        "FOREBAY_WORKER_ID": "w-1",
    }
    settings = from_env(WorkerSettings, env)
    assert settings.shutdown_grace_s == 5.0
    assert settings.dead_retention == timedelta(hours=1)
    assert settings.handle_signals is False and settings.worker_id == "w-1"


def test_the_url_is_the_given_one_else_the_variable_else_the_default() -> None:
    assert resolve_url("sqlite:///given.db", {"FOREBAY_URL": "redis://x"}) == "sqlite:///given.db"
    assert resolve_url(None, {"FOREBAY_URL": "redis://x"}) == "redis://x"
    assert resolve_url(None, {"FOREBAY_URL": ""}) == DEFAULT_URL == "sqlite:///./forebay.db"


def test_an_app_moves_to_another_url_until_it_has_its_backend() -> None:
    app = Forebay("sqlite:///one.db")
    app.use_url("sqlite:///two.db")
    assert app.url == "sqlite:///two.db"
    app.backend  # noqa: B018  # built: the app keeps it from now on
    app.use_url("sqlite:///two.db")  # the same URL: nothing to do
    with pytest.raises(ConfigError, match="already has its backend"):
        app.use_url("sqlite:///three.db")


def test_an_app_named_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "refapp.py").write_text(
        "from forebay import Forebay\napp = Forebay('sqlite:///unused.db')\nnumber = 4\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert isinstance(import_app("refapp:app"), Forebay)
    for ref, words in [
        ("refapp", "must be given as module:attribute"),
        ("refapp:nope", "has no attribute 'nope'"),
        ("refapp:number", "is a int, not a forebay.Forebay app"),
        ("no_such_module_here:app", "cannot import 'no_such_module_here'"),
    ]:
        with pytest.raises(ConfigError, match=words):
            import_app(ref)


def test_worker_settings_come_from_variables_and_given_values_win() -> None:
    env = {
        "FOREBAY_COMPLETED_RETENTION": "60",
        "FOREBAY_CANCELLED_RETENTION": "0",
        "FOREBAY_PRUNE_EVERY_S": "5",
        "FOREBAY_BURST": "yes",
    }
    settings = WorkerSettings.from_env(
        env, given={"completed_retention": timedelta(seconds=5), "burst": None}
    )
    assert settings.completed_retention == timedelta(seconds=5)  # the flag wins
    assert settings.cancelled_retention == timedelta(0)
    assert settings.dead_retention == timedelta(days=7)  # unset: the default
    assert settings.prune_every_s == 5.0 and settings.burst is True
    assert WorkerSettings.from_env({}) == WorkerSettings()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FOREBAY_DEAD_RETENTION": "a week"}, "FOREBAY_DEAD_RETENTION='a week' is not a number"),
        ({"FOREBAY_DEAD_RETENTION": "-1"}, "dead_retention must be a finite, non-negative"),
        ({"FOREBAY_SHUTDOWN_GRACE_S": "inf"}, "shutdown_grace_s must be a finite"),
        ({"FOREBAY_IDLE_POLL_S": "0"}, "idle_poll_s must be above 0"),
        ({"FOREBAY_HANDLE_SIGNALS": "perhaps"}, "FOREBAY_HANDLE_SIGNALS='perhaps': use true"),
    ],
)
def test_bad_worker_settings_say_what_is_wrong(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env(env)
    assert words in str(caught.value)
