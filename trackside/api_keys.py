"""API keys: what server-to-server callers present instead of a user's token.

A key is `tsk_<id>_<secret>`: the id names its row, the secret is 32 random bytes. Only the
SHA-256 of the secret is stored (a high-entropy secret needs no slow hash), so the database never
holds a usable key; the whole key is shown once, when it is made (`trackside keys create`).

Scopes: `write` may send events (`POST /_trackside/api/event`); `read` is for reading stats.
A sidecar remembers a checked key for `RECHECK_SECONDS`, so a revoked key stops working within
that time on every sidecar without a database read per request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

SCOPES = ("write", "read")
PREFIX = "tsk_"
RECHECK_SECONDS = 10.0
MAX_NAME = 64

_metadata = sa.MetaData()
API_KEYS = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(MAX_NAME), nullable=False),
    sa.Column("scope", sa.String(8), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)


class KeyError_(ValueError):
    """A bad argument to a key command; the message names it."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
            "revoked_at": self.revoked_at.isoformat(timespec="seconds") + "Z" if self.revoked_at else None,
        }


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(presented: str) -> tuple[str, str] | None:
    """`tsk_<id>_<secret>` -> (id, secret), or None when it is not shaped like a key."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key_id) > 16 or len(secret) > 128:
        return None
    return key_id, secret


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def create_key(engine: AsyncEngine, name: str, scope: str) -> tuple[ApiKey, str]:
    """A new key: its row, and the whole key (shown once, never stored)."""
    if scope not in SCOPES:
        raise KeyError_(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise KeyError_(f"name must be 1 to {MAX_NAME} characters")
    key = ApiKey(secrets.token_hex(6), name, scope, _now().replace(microsecond=0))
    secret = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(
            API_KEYS.insert().values(
                id=key.id,
                name=key.name,
                scope=key.scope,
                secret_sha256=secret_digest(secret),
                created_at=key.created_at,
            )
        )
    return key, f"{PREFIX}{key.id}_{secret}"


async def list_keys(engine: AsyncEngine) -> list[ApiKey]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                API_KEYS.c.id, API_KEYS.c.name, API_KEYS.c.scope, API_KEYS.c.created_at, API_KEYS.c.revoked_at
            ).order_by(API_KEYS.c.created_at, API_KEYS.c.id)
        )
        return [ApiKey(*row) for row in rows]


async def revoke_key(engine: AsyncEngine, key_id: str) -> bool:
    """Revokes a key; False when there is no such key or it was revoked already."""
    async with engine.begin() as conn:
        done = await conn.execute(
            API_KEYS.update().where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None)).values(revoked_at=_now())
        )
        return bool(done.rowcount)


T = TypeVar("T")


class Remembered(Generic[T]):
    """Answers of a lookup by presented secret, each kept `recheck_seconds` (misses too, so a caller
    hammering a bad secret costs one read per secret and interval); bounded at 10,000."""

    def __init__(self, recheck_seconds: float) -> None:
        self.recheck = recheck_seconds
        self._known: dict[str, tuple[T | None, float]] = {}

    async def get(self, presented: str, lookup: Callable[[str], Awaitable[T | None]]) -> T | None:
        now = time.monotonic()
        hit = self._known.get(presented)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await lookup(presented)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[presented] = (found, now + self.recheck)
        return found


class KeyRing:
    """Checks presented keys against the database, remembering the answer for `RECHECK_SECONDS`
    (wrong keys too, so a caller hammering a bad key costs one read per key and interval)."""

    def __init__(self, engine: AsyncEngine, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.engine = engine
        self._remembered: Remembered[ApiKey] = Remembered(recheck_seconds)

    async def check(self, presented: str) -> ApiKey | None:
        """The key's row when `presented` is a valid, unrevoked key; else None."""
        return await self._remembered.get(presented, self._lookup)

    async def _lookup(self, presented: str) -> ApiKey | None:
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        API_KEYS.c.id,
                        API_KEYS.c.name,
                        API_KEYS.c.scope,
                        API_KEYS.c.created_at,
                        API_KEYS.c.revoked_at,
                        API_KEYS.c.secret_sha256,
                    ).where(API_KEYS.c.id == key_id)
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, secret_digest(secret)):
            return None
        return ApiKey(row.id, row.name, row.scope, row.created_at)
