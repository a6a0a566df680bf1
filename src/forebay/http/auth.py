"""API tokens: who may call the ``/v1`` API, and with which scopes.

Sources authenticate with their own secrets (:mod:`forebay.sources`); these bearer
tokens guard everything else under ``/v1``. Tokens are compared in constant time, each one,
so the answer's timing does not tell how much of a guessed token was right.
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

    def check(self, authorization: str | None, scope: Scope) -> None:
        """Raise ApiError 401 (missing or unknown token) or 403 (token lacks ``scope``)."""
        if not self._tokens:
            return
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
        given = value.strip().encode()
        match: ApiToken | None = None
        for secret, token in self._tokens:  # every token compared: constant time overall
            if hmac.compare_digest(secret, given):
                match = token
        if match is None:
            raise ApiError(401, "unauthorized", "unknown API token", headers=_CHALLENGE)
        if not match.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this API token lacks the {scope.value!r} scope "
                f"(it has: {', '.join(sorted(match.scopes))})",
            )
