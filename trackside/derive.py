"""One visitor's day of raw events made into fact rows: page views with their visit and time on
page, looks, impressions, site events, visits and the day's API counts. Pure, no I/O.

Everything here depends on that visitor's own events only (the view rules of `trackside.views`
are per visitor), so a new event re-derives one visitor-day, never a whole day. The one thing that
crosses visitors, an item's author, is kept apart (`item_authors`) and applied when aggregating.

Visits (README, "What the figures mean"): one visitor's page views and site events with no gap over
`VISIT_GAP_SECONDS`. API calls, assets and errors never extend a visit. The anonymous visitor id
changes with the daily salt, so a visit also ends at midnight UTC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from trackside import events as ev
from trackside.enrich.family_names import canonical_browser, canonical_os
from trackside.views import derive_day

VISIT_GAP_SECONDS = 30 * 60.0
_MILLISECOND = timedelta(milliseconds=1)

Row = dict[str, Any]
PathOf = Callable[[ev.Event], str]
SourceOf = Callable[[str | None, str | None], str | None]


def _raw_path(e: ev.Event) -> str:
    return e.path


def _referrer_source(referrer: str | None, utm_source: str | None) -> str | None:
    return referrer or utm_source


@dataclass(slots=True)
class VisitorDayFacts:
    """The fact rows of one visitor-day, per table (column name -> value)."""

    page_views: list[Row] = field(default_factory=list)
    looks: list[Row] = field(default_factory=list)
    impressions: list[Row] = field(default_factory=list)
    site_events: list[Row] = field(default_factory=list)
    visits: list[Row] = field(default_factory=list)
    visitor_day: Row | None = None


@lru_cache(maxsize=1 << 16)
def _at(ts: float) -> datetime:
    # Cached: one event's time becomes a page view's, its visit's start or end, a look's.
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _who(user: str | None, visitor: str) -> str:
    return "u:" + user if user else "v:" + visitor


def derive_visitor_day(
    day: date,
    visitor: str,
    events: list[ev.Event],
    window_seconds: float,
    *,
    path_of: PathOf = _raw_path,
    source_of: SourceOf = _referrer_source,
    api_calls: tuple[int, int] | None = None,
) -> VisitorDayFacts:
    """The facts of `visitor`'s `events` of `day` (any order, duplicates by id removed). `api_calls`
    (all, signed in) when counted apart: the events then need not hold the anonymous ones."""
    if not events:
        # The deriver's most common case on an API-heavy site: a visitor-day of anonymous API calls
        # (counted apart, none read), whose only fact is its count.
        calls, signed_in = api_calls or (0, 0)
        return VisitorDayFacts(
            visitor_day={"day": day, "visitor": visitor, "api_calls": calls, "api_calls_authenticated": signed_in}
        )
    unique = {e.id: e for e in events}
    ordered = sorted(unique.values(), key=lambda e: (e.ts, e.id))
    # What the snippet measured of a page view refines that page view; it is no event of its own.
    engagements = [e for e in ordered if e.kind == ev.ENGAGEMENT]
    if engagements:
        ordered = [e for e in ordered if e.kind != ev.ENGAGEMENT]
    views = derive_day(ordered, window_seconds, exclude_authors=False)
    out = VisitorDayFacts()

    api_count = api_count_authenticated = 0
    for e in ordered:
        signed_in = e.user_id is not None
        if e.nav == ev.NAV_API:
            api_count += 1
            api_count_authenticated += signed_in
        if e.kind != ev.ERROR and not e.event_name:
            continue  # no site event: its row is not made (most events; `path_of` can cost)
        base = {"day": day, "id": e.id, "ts": _at(e.ts), "hour": _at(e.ts).hour, "visitor": visitor,
                "who": _who(e.user_id, visitor), "user_id": e.user_id, "visit_id": None,
                "label": e.label, "path": path_of(e)}  # fmt: skip
        if e.kind == ev.ERROR:
            out.site_events.append({**base, "kind": "error", "name": (e.error_type or "unknown")[:64]})
        if e.event_name:
            out.site_events.append({**base, "kind": "event", "name": e.event_name[:64]})
    for e in views.unverified:
        # Beacons without a valid page token from a visitor the proxy never saw near them.
        out.site_events.append(
            {
                "day": day,
                "id": e.id,
                "ts": _at(e.ts),
                "hour": _at(e.ts).hour,
                "visitor": visitor,
                "who": _who(None, visitor),
                "user_id": None,
                "visit_id": None,
                "kind": "unverified",
                "name": (e.view_type or e.kind)[:64],
                "label": e.label,
                "path": path_of(e),
            }  # fmt: skip
        )
    if api_calls is not None:
        api_count, api_count_authenticated = api_calls
    out.visitor_day = {"day": day, "visitor": visitor, "api_calls": api_count,
                       "api_calls_authenticated": api_count_authenticated}  # fmt: skip

    for pv in views.page_views:
        e = pv.event
        at = _at(e.ts)
        out.page_views.append(
            {
                "day": day,
                "id": e.id,
                "ts": at,
                "hour": at.hour,
                "visitor": visitor,
                "who": pv.who,
                "user_id": pv.user,
                "visit_id": "",
                "label": e.label,
                "path": path_of(e),
                "referrer": e.referrer,
                "source": source_of(e.referrer, e.utm_source),
                "utm_source": e.utm_source,
                "utm_medium": e.utm_medium,
                "utm_campaign": e.utm_campaign,
                "device": e.device,
                "browser": canonical_browser(e.browser) if e.browser else e.browser,
                "os": canonical_os(e.os) if e.os else e.os,
                "country": e.country,
                "view_type": e.view_type,
                "time_on_page_ms": None,
                "scroll_depth": None,
                "visible_ms": None,
                "prev_label": None,
                "next_label": None,
            }  # fmt: skip
        )
    if engagements:
        _engage(views.page_views, out.page_views, engagements)
    for look in views.looks:
        f = look.first
        at = _at(f.ts)
        out.looks.append(
            {
                "day": day,
                "id": f.id,
                "ts": at,
                "hour": at.hour,
                "visitor": visitor,
                "who": look.who,
                "user_id": look.user,
                "content_kind": look.content_kind,
                "content_id": look.content_id,
                "view_type": f.view_type or "view",
                "device": f.device,
                "country": f.country,
                "referrer": f.referrer,
            }  # fmt: skip
        )
    for im in views.impressions:
        e = im.event
        at = _at(e.ts)
        out.impressions.append(
            {
                "day": day,
                "id": e.id,
                "ts": at,
                "hour": at.hour,
                "visitor": visitor,
                "who": im.who,
                "user_id": im.user,
                "content_kind": e.content_kind or "",
                "content_id": e.content_id or "",
                "view_type": e.view_type or "impression",
            }  # fmt: skip
        )
    _visits(out, visitor, views.page_views, source_of)
    return out


def _engage(page_views: list[Any], rows: list[Row], engagements: list[ev.Event]) -> None:
    """Each engagement (in time order) onto the visitor's latest page view of the same path at or
    before it, once: the snippet sends one per page view, when the page is hidden or left."""
    by_path: dict[str, list[tuple[float, Row]]] = {}
    for pv, row in zip(page_views, rows, strict=True):
        by_path.setdefault(pv.event.path, []).append((pv.event.ts, row))
    for e in engagements:
        earlier = [row for ts, row in by_path.get(e.path, ()) if ts <= e.ts]
        if not earlier or earlier[-1]["visible_ms"] is not None:
            continue
        earlier[-1]["scroll_depth"] = max(0, min(100, e.status))
        earlier[-1]["visible_ms"] = int(e.duration_ms)


def _visits(out: VisitorDayFacts, visitor: str, page_views: list[Any], source_of: SourceOf) -> None:
    """Group page views and site events into visits; set each page view's visit and time on page."""
    # (ts, id, page view row or None, site event row or None), in time order.
    steps: list[tuple[float, str, Row | None, Row | None]] = []
    for pv, row in zip(page_views, out.page_views, strict=True):
        steps.append((pv.event.ts, pv.event.id, row, None))
    for row in out.site_events:
        if row["kind"] == "event":
            steps.append((row["ts"].replace(tzinfo=UTC).timestamp(), row["id"], None, row))
    steps.sort(key=lambda s: (s[0], s[1]))
    visit: list[tuple[float, str, Row | None, Row | None]] = []
    for step in steps:
        if visit and step[0] - visit[-1][0] > VISIT_GAP_SECONDS:
            out.visits.append(_visit(visitor, visit, source_of))
            visit = []
        visit.append(step)
    if visit:
        out.visits.append(_visit(visitor, visit, source_of))


