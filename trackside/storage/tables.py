"""The tables, as SQLModel classes. The schema itself is created by Alembic migrations
(`trackside/migrations/versions/`); keep the two in step (a test compares them).

Times are naive UTC everywhere (`ts`), with the UTC `day` and `hour` stored beside it, so that no
database session time zone can move an event to another day."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    false,
    text,
)
from sqlmodel import Field, SQLModel


class EventRow(SQLModel, table=True):
    """Raw events, kept `TRACKSIDE_RAW_RETENTION_DAYS` (7) days; views are derived from them."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_day_kind", "day", "kind"),
        Index("ix_events_content", "content_kind", "content_id", "ts"),
        # Derivation reads one visitor's day, and counts its API calls from the index alone.
        Index("ix_events_day_visitor_nav", "day", "visitor", "nav", "user_id"),
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


# Fact rows: what derivation makes of one visitor's raw events of one UTC day, replaced whole
# each time that visitor-day gets a new event. Every figure of a day not rolled up is SQL over
# these; a rollup groups them into daily rows. Kept `TRACKSIDE_FACT_RETENTION_DAYS` (90).
#
# `who` is who counts as one unique: `u:<user>` when the view has a user (its own or lent from
# the visitor's nearest signed-in request), else `v:<visitor>` (the day's salted hash).


