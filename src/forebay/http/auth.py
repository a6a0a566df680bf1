"""API tokens: who may call the ``/v1`` API, with which scopes, for which tenant.

Sources authenticate with their own secrets (:mod:`forebay.sources`); these bearer
tokens guard everything else under ``/v1``. Tokens are compared in constant time, each one,
so the answer's timing does not tell how much of a guessed token was right.

A token bound to a tenant (``TOKEN:SCOPES:TENANT``) is refused what acts on whole queues
(``operator=True``: pause, resume, queue settings, ``/metrics``); what it may do, the routes
narrow to its tenant's jobs and runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from forebay.http.errors import ApiError
from forebay.http.settings import ApiToken, Scope

__all__ = ["Authorizer"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authorizer:
    """Checks ``Authorization: Bearer <token>`` against the configured tokens."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [(t.token.encode(), t) for t in tokens]

    @property
    def open(self) -> bool:
        """No tokens configured (allowed on a loopback host only): every call is allowed."""
        return not self._tokens

    def check(
        self, authorization: str | None, scope: Scope, *, operator: bool = False
    ) -> ApiToken | None:
        """The caller's token (None: no tokens configured). Raise ApiError 401 (missing or
        unknown token) or 403 (token lacks ``scope``, or is bound to a tenant and
        ``operator``: the action concerns every tenant)."""
        if not self._tokens:
            return None
        if not authorization:
            raise ApiError(
                401,
                "unauthorized",
                "this endpoint needs an API token: send Authorization: Bearer <token>",
                headers=_CHALLENGE,
            )
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(
                401,
                "unauthorized",
                "malformed Authorization header: expected Authorization: Bearer <token>",
                headers=_CHALLENGE,
            )
        match = self._match(value)
        if match is None:
            raise ApiError(401, "unauthorized", "unknown API token", headers=_CHALLENGE)
        if not match.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this API token lacks the {scope.value!r} scope "
                f"(it has: {', '.join(sorted(match.scopes))})",
            )
        if operator and match.tenant is not None:
            raise ApiError(
                403,
                "forbidden",
                f"this API token is bound to tenant {match.tenant!r}: it may not act on whole "
                "queues (pause, resume, settings) or read the service's metrics",
            )
        return match

    def bound_tenant(self, authorization: str | None) -> str | None:
        """The tenant of the token ``authorization`` carries, if it is a known token bound to
        one (for the routes that need no token but refuse a tenant's)."""
        if not self._tokens or not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        match = self._match(value)
        return None if match is None else match.tenant

    def _match(self, value: str) -> ApiToken | None:
        given = value.strip().encode()
        match: ApiToken | None = None
        for secret, token in self._tokens:  # every token compared: constant time overall
            if hmac.compare_digest(secret, given):
                match = token
        return match
