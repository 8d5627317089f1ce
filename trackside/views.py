"""Views derived from raw events: the one function live reads and rollups share.

Rules (DESIGN.md, "Capture"):
- A page view is every navigation the proxy saw, back and reload included, except an `RSC: 1`
  fetch answered just before a full document load of the same path (Next 16 sends both).
- A page view's user is its own (a verified token or an upstream hint), else the user of the same
  visitor's nearest authenticated request inside the view window: a single-page app sends its
  token only on API fetches, never with documents.
- A look (a content view) is one visitor on one item: every page view and API read of that item
  within `window` of the look's first request belongs to it, however many there are.
- The author's own looks are not views (the author is known from any upstream hint for the item).
- A beacon page view (the web snippet's) of a path the same visitor's navigation through the proxy
  reached within `BEACON_ECHO_SECONDS` is that navigation, seen twice: each proxied navigation
  absorbs one beacon. A widget beacon is a look at the item, not a page view of this site.
- A beacon without a valid page token (the snippet on a page the sidecar did not inject, the
  site's own code posting to `/api/track/page-view`, a widget on another site) counts when the same
  visitor made a request through the proxy within the view window of it, before or after: a
  visitor the proxy serves is a real one, whether or not its page carried the token. That is
  decided here, from the day's events, never at capture: the proxied request may be stored later,
  by another sidecar. A beacon so verified then follows every rule above (a proxied navigation of
  its path absorbs it). Only beacons of visitors the proxy never saw that day are set aside
  (`DayViews.unverified`), in no figure.

The unit is one UTC day. The anonymous visitor id rotates with the daily salt, so a look cannot
span midnight anyway, and deriving per day makes live reads and rollups agree exactly."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from trackside import events as ev
from trackside.items import WIDGET

# How close an RSC fetch must come before a document load of the same path to be its echo.
RSC_ECHO_SECONDS = 5.0
# How close a snippet's page-view beacon must come to a proxied navigation of the same path to be it.
BEACON_ECHO_SECONDS = 10.0
_PROXIED = (ev.NAV_DOCUMENT, ev.NAV_DATA, ev.NAV_RSC)


@dataclass(slots=True)
class PageView:
    event: ev.Event
    user: str | None

    @property
    def who(self) -> str:
        """Who counts as one unique: the user when known, else the day's anonymous visitor."""
        return "u:" + self.user if self.user else "v:" + self.event.visitor


@dataclass(slots=True)
class Look:
    content_kind: str
    content_id: str
    visitor: str
    user: str | None
    first: ev.Event  # the look's first request: its time, device, country, referrer

    @property
    def who(self) -> str:
        return "u:" + self.user if self.user else "v:" + self.visitor


@dataclass(slots=True)
class DayViews:
    page_views: list[PageView]
    looks: list[Look]
    impressions: list[PageView]  # an item shown in a feed, a search result or a widget
    # Beacons without a valid page token from visitors the proxy never saw near them: in no figure.
    unverified: list[ev.Event] = field(default_factory=list)


class _Users:
    """Each visitor's authenticated requests, by time, to lend a user to their anonymous ones."""

    def __init__(self, events: Iterable[ev.Event]) -> None:
        by_visitor: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for e in events:
            if e.user_id:
                by_visitor[e.visitor].append((e.ts, e.user_id))
        self._times = {v: [t for t, _ in pairs] for v, pairs in by_visitor.items()}
        self._users = {v: [u for _, u in pairs] for v, pairs in by_visitor.items()}

    def user_for(self, e: ev.Event, window: float) -> str | None:
        if e.user_id:
            return e.user_id
        times = self._times.get(e.visitor)
        if not times:
            return None
        i = bisect.bisect_left(times, e.ts)
        best: str | None = None
        best_gap = window
        for j in (i - 1, i):
            if 0 <= j < len(times):
                gap = abs(times[j] - e.ts)
                if gap <= best_gap:
                    best, best_gap = self._users[e.visitor][j], gap
        return best