def _visit(visitor: str, steps: list[tuple[float, str, Row | None, Row | None]], source_of: SourceOf) -> Row:
    visit_id = steps[0][1]
    pages = [pv for _, _, pv, _ in steps if pv is not None]
    events = [se for _, _, _, se in steps if se is not None]
    for row in events:
        row["visit_id"] = visit_id
    for i, row in enumerate(pages):
        row["visit_id"] = visit_id
        # Its neighbours in the visit, for journeys (None: the visit began or ended on it).
        row["prev_label"] = pages[i - 1]["label"] if i > 0 else None
        row["next_label"] = pages[i + 1]["label"] if i + 1 < len(pages) else None
        if row["visible_ms"] is not None:
            # The snippet's measure: the time the page was in front, the visit's last page included.
            row["time_on_page_ms"] = row["visible_ms"]
        elif i + 1 < len(pages):
            # Exact: a float of seconds times 1000 loses a millisecond now and then (1.001 s -> 1000).
            row["time_on_page_ms"] = (pages[i + 1]["ts"] - row["ts"]) // _MILLISECOND
    user = next((r["user_id"] for r in pages + events if r["user_id"]), None)
    entry = pages[0] if pages else None
    exit_ = pages[-1] if pages else None
    first = entry or events[0]
    started, ended = steps[0][0], steps[-1][0]
    return {
        "day": first["day"],
        "id": visit_id,
        "visitor": visitor,
        "who": _who(user, visitor),
        "user_id": user,
        "started_at": _at(started),
        "ended_at": _at(ended),
        "duration_s": int(ended - started),
        "page_views": len(pages),
        "events": len(events),
        "bounce": len(pages) == 1 and not events,
        "entry_page": entry["path"] if entry else None,
        "exit_page": exit_["path"] if exit_ else None,
        "entry_label": entry["label"] if entry else None,
        "exit_label": exit_["label"] if exit_ else None,
        "referrer": entry["referrer"] if entry else None,
        "source": entry["source"] if entry else None,
        "utm_source": entry["utm_source"] if entry else None,
        "utm_medium": entry["utm_medium"] if entry else None,
        "utm_campaign": entry["utm_campaign"] if entry else None,
        "device": entry["device"] if entry else "other",
        "browser": entry["browser"] if entry else "Other",
        "os": entry["os"] if entry else "Other",
        "country": entry["country"] if entry else None,
    }


