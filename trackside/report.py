"""`trackside report`: the operator's view of a period, from the terminal or as JSON.

Every figure's meaning:
- page_views: navigations the proxy saw (documents, Next.js data and RSC fetches), bots apart.
- unique_visitors: distinct signed-in users plus anonymous visitor-days (an anonymous id rotates
  with the daily salt, so one anonymous person on three days counts three).
- content views: looks (one visitor on one item within the view window), the author's excluded.
- api_calls: requests routed to the API; errors: 5xx answers and 404 pages, by type.
- bots: requests from bots, per bot; never part of any other figure."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from trackside import events as ev
from trackside.storage.reads import bot_hits, day_events
from trackside.views import derive_day


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


async def build_report(engine: AsyncEngine, since: date, until: date, window_seconds: float) -> dict[str, Any]:
    page_views = page_views_auth = api_calls = 0
    by_label: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    browsers: Counter[str] = Counter()
    countries: Counter[str] = Counter()
    referrers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    site_events: Counter[str] = Counter()
    visitors: set[str] = set()
    visitors_auth: set[str] = set()
    looks: dict[tuple[str, str], list[Any]] = defaultdict(list)
    async with engine.connect() as conn:
        for day in _days(since, until):
            events = await day_events(conn, day)
            for e in events:
                if e.nav == ev.NAV_API:
                    api_calls += 1
                if e.kind == ev.ERROR:
                    errors[e.error_type or "unknown"] += 1
                if e.event_name:
                    site_events[e.event_name] += 1
            derived = derive_day(events, window_seconds)
            for pv in derived.page_views:
                e = pv.event
                page_views += 1
                by_label[e.label] += 1
                devices[e.device] += 1
                browsers[e.browser] += 1
                if e.country:
                    countries[e.country] += 1
                if e.referrer:
                    referrers[e.referrer] += 1
                visitors.add(pv.who)
                if pv.user:
                    page_views_auth += 1
                    visitors_auth.add(pv.who)
            for look in derived.looks:
                looks[(look.content_kind, look.content_id)].append(look)
        bots = await bot_hits(conn, since, until)

    content: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (kind, item), item_looks in looks.items():
        signed_in = [lk for lk in item_looks if lk.user]
        content[kind].append(
            {
                "id": item,
                "views": len(item_looks),
                "views_authenticated": len(signed_in),
                "unique_viewers": len({lk.who for lk in item_looks}),
                "unique_viewers_authenticated": len({lk.who for lk in signed_in}),
            }
        )
    for items in content.values():
        items.sort(key=lambda row: (-row["views"], row["id"]))
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "page_views": {"total": page_views, "authenticated": page_views_auth, "by_label": _ranked(by_label)},
        "unique_visitors": len(visitors),
        "unique_visitors_authenticated": len(visitors_auth),
        "content": dict(content),
        "api_calls": api_calls,
        "errors": _ranked(errors),
        "signups": site_events.get("signup", 0),
        "uploads": site_events.get("upload", 0),
        "site_events": _ranked(site_events),
        "devices": _ranked(devices),
        "browsers": _ranked(browsers),
        "countries": _ranked(countries),
        "referrers": _ranked(referrers),
        "bots": _ranked(Counter(bots)),
    }


def _ranked(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def format_report(report: dict[str, Any]) -> str:
    """A plain-text rendering for the terminal, GoAccess style: one block per question."""
    lines = [f"Trackside report {report['since']} .. {report['until']} (UTC days)", ""]
    pv = report["page_views"]
    lines.append(f"Page views        {pv['total']:>10}   signed in {pv['authenticated']}")
    lines.append(
        f"Unique visitors   {report['unique_visitors']:>10}   signed in {report['unique_visitors_authenticated']}"
        "   (users + anonymous visitor-days)"
    )
    lines.append(f"API calls         {report['api_calls']:>10}")
    lines.append(f"Signups           {report['signups']:>10}   uploads {report['uploads']}")
    lines.append("")

    def block(title: str, rows: dict[str, int], limit: int = 20) -> None:
        lines.append(title)
        if not rows:
            lines.append("  (none)")
        for key, n in list(rows.items())[:limit]:
            lines.append(f"  {n:>10}  {key}")
        lines.append("")

    block("Page views by route", pv["by_label"])
    for kind, items in report["content"].items():
        lines.append(f"Content views: {kind} (views / signed in / unique viewers)")
        for row in items[:20]:
            lines.append(
                f"  {row['views']:>10}  {row['views_authenticated']:>6}  {row['unique_viewers']:>6}  {row['id']}"
            )
        lines.append("")
    block("Errors by type", report["errors"])
    block("Devices", report["devices"])
    block("Browsers", report["browsers"])
    block("Countries", report["countries"])
    block("Referrers", report["referrers"])
    block("Bots (apart from every figure above)", report["bots"])
    return "\n".join(lines)