def derive_day(events: Iterable[ev.Event], window_seconds: float, *, exclude_authors: bool = True) -> DayViews:
    """Page views and looks of one UTC day's raw events (any order; bots are never here).

    Everything here depends on one visitor's own events, except the author's own looks, which need
    the item's author from whoever's events named it: `exclude_authors=False` keeps them (deriving
    one visitor's day at ingest, where the author is applied when aggregating)."""
    ordered = sorted(events, key=lambda e: (e.ts, e.id))
    unverified: list[ev.Event] = []
    if any(e.unverified for e in ordered):
        seen = _Proxied(ordered)
        unverified = [e for e in ordered if e.unverified and not seen.near(e.visitor, e.ts, window_seconds)]
        if unverified:
            ordered = [e for e in ordered if not e.unverified or seen.near(e.visitor, e.ts, window_seconds)]
    users = _Users(ordered)
    proxied = _Navigations(ordered)

    documents: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in ordered:
        if e.kind == ev.PAGE_VIEW and e.nav == ev.NAV_DOCUMENT:
            documents[(e.visitor, e.path)].append(e.ts)

    page_views: list[PageView] = []
    authors: dict[tuple[str, str], str] = {}
    open_looks: dict[tuple[str, str, str], tuple[float, Look]] = {}
    looks: list[Look] = []
    impressions: list[PageView] = []
    for e in ordered:
        if e.content_kind and e.content_id and e.author_id:
            authors.setdefault((e.content_kind, e.content_id), e.author_id)
        if e.kind == ev.IMPRESSION:
            if e.content_kind and e.content_id:
                impressions.append(PageView(e, users.user_for(e, window_seconds)))
            continue
        if e.kind == ev.PAGE_VIEW:
            if e.nav == ev.NAV_RSC and _echoes_document(documents.get((e.visitor, e.path)), e.ts):
                continue
            if e.nav == ev.NAV_BEACON and e.view_type is None and proxied.claim(e.visitor, e.path, e.ts):
                continue
            if e.view_type != WIDGET:
                page_views.append(PageView(e, users.user_for(e, window_seconds)))
        if e.kind not in (ev.PAGE_VIEW, ev.API_CALL) or not e.content_kind or not e.content_id:
            continue
        key = (e.visitor, e.content_kind, e.content_id)
        current = open_looks.get(key)
        if current is not None and e.ts - current[0] < window_seconds:
            look = current[1]
            if look.user is None:
                look.user = users.user_for(e, window_seconds)
            continue
        look = Look(e.content_kind, e.content_id, e.visitor, users.user_for(e, window_seconds), e)
        open_looks[key] = (e.ts, look)
        looks.append(look)

    def by_author(kind: str, item: str, user: str | None) -> bool:
        return exclude_authors and user is not None and authors.get((kind, item)) == user

    counted = [lk for lk in looks if not by_author(lk.content_kind, lk.content_id, lk.user)]
    shown = [im for im in impressions if not by_author(im.event.content_kind or "", im.event.content_id or "", im.user)]
    return DayViews(page_views, counted, shown, unverified)


class _Proxied:
    """When each visitor made a request through the proxy (anything but a beacon): the evidence
    that a beacon without a valid page token comes from a real visitor of the site."""

    def __init__(self, events: Iterable[ev.Event]) -> None:
        self._times: dict[str, list[float]] = defaultdict(list)
        for e in events:  # in time order
            if e.nav != ev.NAV_BEACON:
                self._times[e.visitor].append(e.ts)

    def near(self, visitor: str, ts: float, window: float) -> bool:
        times = self._times.get(visitor)
        if not times:
            return False
        i = bisect.bisect_left(times, ts - window)
        return i < len(times) and times[i] <= ts + window


class _Navigations:
    """Navigations the proxy saw (document, data, RSC), by visitor and path: each absorbs at most
    one beacon page view, the nearest within `BEACON_ECHO_SECONDS`, so two real navigations to one
    path (one proxied, one served from the router's cache) still count twice."""

    def __init__(self, events: Iterable[ev.Event]) -> None:
        self._times: dict[tuple[str, str], list[float]] = defaultdict(list)
        for e in events:
            if e.kind == ev.PAGE_VIEW and e.nav in _PROXIED:
                self._times[(e.visitor, e.path)].append(e.ts)
        self._claimed: dict[tuple[str, str], set[int]] = defaultdict(set)

    def claim(self, visitor: str, path: str, ts: float) -> bool:
        times = self._times.get((visitor, path))
        if not times:
            return False
        claimed = self._claimed[(visitor, path)]
        best: int | None = None
        i = bisect.bisect_left(times, ts - BEACON_ECHO_SECONDS)
        while i < len(times) and times[i] <= ts + BEACON_ECHO_SECONDS:
            if i not in claimed and (best is None or abs(times[i] - ts) < abs(times[best] - ts)):
                best = i
            i += 1
        if best is None:
            return False
        claimed.add(best)
        return True


def _echoes_document(document_times: list[float] | None, ts: float) -> bool:
    if not document_times:
        return False
    i = bisect.bisect_left(document_times, ts)
    return i < len(document_times) and document_times[i] - ts <= RSC_ECHO_SECONDS
