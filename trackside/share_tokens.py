"""Share tokens: read-only tokens that open the dashboard signed in, as a link
`/_trackside/#token=<token>` (the fragment never reaches a server log), for someone who should see
the figures but holds no moderator account.

A token is `tss_<id>_<secret>`, made by `trackside share create [--expires 30d] [--label L]`.
As with API keys only the SHA-256 of the secret is stored, and the whole token is shown once.
A share token is accepted wherever a `read` API key is (the dashboard's data, the query APIs), never
for a change (goals, events). It expires (`expires_at`); an expired token is refused with its own
reason, so the dashboard can say why it signs the user out. A sidecar remembers a checked token for
`RECHECK_SECONDS`, so a revoked one stops working within that time; expiry is checked on every use."""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.api_keys import Remembered, secret_digest

PREFIX = "tss_"
RECHECK_SECONDS = 10.0
MAX_LABEL = 64
DEFAULT_EXPIRY = "30d"
MAX_EXPIRY = timedelta(days=366)
EXPIRED = "the share token expired"
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")

_metadata = sa.MetaData()
SHARE_TOKENS = sa.Table(
    "share_tokens",
    _metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(MAX_LABEL), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)


class ShareError(ValueError):
    """A bad argument to a share command; the message names it."""


@dataclass(frozen=True, slots=True)
class ShareToken:
    id: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return (now or _now()) >= self.expires_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def parse_expiry(text: str) -> timedelta:
    """`90m`, `12h`, `30d`, `2w`: how long a new token lasts (at most a year)."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ShareError(f"expires must be a number and a unit (m, h, d or w), e.g. 30d; got {text!r}")
    lasts = int(found.group(1)) * _UNITS[found.group(2)]
    if lasts > MAX_EXPIRY:
        raise ShareError(f"expires is at most {MAX_EXPIRY.days} days, got {text!r}")
    return lasts


def split_token(presented: str) -> tuple[str, str] | None:
    """`tss_<id>_<secret>` -> (id, secret), or None when it is not shaped like a share token."""
    if not presented.startswith(PREFIX):
        return None
    token_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not token_id or not secret or len(token_id) > 16 or len(secret) > 128:
        return None
    return token_id, secret


async def create_share(engine: AsyncEngine, label: str, lasts: timedelta) -> tuple[ShareToken, str]:
    """A new token: its row, and the whole token (shown once, never stored)."""
    label = label.strip()
    if len(label) > MAX_LABEL:
        raise ShareError(f"label must be at most {MAX_LABEL} characters")
    if lasts <= timedelta(0):
        raise ShareError("expires must be in the future")
    # To the microsecond: tokens are listed in the order they were made, and two made in one second
    # (a script, the tests) were ordered by their random ids. Shown to the second (`_iso`).
    created = _now()
    token = ShareToken(secrets.token_hex(6), label, created, created + lasts)
    secret = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(
            SHARE_TOKENS.insert().values(
                id=token.id,
                label=token.label,
                secret_sha256=secret_digest(secret),
                created_at=token.created_at,
                expires_at=token.expires_at,
            )
        )
    return token, f"{PREFIX}{token.id}_{secret}"


_COLUMNS = (
    SHARE_TOKENS.c.id,
    SHARE_TOKENS.c.label,
    SHARE_TOKENS.c.created_at,
    SHARE_TOKENS.c.expires_at,
    SHARE_TOKENS.c.revoked_at,
)


async def list_shares(engine: AsyncEngine) -> list[ShareToken]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(*_COLUMNS).order_by(SHARE_TOKENS.c.created_at, SHARE_TOKENS.c.id))
        return [ShareToken(*row) for row in rows]


async def revoke_share(engine: AsyncEngine, token_id: str) -> bool:
    """Revokes a token; False when there is no such token or it was revoked already."""
    async with engine.begin() as conn:
        done = await conn.execute(
            SHARE_TOKENS.update()
            .where(SHARE_TOKENS.c.id == token_id, SHARE_TOKENS.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
        return bool(done.rowcount)


class ShareRing:
    """Checks presented share tokens against the database, remembering the answer for
    `RECHECK_SECONDS` (unknown tokens too: a caller guessing costs one read per token and interval)."""

    def __init__(self, engine: AsyncEngine, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.engine = engine
        self._remembered: Remembered[ShareToken] = Remembered(recheck_seconds)

    async def check(self, presented: str) -> ShareToken | None:
        """The token's row when `presented` is a valid, unrevoked token (expired or not: the caller
        says which); else None."""
        return await self._remembered.get(presented, self._lookup)

    async def _lookup(self, presented: str) -> ShareToken | None:
        parts = split_token(presented)
        if parts is None:
            return None
        token_id, secret = parts
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_COLUMNS, SHARE_TOKENS.c.secret_sha256).where(SHARE_TOKENS.c.id == token_id)
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, secret_digest(secret)):
            return None
        return ShareToken(row.id, row.label, row.created_at, row.expires_at)
