"""Webhook deliveries without I/O: the signature (the specification's test vector), which
addresses are refused, and the secret's format."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
import standardwebhooks

from forebay.errors import ConfigError
from forebay.runs import WEBHOOK_QUEUE
from forebay.webhooks import (
    WebhookDelivery,
    WebhookSettings,
    refused_address,
    signed_headers,
    signing_key,
    webhook_queue,
)


def test_the_signature_matches_the_specifications_test_vector() -> None:
    signer = standardwebhooks.Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    at = datetime.fromtimestamp(1614265330, UTC)
    headers = signed_headers(signer, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, '{"test": 2432232314}')
    assert headers["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert headers["webhook-timestamp"] == "1614265330"
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("192.0.0.8", "non-global"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-global"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_addresses_inside_a_network_are_refused(address: str, why: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


def test_a_secret_is_whsec_and_base64_of_at_least_24_bytes() -> None:
    assert len(signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")) == 24
    assert signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == signing_key(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    with pytest.raises(ConfigError, match="too short"):
        signing_key("whsec_c2hvcnQ=")


def test_settings_are_read_from_the_environment_and_checked() -> None:
    env = {
        "FOREBAY_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "FOREBAY_WEBHOOK_TIMEOUT_S": "2.5",
        "FOREBAY_WEBHOOK_ALLOW_PRIVATE": "yes",
    }
    settings = WebhookSettings.from_env(env)
    assert settings == WebhookSettings(env["FOREBAY_WEBHOOK_SECRET"], 2.5, allow_private=True)
    assert "whsec" not in repr(settings)
    assert WebhookSettings.from_env({}) == WebhookSettings()
    with pytest.raises(ConfigError, match="FOREBAY_WEBHOOK_TIMEOUT_S"):
        WebhookSettings.from_env({"FOREBAY_WEBHOOK_TIMEOUT_S": "0"})
    with pytest.raises(ConfigError, match="FOREBAY_WEBHOOK_ALLOW_PRIVATE"):
        WebhookSettings.from_env({"FOREBAY_WEBHOOK_ALLOW_PRIVATE": "maybe"})


def test_the_queue_retries_for_hours_before_a_delivery_is_dead() -> None:
    config = webhook_queue(WebhookDelivery())
    assert config.name == WEBHOOK_QUEUE and config.max_attempts == 10
    assert config.is_async
    waited = sum(config.backoff.ceiling_s(attempt) for attempt in range(1, 10))
    assert config.backoff.ceiling_s(9) == 3600 and waited > 4 * 3600