class FactPageViewRow(SQLModel, table=True):
    """One page view (a navigation, or a beacon the proxy did not see), with its visit and time on page."""

    __tablename__ = "fact_page_views"
    __table_args__ = (Index("ix_fact_page_views_visitor", "day", "visitor"),)

    day: date = Field(primary_key=True)
    id: str = Field(sa_column=Column(String(36), primary_key=True))
    ts: datetime = Field(sa_column=Column(DateTime, nullable=False))
    hour: int = Field(sa_column=Column(SmallInteger, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    who: str = Field(sa_column=Column(String(66), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    visit_id: str = Field(sa_column=Column(String(36), nullable=False))
    label: str = Field(sa_column=Column(String(128), nullable=False))
    path: str = Field(sa_column=Column(String(512), nullable=False))
    referrer: str | None = Field(default=None, sa_column=Column(String(255)))
    source: str | None = Field(default=None, sa_column=Column(String(64)))
    utm_source: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_medium: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_campaign: str | None = Field(default=None, sa_column=Column(String(100)))
    device: str = Field(sa_column=Column(String(16), nullable=False))
    browser: str = Field(sa_column=Column(String(64), nullable=False))
    os: str = Field(sa_column=Column(String(64), nullable=False))
    country: str | None = Field(default=None, sa_column=Column(String(2)))
    view_type: str | None = Field(default=None, sa_column=Column(String(16)))
    time_on_page_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    # What the web snippet reported of this page view (migration 0018): the deepest scroll (0-100 %)
    # and the milliseconds it was visible; NULL when it reported nothing.
    scroll_depth: int | None = Field(default=None, sa_column=Column(SmallInteger))
    visible_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    # The route labels of the page views before and after it in its visit (journeys); NULL: none.
    prev_label: str | None = Field(default=None, sa_column=Column(String(128)))
    next_label: str | None = Field(default=None, sa_column=Column(String(128)))


class FactLookRow(SQLModel, table=True):
    """One look: one visitor on one item within the view window (DESIGN.md). The author's own
    looks are stored too and left out when aggregating (`item_authors`)."""

    __tablename__ = "fact_looks"
    __table_args__ = (
        Index("ix_fact_looks_visitor", "day", "visitor"),
        # With the time: an item's first and last look of a day are the two ends of its range.
        Index("ix_fact_looks_item", "content_kind", "content_id", "day", "ts"),
    )

    day: date = Field(primary_key=True)
    id: str = Field(sa_column=Column(String(36), primary_key=True))
    ts: datetime = Field(sa_column=Column(DateTime, nullable=False))
    hour: int = Field(sa_column=Column(SmallInteger, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    who: str = Field(sa_column=Column(String(66), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    content_kind: str = Field(sa_column=Column(String(32), nullable=False))
    content_id: str = Field(sa_column=Column(String(128), nullable=False))
    view_type: str = Field(sa_column=Column(String(16), nullable=False))
    device: str = Field(sa_column=Column(String(16), nullable=False))
    country: str | None = Field(default=None, sa_column=Column(String(2)))
    referrer: str | None = Field(default=None, sa_column=Column(String(255)))


class FactImpressionRow(SQLModel, table=True):
    """An item shown in a feed, a search result or a widget."""

    __tablename__ = "fact_impressions"
    __table_args__ = (
        Index("ix_fact_impressions_visitor", "day", "visitor"),
        Index("ix_fact_impressions_item", "content_kind", "content_id", "day"),
    )

    day: date = Field(primary_key=True)
    id: str = Field(sa_column=Column(String(36), primary_key=True))
    ts: datetime = Field(sa_column=Column(DateTime, nullable=False))
    hour: int = Field(sa_column=Column(SmallInteger, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    who: str = Field(sa_column=Column(String(66), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    content_kind: str = Field(sa_column=Column(String(32), nullable=False))
    content_id: str = Field(sa_column=Column(String(128), nullable=False))
    view_type: str = Field(sa_column=Column(String(16), nullable=False))


class FactSiteEventRow(SQLModel, table=True):
    """A site event (`kind` "event": signup, upload, a rule's or a hint's name), an error
    (`kind` "error", `name` its type), or a beacon set aside as unverified (`kind` "unverified").
    `user_id` is the request's own; `visit_id` is set for site events (they extend a visit)."""

    __tablename__ = "fact_site_events"
    __table_args__ = (Index("ix_fact_site_events_visitor", "day", "visitor"),)

    day: date = Field(primary_key=True)
    id: str = Field(sa_column=Column(String(36), primary_key=True))
    # One request can be both an error and a named event: a row for each.
    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    ts: datetime = Field(sa_column=Column(DateTime, nullable=False))
    hour: int = Field(sa_column=Column(SmallInteger, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    who: str = Field(sa_column=Column(String(66), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    visit_id: str | None = Field(default=None, sa_column=Column(String(36)))
    name: str = Field(sa_column=Column(String(64), nullable=False))
    label: str = Field(sa_column=Column(String(128), nullable=False))
    path: str = Field(sa_column=Column(String(512), nullable=False))


class FactVisitorDayRow(SQLModel, table=True):
    """A visitor-day's additive counts that need no row each: API calls (the bulk of requests)."""

    __tablename__ = "fact_visitor_days"

    day: date = Field(primary_key=True)
    visitor: str = Field(sa_column=Column(String(32), primary_key=True))
    api_calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    api_calls_authenticated: int = Field(sa_column=Column(BigInteger, nullable=False))


class FactVisitRow(SQLModel, table=True):
    """A visit: one visitor's page views and site events with no gap over 30 minutes, within one
    UTC day. Its id is its first page view's (or event's) id; source, UTM and device are its entry's."""

    __tablename__ = "fact_visits"
    __table_args__ = (Index("ix_fact_visits_visitor", "day", "visitor"),)

    day: date = Field(primary_key=True)
    id: str = Field(sa_column=Column(String(36), primary_key=True))
    visitor: str = Field(sa_column=Column(String(32), nullable=False))
    who: str = Field(sa_column=Column(String(66), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    started_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    ended_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    duration_s: int = Field(sa_column=Column(BigInteger, nullable=False))
    page_views: int = Field(sa_column=Column(BigInteger, nullable=False))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    bounce: bool = Field(sa_column=Column(Boolean, nullable=False))
    entry_page: str | None = Field(default=None, sa_column=Column(String(512)))
    exit_page: str | None = Field(default=None, sa_column=Column(String(512)))
    entry_label: str | None = Field(default=None, sa_column=Column(String(128)))
    exit_label: str | None = Field(default=None, sa_column=Column(String(128)))
    referrer: str | None = Field(default=None, sa_column=Column(String(255)))
    source: str | None = Field(default=None, sa_column=Column(String(64)))
    utm_source: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_medium: str | None = Field(default=None, sa_column=Column(String(100)))
    utm_campaign: str | None = Field(default=None, sa_column=Column(String(100)))
    device: str = Field(sa_column=Column(String(16), nullable=False))
    browser: str = Field(sa_column=Column(String(64), nullable=False))
    os: str = Field(sa_column=Column(String(64), nullable=False))
    country: str | None = Field(default=None, sa_column=Column(String(2)))


class ItemAuthorRow(SQLModel, table=True):
    """An item's author, from the first upstream hint that named it: crosses visitors, so it is
    kept apart from derivation and applied when aggregating (the author's own looks are no views)."""

    __tablename__ = "item_authors"

    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), primary_key=True))
    author_id: str = Field(sa_column=Column(String(64), nullable=False))


class ItemTitleRow(SQLModel, table=True):
    """An item's title for the dashboard: the last `X-Trackside-Title` hint, or the title field of
    the item's API answer asked at read time (`sidecar.titles`); plain text, at most 200 characters."""

    __tablename__ = "item_titles"

    content_kind: str = Field(sa_column=Column(String(32), primary_key=True))
    content_id: str = Field(sa_column=Column(String(128), primary_key=True))
    title: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class DeriveMarkRow(SQLModel, table=True):
    """A visitor-day whose raw events are stored but whose facts are not derived yet: events
    stored before facts existed (the upgrade marks them all), or a derivation that failed. The
    worker (or the embedded writer) derives and clears them; a rollup derives its day's first."""

    __tablename__ = "derive_marks"

    day: date = Field(primary_key=True)
    visitor: str = Field(sa_column=Column(String(32), primary_key=True))
    marked_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    # The earliest new event since the last derivation (None: derive the whole day), and a random
    # version every new mark replaces: the deriver clears a mark only if no batch marked it meanwhile.
    earliest: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    api: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class FactSumDayRow(SQLModel, table=True):
    """A day whose page-view sums (`fact_sum_who`, `fact_sums`) are kept by derivation: every page
    view of the day is in them. Sums start with a day's first page view and are dropped once the
    day is rolled up (`trackside.storage.day_sums`)."""

    __tablename__ = "fact_sum_days"

    day: date = Field(primary_key=True)


class FactSumWhoRow(SQLModel, table=True):
    """Page views of one day by breakdown (`dim` "" and `key` "": all of them) and signed-in unique
    (`who` "u:<user>"; anonymous ones are in `fact_sum_visitors`):
    moved by the difference between a visitor-day's old and new facts at each derivation. A row
    at 0 is a unique no longer counted (left in place: cheaper than deleting it)."""

    __tablename__ = "fact_sum_who"
    __table_args__ = (Index("ix_fact_sum_who_who", "day", "who"),)

    day: date = Field(primary_key=True)
    dim: str = Field(sa_column=Column(String(16), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    who: str = Field(sa_column=Column(String(66), primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


class FactSumVisitorRow(SQLModel, table=True):
    """One anonymous visitor-day's page views per breakdown key and looks per item, of a day whose
    sums are kept: its uniques, moved once per derivation (`trackside.storage.visitor_sums`)."""

    __tablename__ = "fact_sum_visitors"

    day: date = Field(primary_key=True)
    visitor: str = Field(sa_column=Column(String(32), primary_key=True))
    counts: str = Field(sa_column=Column(Text, nullable=False))


class FactSumRow(SQLModel, table=True):
    """Per day and breakdown key: page views, signed-in page views, unique visitors (the `who`
    rows above 0) and signed-in ones; what sitewide stats read for a day not rolled up yet."""

    __tablename__ = "fact_sums"

    day: date = Field(primary_key=True)
    dim: str = Field(sa_column=Column(String(16), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))
    n_auth: int = Field(sa_column=Column(BigInteger, nullable=False))
    visitors: int = Field(sa_column=Column(BigInteger, nullable=False))
    visitors_auth: int = Field(sa_column=Column(BigInteger, nullable=False))


class ItemSumWhoRow(SQLModel, table=True):
    """An item's looks of one day per signed-in unique (`who`; anonymous ones are in
    `fact_sum_visitors`), moved at each derivation like `fact_sum_who`:
    a viewer counts while its row is above 0 (`trackside.storage.item_sums`)."""

    __tablename__ = "item_sum_who"
    __table_args__ = (Index("ix_item_sum_who_who", "day", "who"),)

    day: date = Field(primary_key=True)
    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    item: str = Field(sa_column=Column(String(128), primary_key=True))
    who: str = Field(sa_column=Column(String(66), primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


class ItemSumRow(SQLModel, table=True):
    """An item's looks, impressions, viewers and their breakdowns of one day, per signed-in user
    ("" for anonymous), so the author's own can be left out when reading (`item_sums`)."""

    __tablename__ = "item_sums"

    day: date = Field(primary_key=True)
    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    item: str = Field(sa_column=Column(String(128), primary_key=True))
    dim: str = Field(sa_column=Column(String(16), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    user_id: str = Field(sa_column=Column(String(64), primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


class GoalRow(SQLModel, table=True):
    """A goal added by `trackside goals add` or the goals API (`trackside.goals`); the settings'
    goals are not stored."""

    __tablename__ = "goals"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    kind: str = Field(sa_column=Column(String(8), nullable=False))
    match: str = Field(sa_column=Column(String(512), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class FunnelRow(SQLModel, table=True):
    """A funnel added by a moderator (`trackside.funnels`): its steps as JSON; the settings' funnels
    are not stored."""

    __tablename__ = "funnels"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    steps: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class UserDayRow(SQLModel, table=True):
    """A signed-in user active on a UTC day (any signed-in request), written by the rollup: what the
    weekly retention grid reads. User ids only; pruned with the daily rows."""

    __tablename__ = "user_days"
    __table_args__ = (Index("ix_user_days_user", "user_id", "day"),)

    day: date = Field(primary_key=True)
    user_id: str = Field(sa_column=Column(String(64), primary_key=True))


class UserFirstSeenRow(SQLModel, table=True):
    """A signed-in user's first and last day in `user_days` (its retention cohort is its first
    day's week); pruned once its last day is older than the daily rows' retention."""

    __tablename__ = "user_first_seen"
    __table_args__ = (Index("ix_user_first_seen_first", "first_day"),)

    user_id: str = Field(sa_column=Column(String(64), primary_key=True))
    first_day: date = Field(sa_column=Column(Date, nullable=False))
    last_day: date = Field(sa_column=Column(Date, nullable=False))


class RetentionWeekRow(SQLModel, table=True):
    """The retention grid's cells: signed-in users first seen in `cohort_week` who were active in
    `active_week` (both Mondays, UTC), recomputed by the rollup from `user_days` and `user_first_seen`."""

    __tablename__ = "retention_weeks"

    cohort_week: date = Field(primary_key=True)
    active_week: date = Field(primary_key=True)
    users: int = Field(sa_column=Column(BigInteger, nullable=False))


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
FACT_PAGE_VIEWS = FactPageViewRow.__table__  # type: ignore[attr-defined]
FACT_LOOKS = FactLookRow.__table__  # type: ignore[attr-defined]
FACT_IMPRESSIONS = FactImpressionRow.__table__  # type: ignore[attr-defined]
FACT_SITE_EVENTS = FactSiteEventRow.__table__  # type: ignore[attr-defined]
FACT_VISITOR_DAYS = FactVisitorDayRow.__table__  # type: ignore[attr-defined]
FACT_VISITS = FactVisitRow.__table__  # type: ignore[attr-defined]
ITEM_AUTHORS = ItemAuthorRow.__table__  # type: ignore[attr-defined]
ITEM_TITLES = ItemTitleRow.__table__  # type: ignore[attr-defined]
DERIVE_MARKS = DeriveMarkRow.__table__  # type: ignore[attr-defined]
FACT_SUM_DAYS = FactSumDayRow.__table__  # type: ignore[attr-defined]
FACT_SUM_WHO = FactSumWhoRow.__table__  # type: ignore[attr-defined]
FACT_SUMS = FactSumRow.__table__  # type: ignore[attr-defined]
ITEM_SUM_WHO = ItemSumWhoRow.__table__  # type: ignore[attr-defined]
ITEM_SUMS = ItemSumRow.__table__  # type: ignore[attr-defined]
# Kept by derivation for the days not rolled up (`day_sums`, `item_sums`).
FACT_SUM_VISITORS = FactSumVisitorRow.__table__  # type: ignore[attr-defined]
SUM_TABLES = (FACT_SUM_DAYS, FACT_SUMS, FACT_SUM_WHO, FACT_SUM_VISITORS, ITEM_SUMS, ITEM_SUM_WHO)
GOALS = GoalRow.__table__  # type: ignore[attr-defined]
FUNNELS = FunnelRow.__table__  # type: ignore[attr-defined]
USER_DAYS = UserDayRow.__table__  # type: ignore[attr-defined]
RETENTION_WEEKS = RetentionWeekRow.__table__  # type: ignore[attr-defined]
USER_FIRST_SEEN = UserFirstSeenRow.__table__  # type: ignore[attr-defined]
# Replaced whole per visitor-day by derivation; pruned by `TRACKSIDE_FACT_RETENTION_DAYS`.
FACT_TABLES = (FACT_PAGE_VIEWS, FACT_LOOKS, FACT_IMPRESSIONS, FACT_SITE_EVENTS, FACT_VISITOR_DAYS, FACT_VISITS)


class JourneyDayRow(SQLModel, table=True):
    """Journeys' daily rows, written by the rollup of each closed day (`trackside.storage.journey_days`):
    per route label, its passages and distinct visits by the label of the page before it (`side`
    "prev") or after it ("next") in the visit, `neighbour` "" for none (entry, exit); `side` "page":
    its totals. Pruned with the daily rows."""

    __tablename__ = "journey_days"
    __table_args__ = (Index("ix_journey_days_label", "label", "day"),)

    day: date = Field(primary_key=True)
    label: str = Field(sa_column=Column(String(128), primary_key=True))
    side: str = Field(sa_column=Column(String(4), primary_key=True))
    neighbour: str = Field(sa_column=Column(String(128), primary_key=True))
    passages: int = Field(sa_column=Column(BigInteger, nullable=False))
    visits: int = Field(sa_column=Column(BigInteger, nullable=False))


JOURNEY_DAYS = JourneyDayRow.__table__  # type: ignore[attr-defined]


class FunnelStringRow(SQLModel, table=True):
    """Every string a funnel day's encoding names (paths, event names, labels, signed-in users, visit
    dimensions' values), numbered once for all days (`trackside.storage.funnel_days`)."""

    __tablename__ = "funnel_strings"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    text: str = Field(sa_column=Column(String(512), nullable=False, unique=True))


class FunnelDayRow(SQLModel, table=True):
    """A closed day's visits in columns for funnels, one row per part (`trackside.storage.funnel_days`),
    written by the rollup; deleted with the day's facts."""

    __tablename__ = "funnel_days"

    day: date = Field(primary_key=True)
    part: str = Field(sa_column=Column(String(8), primary_key=True))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


FUNNEL_STRINGS = FunnelStringRow.__table__  # type: ignore[attr-defined]
FUNNEL_DAYS = FunnelDayRow.__table__  # type: ignore[attr-defined]
