"""The tables, as SQLModel classes. The schema itself is created by Alembic migrations
(`trackside/migrations/versions/`); keep the two in step (a test compares them).

Times are naive UTC everywhere (`ts`), with the UTC `day` and `hour` stored beside it, so that no
database session time zone can move an event to another day."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, LargeBinary, SmallInteger, String, false, text
from sqlmodel import Field, SQLModel


class EventRow(SQLModel, table=True):
    """Raw events, kept `TRACKSIDE_RAW_RETENTION_DAYS` (7) days; views are derived from them."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_day_kind", "day", "kind"),
        Index("ix_events_content", "content_kind", "content_id", "ts"),
        Index(
            "ix_events_signed_in_visitor",
            "day",
            "visitor",
            sqlite_where=text("user_id IS NOT NULL"),
            postgresql_where=text("user_id IS NOT NULL"),
        ),
    )

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    ts: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    day: date
    hour: int = Field(sa_column=Column(SmallInteger, nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    nav: str = Field(sa_column=Column(String(16), nullable=False))
    method: str = Field(sa_column=Column(String(8), nullable=False))
    path: str = Field(sa_column=Column(String(512), nullable=False))
    label: str = Field(sa_column=Column(String(128), nullable=False))
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    device: str = Field(sa_column=Column(String(16), nullable=False))
    browser: str = Field(sa_column=Column(String(64), nullable=False))
    os: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    author_id: str | None = Field(default=None, sa_column=Column(String(64)))
    content_kind: str | None = Field(default=None, sa_column=Column(String(32)))
    content_id: str | None = Field(default=None, sa_column=Column(String(128)))
    view_type: str | None = Field(default=None, sa_column=Column(String(16)))
    country: str | None = Field(default=None, sa_column=Column(String(2)))
    referrer: str | None = Field(default=None, sa_column=Column(String(255)))
    utm_source: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_medium: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_campaign: str | None = Field(default=None, sa_column=Column(String(100)))
    error_type: str | None = Field(default=None, sa_column=Column(String(32)))
    event_name: str | None = Field(default=None, sa_column=Column(String(32)))
    duration_ms: float = 0.0
    unverified: bool = False


class BotHitRow(SQLModel, table=True):
    """Bot traffic: a counter per UTC day, bot and route label, never a row per request."""

    __tablename__ = "bot_hits"

    day: date = Field(primary_key=True)
    bot: str = Field(sa_column=Column(String(64), primary_key=True))
    label: str = Field(sa_column=Column(String(128), primary_key=True))
    hits: int = Field(sa_column=Column(BigInteger, nullable=False))


class SaltRow(SQLModel, table=True):
    """One secret salt per UTC date, shared by every sidecar; deleted after 48 hours."""

    __tablename__ = "salts"

    day: date = Field(primary_key=True)
    salt: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class SpoolBatchRow(SQLModel, table=True):
    """Ids of bot-counter batches already applied, so a replayed batch adds its counts once."""

    __tablename__ = "applied_batches"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    applied_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class RollupDayRow(SQLModel, table=True):
    """A UTC day's rollup state: rolled (and when), or dirty (events arrived since). Once its raw
    events are pruned (`raw_pruned`) a day is never rolled again: a late event only adds to its
    additive counts, and is counted in `late_unrolled`."""

    __tablename__ = "rollup_days"

    day: date = Field(primary_key=True)
    dirty: bool
    rolled_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    events: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    raw_pruned: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    late_unrolled: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))


class DailySiteRow(SQLModel, table=True):
    """One row per closed UTC day for the whole site. `unique_visitors` counts signed-in users
    plus anonymous visitors of that day; `users_sketch` is a HyperLogLog of the signed-in users,
    mergeable across days."""

    __tablename__ = "daily_site"

    day: date = Field(primary_key=True)
    page_views: int = Field(sa_column=Column(BigInteger, nullable=False))
    page_views_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    unique_visitors: int = Field(sa_column=Column(BigInteger, nullable=False))
    unique_visitors_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    signups: int = Field(sa_column=Column(BigInteger, nullable=False))
    uploads: int = Field(sa_column=Column(BigInteger, nullable=False))
    api_calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    errors: int = Field(sa_column=Column(BigInteger, nullable=False))
    impressions: int = Field(sa_column=Column(BigInteger, nullable=False))
    bot_hits: int = Field(sa_column=Column(BigInteger, nullable=False))
    users_sketch: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    api_calls_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    errors_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    signups_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    uploads_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    impressions_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))


