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
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.derive import Derivation
from trackside.figures import Pending, derive_pending, load_days, sum_days
from trackside.storage.daily import late_unrolled
from trackside.storage.engine import snapshot
from trackside.storage.reads import bot_hits


async def build_report(
    engine: AsyncEngine, since: date, until: date, window_seconds: float, derivation: Derivation | None = None
) -> dict[str, Any]:
    """The figures of [since, until]. With the settings' `derivation`, everything still queued for
    the deriver is derived first (see `trackside.figures.derive_pending`); `pending` names what a
    batch stored meanwhile left out."""
    pending = Pending()
    if derivation is not None:
        async with engine.connect() as conn:
            pending = await derive_pending(conn, since, until, derivation, limit=None)
    async with snapshot(engine) as conn:
        totals = sum_days(await load_days(conn, since, until, window_seconds))
        bots = await bot_hits(conn, since, until)
        late = await late_unrolled(conn, since, until)
    content: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (kind, item), figures in totals.items.items():
        if not figures["views"]:
            continue  # an item with impressions only has no views to report here
        content[kind].append(
            {
                "id": item,
                "views": figures["views"],
                "views_authenticated": figures["views_authenticated"],
                "unique_viewers": figures["unique_viewers"],
                "unique_viewers_authenticated": figures["unique_viewers_authenticated"],
            }
        )
    for items in content.values():
        items.sort(key=lambda row: (-row["views"], row["id"]))
    dims = totals.dims
    counts = totals.counts

    def dim(name: str) -> dict[str, int]:
        return _ranked(dims.get(name, Counter()))

    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "page_views": {
            "total": counts["page_views"],
            "authenticated": counts["page_views_authenticated"],
            "by_label": dim("label"),
        },
        "unique_visitors": totals.unique_visitors,
        "unique_visitors_authenticated": totals.unique_visitors_authenticated,
        "content": dict(sorted(content.items())),
        "content_views_by_type": dim("view_type"),
        "content_views_by_device": dim("view_device"),
        "api_calls": counts["api_calls"],
        "errors": dim("error"),
        "signups": counts["signups"],
        "uploads": counts["uploads"],
        "site_events": dim("event"),
        "devices": dim("device"),
        "browsers": dim("browser"),
        "countries": dim("country"),
        "referrers": dim("referrer"),
        "bots": _ranked(Counter(bots)),
        "unverified_beacons": dim("unverified"),
        # Late events of days whose raw events were pruned: in the additive counts above, never
        # in uniques or content views (those days are not rolled up again).
        "late_events_unrolled": late,
        # Visitor-days stored but not derived into these figures (a batch stored while the report
        # derived the queue): 0 when every stored event is in them.
        "pending_visitor_days": pending.visitor_days,
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
    if report["late_events_unrolled"]:
        lines.append(
            f"Late events       {report['late_events_unrolled']:>10}   for days already pruned: in the counts,"
            " not in uniques or content views"
        )
    if report.get("pending_visitor_days"):
        lines.append(
            f"Not derived yet   {report['pending_visitor_days']:>10}   visitor-days stored while this report"
            " was made: not in these figures"
        )
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
    block("Content views by view type", report["content_views_by_type"])
    block("Content views by device", report["content_views_by_device"])
    block("Errors by type", report["errors"])
    block("Devices", report["devices"])
    block("Browsers", report["browsers"])
    block("Countries", report["countries"])
    block("Referrers", report["referrers"])
    block("Bots (apart from every figure above)", report["bots"])
    block("Beacons from visitors the proxy never saw (apart from every figure above)", report["unverified_beacons"])
    return "\n".join(lines)
