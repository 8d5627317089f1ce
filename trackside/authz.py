"""Who is asking for stats, and may they have them.

The caller comes from the Bearer JWT (HS256, `TRACKSIDE_JWT_SECRET`; user from `sub` or
`user_id`), or is a machine holding the static `TRACKSIDE_ADMIN_TOKEN`. Roles come from the site's
"who am I" endpoint when one is configured (the site keeps roles in its database; called with the
caller's own token, cached briefly), else from the token's `roles` claim, but only when the operator
said to believe it (`TRACKSIDE_TRUST_ROLES_CLAIM=1`). A `read` API key (`trackside.api_keys`) and a
share token (`trackside.share_tokens`) read as the admin token does, and change nothing."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

import httpx

from trackside.enrich.auth import TokenVerifier, user_of
from trackside.settings import Settings
from trackside.share_tokens import EXPIRED as SHARE_EXPIRED
from trackside.share_tokens import PREFIX as SHARE_PREFIX

MODERATOR_ROLES = frozenset({"moderator", "owner"})
ROLE_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Caller:
    user: str | None
    roles: frozenset[str]
    machine: bool = False
    # A read API key or a share token: may read what a moderator reads, never change anything.
    read_only: bool = False
    share: str | None = None  # the share token's id

    @property
    def is_moderator(self) -> bool:
        return self.machine or bool(self.roles & MODERATOR_ROLES)

    @property
    def key(self) -> str:
        if self.share is not None:
            return f"share:{self.share}"
        return "machine" if self.machine else f"user:{self.user}"


class Unauthorized(Exception):
    """No token, or one that does not verify: 401."""


class Authorizer:
    def __init__(self, settings: Settings, tokens: TokenVerifier, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.tokens = tokens
        self.client = client
        self._roles: dict[str, tuple[frozenset[str] | None, float]] = {}
        # API keys (`trackside.api_keys.KeyRing`): a `read` key reads stats as the admin token does.
        self.keys: Any = None
        # Share tokens (`trackside.share_tokens.ShareRing`): read-only, as a read key.
        self.shares: Any = None

    async def caller(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a Bearer token is required")
        admin = self.settings.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return Caller(None, frozenset(), machine=True)
        if self.keys is not None and token.startswith("tsk_"):
            key = await self.keys.check(token)
            if key is None or key.scope != "read":
                raise Unauthorized("unknown or revoked API key, or not a read key")
            return Caller(None, frozenset(), machine=True, read_only=True)
        if self.shares is not None and token.startswith(SHARE_PREFIX):
            share = await self.shares.check(token)
            if share is None:
                raise Unauthorized("unknown or revoked share token")
            if share.expired():
                raise Unauthorized(SHARE_EXPIRED)
            return Caller(None, frozenset(), machine=True, read_only=True, share=share.id)
        claims = self.tokens.claims(token)
        if claims is None:
            raise Unauthorized("the token does not verify")
        user = user_of(claims)
        if self.settings.whoami_url:
            roles = await self._whoami_roles(token)
            if roles is None:
                raise Unauthorized("the site does not know this token")
        elif self.settings.trust_roles_claim:
            roles = _roles_claim(claims)
        else:
            # The claim is not believed (`TRACKSIDE_TRUST_ROLES_CLAIM=0`, or never chosen): whoever
            # holds the secret could write any roles into it. The user is still known (their own items).
            roles = frozenset()
        return Caller(user, roles)

    async def _whoami_roles(self, token: str) -> frozenset[str] | None:
        now = time.monotonic()
        hit = self._roles.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        assert self.settings.whoami_url is not None
        response = await self.client.get(self.settings.whoami_url, headers={"authorization": f"Bearer {token}"})
        roles: frozenset[str] | None = None
        if response.status_code == 200:
            body = response.json()
            roles = _roles_claim(body if isinstance(body, dict) else {})
        elif response.status_code not in (401, 403):
            response.raise_for_status()
        self._roles[token] = (roles, now + ROLE_CACHE_SECONDS)
        if len(self._roles) > 10_000:
            self._roles.clear()
        return roles


def _roles_claim(claims: dict[str, Any]) -> frozenset[str]:
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = roles.split(",")
    return (
        frozenset(str(r).strip() for r in roles if isinstance(r, str | int))
        if isinstance(roles, list | str)
        else frozenset()
    )


def may_read_metrics(settings: Settings, authorization: str | None) -> bool:
    """The metrics and the OpenAPI document: open unless `TRACKSIDE_METRICS_TOKEN` is set; then its
    Bearer token, or the admin token."""
    if settings.metrics_token is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = token.strip().encode()
    return any(
        secret is not None and hmac.compare_digest(given, secret.encode())
        for secret in (settings.metrics_token, settings.admin_token)
    )
