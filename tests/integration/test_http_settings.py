"""The service's settings, API tokens and source declarations (no I/O)."""

from __future__ import annotations

import pytest

from forebay import ConfigError, Forebay, HmacSignature, InvalidPayload, SharedSecret, Source
from forebay.http import Scope, ServiceSettings
from forebay.http.settings import is_loopback, parse_api_tokens


def test_tokens_have_every_scope_unless_they_name_some() -> None:
    tokens = parse_api_tokens(" all-of-it , producer:enqueue, ops:read+ADMIN ,")
    assert [t.token for t in tokens] == ["all-of-it", "producer", "ops"]
    assert tokens[0].scopes == frozenset(Scope)
    assert tokens[1].allows(Scope.ENQUEUE) and not tokens[1].allows(Scope.READ)
    assert tokens[2].allows(Scope.ENQUEUE)  # admin implies the others
    assert "producer" not in repr(tokens[1])  # secrets stay out of logs


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("t:write", "unknown scope 'write'"),
        ("a b", "spaces"),
        (":read", "empty"),
        ("t,t:read", "twice"),
    ],
)
def test_bad_token_lists_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_api_tokens(text)


def test_settings_come_from_the_environment_and_flags_win() -> None:
    env = {
        "FOREBAY_HOST": "0.0.0.0",
        "FOREBAY_PORT": "9000",
        "FOREBAY_API_TOKENS": "abc:read",
        "FOREBAY_WORKERS": "false",
        "FOREBAY_LOG_FORMAT": "JSON",
        "FOREBAY_MAX_BODY_BYTES": "2048",
        "FOREBAY_URL": "sqlite:///./x.db",
        "FOREBAY_WORKER_PROCESSES": "2",
        "UNRELATED": "1",
    }
    settings = ServiceSettings.from_env(env, port=9100, workers=None)
    assert settings.host == "0.0.0.0" and settings.port == 9100
    assert settings.workers is False
    assert settings.log_format == "json"
    assert settings.max_body_bytes == 2048
    assert settings.url == "sqlite:///./x.db"
    assert settings.worker_processes == 2
    assert ServiceSettings().worker_processes == 0  # the workers run in the service's process
    assert settings.api_tokens[0].scopes == {Scope.READ}
    assert settings.redacted()["api_tokens"] == [["read"]]
    assert ServiceSettings.from_env({}) == ServiceSettings()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FOREBAY_PORT": "http"}, "not a number"),
        ({"FOREBAY_PORT": "70000"}, "out of range"),
        ({"FOREBAY_WORKERS": "maybe"}, "true or false"),
        ({"FOREBAY_WORKER_PROCESSES": "two"}, "not a number"),
        ({"FOREBAY_WORKER_PROCESSES": "-1"}, "worker_processes"),
        ({"FOREBAY_LOG_FORMAT": "xml"}, "text or json"),
        ({"FOREBAY_LOG_LEVEL": "loud"}, "log level"),
        ({"FOREBAY_HOST": "10.1.2.3"}, "without API tokens"),
    ],
)
def test_bad_settings_say_what_is_wrong(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ServiceSettings.from_env(env)


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.1", "example.org"))


def test_source_declarations_are_checked() -> None:
    app = Forebay("sqlite:///./unused.db")
    source = app.source("hook", queue="documents")
    assert app.sources == {"hook": source}
    with pytest.raises(ConfigError, match="already declared"):
        app.source("hook", queue="documents")
    with pytest.raises(ConfigError, match="reserved"):
        app.source("api", queue="documents")
    with pytest.raises(ConfigError, match="header name"):
        SharedSecret(header="X Secret", secret="s")
    with pytest.raises(ConfigError, match="empty"):
        SharedSecret(header="X-Secret", secret="")
    with pytest.raises(ConfigError, match="algorithm"):
        HmacSignature(header="X-Sig", secret="s", algorithm="rot13")
    with pytest.raises(ConfigError, match="queue name"):
        Source("hook", queue="bad queue")


def test_a_signature_covers_the_exact_body() -> None:
    signature = HmacSignature(header="X-Hub-Signature-256", secret="It's a Secret to Everybody")
    body = b"Hello, World!"
    # The example of GitHub's webhook documentation.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature.sign(body) == expected
    assert signature.verify(expected, body)
    assert not signature.verify(expected, body + b" ")
    assert not signature.verify("sha256=" + "0" * 64, body)
    assert "Everybody" not in repr(signature)


def test_a_source_turns_a_body_into_keyed_jobs() -> None:
    source = Source(
        "hook",
        queue="documents",
        split=lambda body: body["items"],  # type: ignore[index,call-overload]
        key=lambda item: str(item["id"]),  # type: ignore[index,call-overload]
    )
    jobs = source.jobs({"items": [{"id": 1}, {"id": 2}]})
    assert [(j.queue, j.key, j.payload) for j in jobs] == [
        ("documents", "1", {"id": 1}),
        ("documents", "2", {"id": 2}),
    ]
    with pytest.raises(InvalidPayload, match="KeyError"):
        source.jobs({"nothing": []})
    numbered = Source("n", queue="documents", key=lambda item: 7)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidPayload, match="must be a string"):
        numbered.jobs({})