def authors_of(events: list[ev.Event]) -> dict[tuple[str, str], str]:
    """Items' authors named by these events' upstream hints (the earliest naming wins)."""
    out: dict[tuple[str, str], str] = {}
    for e in sorted(events, key=lambda e: (e.ts, e.id)):
        if e.content_kind and e.content_id and e.author_id:
            out.setdefault((e.content_kind, e.content_id), e.author_id[:64])
    return out


@dataclass(frozen=True, slots=True)
class Derivation:
    """How stored events become facts: the view window, and what a fact keeps of a path and a referrer."""

    window_seconds: float = 30 * 60.0
    path_of: PathOf = _raw_path
    source_of: SourceOf = _referrer_source

    def visitor_day(
        self, day: date, visitor: str, events: list[ev.Event], api_calls: tuple[int, int] | None = None
    ) -> VisitorDayFacts:
        return derive_visitor_day(
            day,
            visitor,
            events,
            self.window_seconds,
            path_of=self.path_of,
            source_of=self.source_of,
            api_calls=api_calls,
        )


def derivation_of(settings: Any) -> Derivation:
    """The derivation the settings describe (`Settings`; typed loosely to keep this module import-light):
    facts keep only the paths the route rules allow (`trackside.fact_paths`) and name their sources
    (`trackside.enrich.sources`)."""
    from trackside.enrich.sources import source_of
    from trackside.fact_paths import fact_path_of

    return Derivation(
        window_seconds=settings.view_window_minutes * 60.0, path_of=fact_path_of(settings), source_of=source_of
    )
