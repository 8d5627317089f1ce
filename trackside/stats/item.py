"""Stats of one content item (an artwork, a blog post): the shape the site's stats panel reads
(`makapix-reference.md` section 4.1, 30-day version), every figure with its `_authenticated` twin.

- views: looks (one visitor on the item within the view window), the author's own excluded.
- unique_viewers: signed-in users merged over the 30 days (never a sum of daily figures) plus
  anonymous visitor-days (an anonymous id rotates with the daily salt).
- impressions: the item shown in a feed, a search result or a widget; apart from views.
- daily series: 30 UTC days ending today, zero-filled; hourly: the last 24 UTC hours.
- closed days from their daily rollups, today (and a day not rolled up yet) from what is stored at
  the time of the read: `computed_at`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.figures import ItemFigures, item_days, merge_users
from trackside.stats.series import day_range, hour_label, hour_starts, iso, top
from trackside.stats.site import COMPUTED_AT

DAYS = 30

DEFINITIONS = {
    "views": "looks: one visitor on this item within the view window, however many requests; author excluded",
    "unique_viewers": "signed-in users merged over the period plus anonymous visitor-days",
    "impressions": "times the item was shown in a feed, search result or widget; not views",
    "authenticated": "the same figure for signed-in viewers only",
    "bots": "never counted",
    "computed_at": COMPUTED_AT,
}


async def item_stats(
    conn: AsyncConnection,
    kind: str,
    item: str,
    *,
    now: datetime,
    window_seconds: float,
) -> dict[str, Any] | None:
    """None when the item has no view and no impression in the 30 days."""
    today = now.astimezone(UTC).date()
    days = await item_days(conn, kind, item, today - timedelta(days=DAYS - 1), today, window_seconds)
    present = [(d, f) for d, f in days if f is not None]
    if not present:
        return None
    by_day: dict[date, ItemFigures] = dict(present)
    parts = [f for _, f in present]
    out: dict[str, Any] = {}
    for suffix, auth in (("", False), ("_authenticated", True)):
        views = "views_authenticated" if auth else "views"
        impressions = "impressions_authenticated" if auth else "impressions"
        users = merge_users([(f.users, f.users_sketch) for f in parts])
        anonymous = 0 if auth else sum(f.anonymous_viewers for f in parts)
        dims: dict[str, Counter[str]] = {}
        for f in parts:
            for (dim, key), counts in f.dims.items():
                dims.setdefault(dim, Counter())[key] += counts[1 if auth else 0]
        out["total_views" + suffix] = sum(f.counts[views] for f in parts)
        out["unique_viewers" + suffix] = users + anonymous
        out["total_impressions" + suffix] = sum(f.counts[impressions] for f in parts)
        out["views_by_country" + suffix] = top(dims.get("country", Counter()), 10)
        out["views_by_device" + suffix] = top(dims.get("device", Counter()))
        out["views_by_type" + suffix] = top(dims.get("type", Counter()))
        out["top_referrers" + suffix] = top(dims.get("referrer", Counter()), 10)
        out["daily_views" + suffix] = [_daily(d, by_day.get(d), auth) for d in day_range(today, DAYS)]
        out["hourly_views" + suffix] = _hourly(by_day, now, auth)
    firsts = [f.first_at for f in parts if f.first_at is not None]
    lasts = [f.last_at for f in parts if f.last_at is not None]
    out["first_view_at"] = iso(min(firsts)) if firsts else None
    out["last_view_at"] = iso(max(lasts)) if lasts else None
    out["computed_at"] = iso(now)
    out["definitions"] = DEFINITIONS
    return out


def _daily(day: date, f: ItemFigures | None, auth: bool) -> dict[str, Any]:
    if f is None:
        return {"date": day.isoformat(), "views": 0, "unique_viewers": 0, "impressions": 0}
    return {
        "date": day.isoformat(),
        "views": f.counts["views_authenticated" if auth else "views"],
        "unique_viewers": f.viewers_authenticated if auth else f.viewers,
        "impressions": f.counts["impressions_authenticated" if auth else "impressions"],
    }


def _hourly(by_day: dict[date, ItemFigures], now: datetime, auth: bool) -> list[dict[str, Any]]:
    points = []
    for start in hour_starts(now):
        f = by_day.get(start.date())
        key = f"{start.hour:02d}"
        views = impressions = 0
        if f is not None:
            views = f.dims.get(("hour", key), [0, 0])[1 if auth else 0]
            impressions = f.dims.get(("impression_hour", key), [0, 0])[1 if auth else 0]
        points.append({"hour": hour_label(start), "views": views, "impressions": impressions})
    return points