class DailySiteDimRow(SQLModel, table=True):
    """A day's breakdown of page views by one dimension (label, country, device, browser, os,
    referrer, hour, utm_source), and of errors (error) and site events (event)."""

    __tablename__ = "daily_site_dims"

    day: date = Field(primary_key=True)
    dim: str = Field(sa_column=Column(String(16), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    count_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    visitors: int = Field(sa_column=Column(BigInteger, nullable=False))
    visitors_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))


class DailyContentRow(SQLModel, table=True):
    """One row per content item and closed UTC day: views (looks), impressions, unique viewers."""

    __tablename__ = "daily_content"
    __table_args__ = (Index("ix_daily_content_item", "content_kind", "content_id", "day"),)

    day: date = Field(primary_key=True)
    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), primary_key=True))
    views: int = Field(sa_column=Column(BigInteger, nullable=False))
    views_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    unique_viewers: int = Field(sa_column=Column(BigInteger, nullable=False))
    unique_viewers_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    impressions: int = Field(sa_column=Column(BigInteger, nullable=False))
    impressions_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    last_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    users_sketch: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class DailyContentDimRow(SQLModel, table=True):
    """A day's breakdown of one item's views by country, device, type (view kind) or referrer."""

    __tablename__ = "daily_content_dims"
    __table_args__ = (Index("ix_daily_content_dims_item", "content_kind", "content_id", "day"),)

    day: date = Field(primary_key=True)
    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), primary_key=True))
    dim: str = Field(sa_column=Column(String(16), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    count_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))


class ContentAliasRow(SQLModel, table=True):
    """The site's own id of a content item (e.g. its numeric post id) beside the public one."""

    __tablename__ = "content_aliases"

    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    alias: str = Field(sa_column=Column(String(64), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), nullable=False))


class ProvisionalDayRow(SQLModel, table=True):
    """Today's figures as of `computed_at`, refreshed every few minutes: the site's (`payload`) and
    every item's totals without breakdowns (`item_totals`), each compressed JSON."""

    __tablename__ = "provisional_days"

    day: date = Field(primary_key=True)
    computed_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    item_totals: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class ProvisionalItemRow(SQLModel, table=True):
    """One item of today's provisional copy, breakdowns included (JSON): what one item's stats read."""

    __tablename__ = "provisional_items"

    day: date = Field(primary_key=True)
    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), primary_key=True))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# SQLAlchemy Core handles of the tables, for the modules that write and read them.
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
BOT_HITS = BotHitRow.__table__  # type: ignore[attr-defined]
SALTS = SaltRow.__table__  # type: ignore[attr-defined]
APPLIED = SpoolBatchRow.__table__  # type: ignore[attr-defined]
ROLLUP_DAYS = RollupDayRow.__table__  # type: ignore[attr-defined]
DAILY_SITE = DailySiteRow.__table__  # type: ignore[attr-defined]
DAILY_SITE_DIMS = DailySiteDimRow.__table__  # type: ignore[attr-defined]
DAILY_CONTENT = DailyContentRow.__table__  # type: ignore[attr-defined]
DAILY_CONTENT_DIMS = DailyContentDimRow.__table__  # type: ignore[attr-defined]
CONTENT_ALIASES = ContentAliasRow.__table__  # type: ignore[attr-defined]
PROVISIONAL_DAYS = ProvisionalDayRow.__table__  # type: ignore[attr-defined]
PROVISIONAL_ITEMS = ProvisionalItemRow.__table__  # type: ignore[attr-defined]
