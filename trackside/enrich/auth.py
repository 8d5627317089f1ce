"""The signed-in user from a verified `Authorization: Bearer` JWT (HS256, shared secret).

An invalid, expired or foreign token is anonymous, never an error."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt

_CACHE_SIZE = 4096
_NEGATIVE_TTL = 60.0
_MAX_TTL = 300.0


class TokenVerifier:
    def __init__(self, secret: str | None) -> None:
        self._secret = secret
        # token -> (claims or None, until): verifying costs tens of µs, a cache hit far less.
        self._cache: OrderedDict[str, tuple[dict[str, Any] | None, float]] = OrderedDict()

    def user_from_header(self, authorization: str | None) -> str | None:
        if not authorization or self._secret is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        claims = self.claims(token.strip())
        return user_of(claims) if claims else None

    def claims(self, token: str) -> dict[str, Any] | None:
        if self._secret is None or len(token) > 8192:
            return None
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        claims: dict[str, Any] | None
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
        except (jwt.PyJWTError, ValueError, TypeError):
            claims = None
        if claims is not None and user_of(claims) is None:
            claims = None
        until = now + _NEGATIVE_TTL
        if claims is not None:
            exp = claims.get("exp")
            until = min(float(exp), now + _MAX_TTL) if isinstance(exp, int | float) else now + _MAX_TTL
        self._cache[token] = (claims, until)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims


def user_of(claims: dict[str, Any]) -> str | None:
    user = claims.get("sub") or claims.get("user_id")
    return str(user)[:64] if user not in (None, "") else None
