"""Sitewide stats: the shape the site's metrics panel reads (`makapix-reference.md` section 4.2,
the original `_30d` version), every page-view figure with its `_authenticated` twin, bots apart.

- page views: navigations the proxy (or the snippet) saw, back and reload included; bots never.
- unique visitors: signed-in users merged over the 30 days plus anonymous visitor-days.
- daily series: 30 UTC days ending today, zero-filled; hourly: the last 24 UTC hours.
- closed days from their daily rollups, today (and a day not rolled up yet) from what is stored at
  the time of the read: `computed_at`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.figures import DayFigures, load_days, merge_users
from trackside.stats.cache import ClosedDays, closed_state
from trackside.stats.series import hour_label, hour_starts, iso, top
from trackside.storage.reads import bot_hits, bot_hits_by_day

DAYS = 30

# What `computed_at` means, in every stats answer that has it.
COMPUTED_AT = (
    "the time of the read: the figures include every event stored by then (closed days from their daily "
    "rollups, today from the stored events); an answer that includes today is cached at most 5 seconds"
)

DEFINITIONS = {
    "page_views": "every navigation seen (documents, Next.js data and RSC fetches, snippet beacons); bots never",
    "unique_visitors": "signed-in users merged over the period plus anonymous visitor-days",
    "api_calls": "requests routed to the API",
    "errors": "5xx answers (upstream or the sidecar's 502/504) and 404 pages",
    "authenticated": "the same figure for signed-in visitors only",
    "bot_traffic": "requests from bots, kept apart from every other figure",
    "new_signups": "answered sign-up requests (route rules, or the site's X-Trackside-Event hint)",
    "new_posts": "answered upload requests (route rules, or the site's X-Trackside-Event hint)",
    "impressions": "items shown in feeds, search results or widgets; not page views",
    "unverified_beacons": "beacons without a valid page token from visitors the proxy never saw within the view "
    "window: in no figure",
    "computed_at": COMPUTED_AT,
}


async def site_stats(
    conn: AsyncConnection,
    *,
    now: datetime,
    window_seconds: float,
    closed: ClosedDays | None = None,
) -> dict[str, Any]:
    """`closed`: where closed days' figures are kept between reads (none: all read now)."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    # Without the looks' breakdowns by view type and device: not shown here (`read_site`).
    if closed is None:
        days = await load_days(conn, first, today, window_seconds, with_items=False, looks=False)
    else:
        days = await closed.load(
            conn, first, today, window_seconds, await closed_state(conn, first, today), with_items=False, looks=False
        )
    by_day = {d.day: d for d in days}
    out: dict[str, Any] = {}
    dims: dict[tuple[str, bool], Counter[str]] = {}
    for d in days:
        for (dim, key), (count, count_auth, _, _) in d.dims.items():
            dims.setdefault((dim, False), Counter())[key] += count
            dims.setdefault((dim, True), Counter())[key] += count_auth
    users = merge_users([(d.users, d.users_sketch) for d in days])
    anonymous = sum(d.unique_visitors - d.unique_visitors_authenticated for d in days)

    def total(name: str) -> int:
        return sum(d.counts[name] for d in days)

    out["total_page_views_30d"] = total("page_views")
    out["total_page_views_30d_authenticated"] = total("page_views_authenticated")
    out["unique_visitors_30d"] = users + anonymous
    out["unique_visitors_30d_authenticated"] = users
    for suffix in ("", "_authenticated"):
        out["new_signups_30d" + suffix] = total("signups" + suffix)
        out["new_posts_30d" + suffix] = total("uploads" + suffix)
        out["total_api_calls_30d" + suffix] = total("api_calls" + suffix)
        out["total_errors_30d" + suffix] = total("errors" + suffix)
        out["total_impressions_30d" + suffix] = total("impressions" + suffix)
        for series, name in (
            ("views", "page_views"),
            ("signups", "signups"),
            ("posts", "uploads"),
            ("api_calls", "api_calls"),
            ("errors", "errors"),
        ):
            out[f"daily_{series}{suffix}"] = _series(days, lambda d, key=name + suffix: d.counts[key])
    out["daily_unique_visitors"] = _series(days, lambda d: d.unique_visitors)
    out["daily_unique_visitors_authenticated"] = _series(days, lambda d: d.unique_visitors_authenticated)
    for suffix, column in (("", 0), ("_authenticated", 1)):
        out["hourly_views" + suffix] = _hourly(by_day, now, column)
        out["hourly_unique_visitors" + suffix] = _hourly(by_day, now, column + 2)
    for suffix, auth in (("", False), ("_authenticated", True)):
        out["views_by_page" + suffix] = top(dims.get(("label", auth), Counter()), 20)
        out["views_by_country" + suffix] = top(dims.get(("country", auth), Counter()), 10)
        out["views_by_device" + suffix] = top(dims.get(("device", auth), Counter()))
        out["views_by_browser" + suffix] = top(dims.get(("browser", auth), Counter()), 10)
        out["top_referrers" + suffix] = top(dims.get(("referrer", auth), Counter()), 10)
    out["errors_by_type"] = top(dims.get(("error", False), Counter()))
    out["errors_by_type_authenticated"] = top(dims.get(("error", True), Counter()))
    bots_daily = await bot_hits_by_day(conn, first, today)
    out["bot_traffic"] = {
        "total_30d": sum(bots_daily.values()),
        "by_bot": top(Counter(await bot_hits(conn, first, today)), 20),
        "daily": [{"date": d.day.isoformat(), "count": bots_daily.get(d.day, 0)} for d in days],
    }
    out["unverified_beacons"] = top(dims.get(("unverified", False), Counter()))
    out["computed_at"] = iso(as_of(days, today) or now)
    out["definitions"] = DEFINITIONS
    return out


def as_of(days: list[DayFigures], today: date) -> datetime | None:
    """When today's figures among `days` were read from the stored events, if known."""
    return next((d.as_of for d in days if d.day == today and not d.rolled), None)


def _series(days: list[DayFigures], value: Any) -> list[dict[str, Any]]:
    return [{"date": d.day.isoformat(), "count": int(value(d))} for d in days]


def _hourly(by_day: dict[Any, DayFigures], now: datetime, column: int) -> list[dict[str, Any]]:
    points = []
    for start in hour_starts(now):
        d = by_day.get(start.date())
        value = d.dims.get(("hour", f"{start.hour:02d}"), [0, 0, 0, 0])[column] if d else 0
        points.append({"hour": hour_label(start), "count": value})
    return points
