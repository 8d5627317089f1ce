"""A day's figures from its derived views: pure, no I/O.

The rollup stores exactly this; live reads of a day not rolled up yet compute exactly this from
raw events. So a figure is the same before and after its day is rolled up."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from trackside import events as ev
from trackside.enrich.family_names import canonical_browser, canonical_os
from trackside.views import DayViews

# Breakdowns of page views kept per day. Each key is bounded: labels are grouped at capture.
SITE_DIMS = ("label", "country", "device", "browser", "os", "referrer", "hour", "utm_source")
CONTENT_DIMS = ("country", "device", "type", "referrer", "hour")


@dataclass(slots=True)
class DimCount:
    count: int = 0
    count_authenticated: int = 0
    who: set[str] = field(default_factory=set)
    who_authenticated: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ItemDay:
    views: int = 0
    views_authenticated: int = 0
    impressions: int = 0
    impressions_authenticated: int = 0
    viewers: set[str] = field(default_factory=set)
    viewers_authenticated: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    first_at: datetime | None = None
    last_at: datetime | None = None
    dims: dict[tuple[str, str], list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class SiteDay:
    day: date
    raw_events: int = 0
    page_views: int = 0
    page_views_authenticated: int = 0
    visitors: set[str] = field(default_factory=set)
    visitors_authenticated: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    signups: int = 0
    uploads: int = 0
    api_calls: int = 0
    errors: int = 0
    impressions: int = 0
    bot_hits: int = 0
    signups_authenticated: int = 0
    uploads_authenticated: int = 0
    api_calls_authenticated: int = 0
    errors_authenticated: int = 0
    impressions_authenticated: int = 0
    dims: dict[tuple[str, str], DimCount] = field(default_factory=lambda: defaultdict(DimCount))
    items: dict[tuple[str, str], ItemDay] = field(default_factory=lambda: defaultdict(ItemDay))


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def aggregate_day(day: date, events: list[ev.Event], views: DayViews, bot_hits: int = 0) -> SiteDay:
    out = SiteDay(day, bot_hits=bot_hits, raw_events=len(events))
    for e in events:
        # These requests carry their own token (API calls do), so their user is their own.
        signed_in = e.user_id is not None
        if e.nav == ev.NAV_API:
            out.api_calls += 1
            out.api_calls_authenticated += signed_in
        if e.kind == ev.ERROR:
            out.errors += 1
            out.errors_authenticated += signed_in
            _dim(out, "error", e.error_type or "unknown", e.user_id, "")
        if e.event_name:
            if e.event_name == "signup":
                out.signups += 1
                out.signups_authenticated += signed_in
            elif e.event_name == "upload":
                out.uploads += 1
                out.uploads_authenticated += signed_in
            _dim(out, "event", e.event_name, e.user_id, "")

    for e in views.unverified:
        # Beacons without a valid page token: kept apart from every figure, reported as such.
        _dim(out, "unverified", e.view_type or e.kind, None, "")

    for pv in views.page_views:
        e = pv.event
        who = pv.who
        out.page_views += 1
        out.visitors.add(who)
        if pv.user:
            out.page_views_authenticated += 1
            out.visitors_authenticated.add(who)
            out.users.add(pv.user)
        for dim, key in (
            ("label", e.label),
            ("country", e.country),
            ("device", e.device),
            # Names stored by older versions ("Mobile Safari", "Mac OS X") are read as today's.
            ("browser", canonical_browser(e.browser) if e.browser else e.browser),
            ("os", canonical_os(e.os) if e.os else e.os),
            ("referrer", e.referrer),
            ("hour", f"{datetime.fromtimestamp(e.ts, UTC).hour:02d}"),
            ("utm_source", e.utm_source),
        ):
            if key:
                _dim(out, dim, key, pv.user, who)

    for look in views.looks:
        item = out.items[(look.content_kind, look.content_id)]
        first = look.first
        item.views += 1
        item.viewers.add(look.who)
        if look.user:
            item.views_authenticated += 1
            item.viewers_authenticated.add(look.who)
            item.users.add(look.user)
        # Site-wide looks by view type (view, player, widget, ...) and by the viewer's device.
        _dim(out, "view_type", first.view_type or "view", look.user, look.who)
        _dim(out, "view_device", first.device, look.user, look.who)
        at = _at(first.ts)
        item.first_at = at if item.first_at is None or at < item.first_at else item.first_at
        item.last_at = at if item.last_at is None or at > item.last_at else item.last_at
        for dim, key in (
            ("country", first.country),
            ("device", first.device),
            ("type", first.view_type or "view"),
            ("referrer", first.referrer),
            ("hour", f"{at.hour:02d}"),
        ):
            if key:
                counts = item.dims.setdefault((dim, key), [0, 0])
                counts[0] += 1
                if look.user:
                    counts[1] += 1

    for im in views.impressions:
        e = im.event
        item = out.items[(e.content_kind or "", e.content_id or "")]
        out.impressions += 1
        out.impressions_authenticated += im.user is not None
        item.impressions += 1
        if im.user:
            item.impressions_authenticated += 1
        for dim, key in (("type", e.view_type or "impression"), ("impression_hour", f"{_at(e.ts).hour:02d}")):
            counts = item.dims.setdefault((dim, key), [0, 0])
            counts[0] += 1
            if im.user:
                counts[1] += 1
    return out


def _dim(out: SiteDay, dim: str, key: str, user: str | None, who: str) -> None:
    d = out.dims[(dim, key[:255])]
    d.count += 1
    if who:
        d.who.add(who)
    if user:
        d.count_authenticated += 1
        d.who_authenticated.add(who)
