"""Webhook deliveries: the handler of the built-in queue ``forebay.webhooks``.

The stores create a delivery job (:func:`forebay.runs.webhook_payload`: ``url``, ``type``,
``data``) in the transaction that finishes a job or a run with a ``webhook``. Delivering it is
a job like any other, so a receiver that is down for an hour loses nothing: it is retried with
backoff, ends in the dead letters when it keeps failing, and can be replayed from there.

What is sent, per the Standard Webhooks specification (https://www.standardwebhooks.com):
``POST <url>`` with the JSON body ``{"type": ..., "timestamp": <ISO 8601, now>, "data": ...}``
and the headers

* ``webhook-id``: ``msg_<delivery job id>``, the same on every retry and replay: the
  receiver's key to drop a delivery it already processed;
* ``webhook-timestamp``: this attempt's time, in epoch seconds;
* ``webhook-signature``: ``v1,<base64 of HMAC-SHA256("<id>.<timestamp>.<body>")>``, keyed
  with the secret ``FOREBAY_WEBHOOK_SECRET`` (``whsec_<base64>``).

How it ends (:meth:`WebhookDelivery.deliver`):

* a 2xx answer completes the job (its result: ``{"status": <code>}``);
* ``410 Gone`` is permanent (the receiver wants no more): dead at once;
* a refused address, a missing secret or bad settings are permanent too, each with an error
  saying what to do (fix it, then replay the dead deliveries);
* any other answer (redirects are not followed), a connection error or no answer within
  ``FOREBAY_WEBHOOK_TIMEOUT_S`` is transient: retried with backoff (:func:`webhook_queue`).

Addresses: a URL is in the hands of whoever enqueued the job, and a delivery is a request made
from inside the network the workers run in. So the host is resolved and every address it
resolves to must be public: loopback, private, link-local, shared, reserved, multicast and
unspecified addresses are refused unless ``FOREBAY_WEBHOOK_ALLOW_PRIVATE=true``. The request
then goes to the address that was checked (TLS still verifies the certificate against the host
name), never through a second lookup that could answer differently (DNS rebinding).

Concurrency: one :class:`WebhookDelivery` per app, so one HTTP client per worker process (its
connections kept alive between deliveries), made on the first delivery in the worker's event
loop and closed by :meth:`forebay.Forebay.close`. Deliveries run in the worker process itself,
never in a handler process: they only wait on the network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import standardwebhooks

from forebay import jsonio
from forebay.backoff import Backoff
from forebay.errors import ConfigError, PermanentError, TransientError
from forebay.job import JSON, Job
from forebay.queue_config import QueueConfig
from forebay.runs import WEBHOOK_QUEUE
from forebay.settings import from_env

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_TIMEOUT_S",
    "WebhookDelivery",
    "WebhookSettings",
    "refused_address",
    "signed_headers",
    "signing_key",
    "webhook_queue",
]

MAX_TIMEOUT_S: Final = 300.0
"""The longest ``FOREBAY_WEBHOOK_TIMEOUT_S`` (the queue's own time limit stays above it)."""

_MIN_SECRET_BYTES: Final = 24
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_SNIPPET_BYTES: Final = 512
_USER_AGENT: Final = "forebay-webhooks"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How deliveries are made; every field from ``FOREBAY_WEBHOOK_<NAME>`` (:meth:`from_env`).

    * ``secret``: ``whsec_`` and the base64 of at least 24 random bytes (Standard Webhooks'
      format); every delivery is signed with it. Without it, deliveries fail (dead) with an
      error naming ``FOREBAY_WEBHOOK_SECRET``.
    * ``timeout_s``: the longest a delivery may take, resolving the host included (at most
      :data:`MAX_TIMEOUT_S`).
    * ``allow_private``: deliver to loopback, private and link-local addresses too (a receiver
      on the same host or network; tests).
    """

    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    allow_private: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ConfigError(
                f"FOREBAY_WEBHOOK_TIMEOUT_S must be above 0 and at most {MAX_TIMEOUT_S:g} "
                f"seconds, not {self.timeout_s:g}"
            )
        if self.secret is not None:
            signing_key(self.secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        """Settings from ``FOREBAY_WEBHOOK_*`` (default: this process's environment)."""
        return from_env(cls, env, prefix="FOREBAY_WEBHOOK_")


def signing_key(secret: str) -> bytes:
    """The key a ``whsec_<base64>`` secret stands for; ConfigError saying what is wrong."""
    text = secret.removeprefix("whsec_")
    how = "give whsec_ and the base64 of at least 24 random bytes (docs/webhooks.md: making one)"
    if not _BASE64.fullmatch(text):
        raise ConfigError(f"FOREBAY_WEBHOOK_SECRET is not base64: {how}")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ConfigError(f"FOREBAY_WEBHOOK_SECRET is not base64: {how}") from None
    if len(key) < _MIN_SECRET_BYTES:
        raise ConfigError(f"FOREBAY_WEBHOOK_SECRET is too short ({len(key)} bytes): {how}")
    return key


def signed_headers(
    signer: standardwebhooks.Webhook, msg_id: str, at: datetime, body: str
) -> dict[str, str]:
    """The headers of a delivery of ``body`` with the id ``msg_id``, signed at ``at``."""
    return {
        "content-type": "application/json",
        "user-agent": _USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signer.sign(msg_id, at, body),
    }


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a delivery may not go to ``address`` (``"loopback"``, ``"private"``, ...), or None
    for a public address. An IPv4 address inside IPv6 — mapped (``::ffff:10.0.0.1``), 6to4
    (``2002:0a00:0001::``) or behind the NAT64 prefix (``64:ff9b::10.0.0.1``) — is judged as
    the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        address = _embedded_ipv4(address) or address
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    # shared (100.64.0.0/10), documentation ranges, IETF protocol assignments and the like
    if not address.is_global or address in _IETF_PROTOCOL:
        return "non-global"
    return None


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_IETF_PROTOCOL: Final = ipaddress.IPv4Network("192.0.0.0/24")  # not global on Python < 3.13


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def webhook_queue(delivery: WebhookDelivery) -> QueueConfig:
    """The built-in queue :data:`~forebay.runs.WEBHOOK_QUEUE`, handled by ``delivery``.

    Ten attempts, backing off up to 10 s, 30 s, 90 s, ... and at most an hour between them
    (full jitter: a random wait up to that): a receiver may be away for about two hours (four
    at most) before a delivery is dead, then replayed from the dead letters.
    """
    return QueueConfig(
        WEBHOOK_QUEUE,
        handler=delivery.deliver,
        max_attempts=10,
        timeout_s=MAX_TIMEOUT_S + 30,
        concurrency=16,
        backoff=Backoff(base_s=10, factor=3, cap_s=3600),
    )


class WebhookDelivery:
    """Delivers the jobs of ``forebay.webhooks`` (see the module docstring). One per app.

    ``settings``: None reads :meth:`WebhookSettings.from_env` at the first delivery (so an app
    that delivers nothing never needs them).
    """

    def __init__(self, settings: WebhookSettings | None = None) -> None:
        self._settings = settings
        self._signer: standardwebhooks.Webhook | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def deliver(self, job: Job) -> dict[str, JSON]:
        """POST the delivery ``job`` describes, signed; raise what its answer means."""
        import httpx  # here, not on top: a process that never delivers never loads it

        settings, signer = self._ready()
        now = datetime.now(UTC)
        url, body = _request_body(job.payload, now)
        headers = signed_headers(signer, f"msg_{job.id}", now, body)
        target = httpx.URL(url)
        try:
            async with asyncio.timeout(settings.timeout_s):
                addresses = await _resolve(target, allow_private=settings.allow_private)
                status, snippet = await self._post(target, addresses, headers, body.encode())
        except (TimeoutError, httpx.TimeoutException):
            raise TransientError(
                f"{target.host} did not answer within {settings.timeout_s:g}s "
                "(FOREBAY_WEBHOOK_TIMEOUT_S)"
            ) from None
        return _outcome(target, status, snippet)

    async def close(self) -> None:
        """Close the HTTP client (a later delivery makes a new one)."""
        client, self._client = self._client, None
        if client is not None and self._loop is _running_loop():
            await client.aclose()

    def _ready(self) -> tuple[WebhookSettings, standardwebhooks.Webhook]:
        """The settings and the signer; PermanentError saying what to set when they are
        wrong or without a secret."""
        if self._signer is not None and self._settings is not None:
            return self._settings, self._signer
        if self._settings is None:
            try:
                self._settings = WebhookSettings.from_env()
            except ConfigError as exc:
                raise PermanentError(f"{exc}; then replay the dead deliveries") from None
        if self._settings.secret is None:
            raise PermanentError(
                "FOREBAY_WEBHOOK_SECRET is not set: set it on the workers to a whsec_ secret "
                "(see docs/webhooks.md), then replay the dead deliveries"
            )
        self._signer = standardwebhooks.Webhook(self._settings.secret)
        return self._settings, self._signer

    def _http(self) -> httpx.AsyncClient:
        """The client of this event loop (a worker's loop; made at its first delivery)."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            assert self._settings is not None
            # A client is bound to the loop it was made in: one left by an ended loop is
            # dropped, its connections already gone with that loop.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # no proxy: the request goes to the address that was checked
                timeout=httpx.Timeout(self._settings.timeout_s),
                # No connection is reused: a pooled one is found by (scheme, address, port),
                # so a connection whose certificate was checked for one host name would carry
                # a delivery to another name that resolves to the same address unchecked.
                limits=httpx.Limits(max_keepalive_connections=0),
            )
            self._loop = loop
        return self._client

    async def _post(
        self, target: httpx.URL, addresses: list[str], headers: dict[str, str], body: bytes
    ) -> tuple[int, str]:
        """Send to each address in turn until one takes the connection: its status and the
        start of its answer."""
        import httpx

        client = self._http()
        headers = {**headers, "host": target.netloc.decode("ascii")}
        # TLS: the certificate is checked against the host name, not the address.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        failure: httpx.TransportError | None = None
        for address in addresses:
            pinned = target.copy_with(host=address)
            request = client.build_request(
                "POST", pinned, headers=headers, content=body, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
                continue
            except httpx.TransportError as exc:
                raise TransientError(f"delivery to {target.host} failed: {exc!r}") from None
            try:
                # A 2xx is all there is to know; an error's answer says why, in its first bytes.
                ok = response.is_success
                return response.status_code, "" if ok else await _start_of(response)
            finally:
                await response.aclose()
        raise TransientError(f"could not connect to {target.host} ({addresses}): {failure}")


def _request_body(payload: object, now: datetime) -> tuple[str, str]:
    """The URL and the JSON body of a delivery job's payload; PermanentError when it is not
    one :func:`~forebay.runs.webhook_payload` made."""
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("url"), str)
        and isinstance(payload.get("type"), str)
        and "data" in payload
    ):
        raise PermanentError('not a webhook delivery: the payload needs "url", "type", "data"')
    body = {
        "type": payload["type"],
        "timestamp": now.isoformat(),
        "data": payload["data"],
    }
    return payload["url"], jsonio.dumps(body)


async def _resolve(target: httpx.URL, *, allow_private: bool) -> list[str]:
    """The addresses of ``target``'s host, each allowed; PermanentError naming a refused one."""
    if target.scheme not in ("http", "https") or not target.host:
        raise PermanentError(f"webhook URL must be http:// or https:// with a host: {target}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            target.host, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise TransientError(f"could not resolve {target.host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in found))
    if not allow_private:
        for text in addresses:
            why = refused_address(ipaddress.ip_address(text))
            if why is not None:
                raise PermanentError(
                    f"refused to deliver to {target.host}: it resolves to {text}, a {why} "
                    "address (set FOREBAY_WEBHOOK_ALLOW_PRIVATE=true to allow private receivers)"
                )
    return addresses


async def _start_of(response: httpx.Response) -> str:
    """The first bytes of an answer's body, as text (for the error of a failed delivery)."""
    read = b""
    async for chunk in response.aiter_bytes():
        read += chunk
        if len(read) >= _SNIPPET_BYTES:
            break
    return read[:_SNIPPET_BYTES].decode("utf-8", "replace")


def _outcome(target: httpx.URL, status: int, snippet: str) -> dict[str, JSON]:
    if 200 <= status < 300:
        return {"status": status}
    said = f": {snippet.strip()}" if snippet.strip() else ""
    if status == 410:
        raise PermanentError(
            f"{target.host} answered 410 Gone: the receiver wants no more deliveries{said}"
        )
    raise TransientError(f"{target.host} answered {status}{said}")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
