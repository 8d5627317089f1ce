"""Capture: what a request becomes. It exists here once; the sidecar wraps its proxy with
`CaptureMiddleware` and the in-process `middleware` package wraps a host app with the same class.

The response is never held back: the event is built after the last body message has gone out,
and only appended to a bounded in-memory buffer (the sink)."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackside import events as ev
from trackside.beacon import ENGAGEMENT, IMPRESSION, PAGEVIEW, WIDGET, Beacon, item_path
from trackside.classify import classify
from trackside.enrich.auth import TokenVerifier
from trackside.enrich.bots import bot_name
from trackside.enrich.client_ip import ClientIP
from trackside.enrich.geo import CountryLookup
from trackside.enrich.referrer import referrer_domain, utm
from trackside.enrich.user_agent import UserAgentInfo, parse_user_agent
from trackside.enrich.visitor import SaltSource, visitor_hash
from trackside.flood import FloodLimit
from trackside.item_titles import title_from_hint
from trackside.items import ItemError, parse_items_hint
from trackside.metrics import Metrics
from trackside.paths import MAX_PATH, ContentMatcher, EventRules, Labeler
from trackside.player_views import HintedViews
from trackside.settings import Settings, parse_event_rule

logger = logging.getLogger("trackside.capture")

# Request headers capture reads; everything else is skipped in one pass over the list.
WANTED_HEADERS = frozenset(
    {
        b"user-agent",
        b"accept",
        b"sec-fetch-dest",
        b"purpose",
        b"sec-purpose",
        b"next-router-prefetch",
        b"x-middleware-prefetch",
        b"rsc",
        b"referer",
        b"authorization",
        b"x-forwarded-for",
        b"host",
        b"x-forwarded-host",
        b"dnt",
        b"sec-gpc",
        # Chromium's default client hints: they tell a phone from a tablet, and Chrome OS from
        # Android, where reduced user-agent strings no longer do.
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
    }
)

# User agents whose bot name and parsed form are remembered by a capturer (with their client hints):
# one dict look-up a request instead of two caches' key-building and look-ups. Cleared when full.
AGENT_CACHE = 4096

# Upstream hints: response headers the upstream may set; read here and never shown to clients.
HINT_PREFIX = b"x-trackside-"
HINT_USER = b"x-trackside-user"
HINT_AUTHOR = b"x-trackside-author"
HINT_EVENT = b"x-trackside-event"
HINT_ITEM_ID = b"x-trackside-item-id"  # the site's own id of the item this response shows
HINT_ITEMS = b"x-trackside-items"
HINT_TITLE = b"x-trackside-title"  # the title of the item this response shows (`trackside.item_titles`)
# Set by the sidecar's own answers (502, 504, refusals); kept visible to clients, like
# goatcounter's header. Its value is the event's error type.
SIDECAR_ERROR = b"x-trackside-error"
# The error type of a request the sidecar refused itself (400, 413, 414, 431, 501...): the client's
# doing, never counted as the upstream's error.
REFUSED = "refused"


class Answer:
    """What capture reads of a response: its status, content type and the upstream's hints."""

    __slots__ = ("status", "content_type", "hints")

    def __init__(self) -> None:
        self.status = 500  # if the app raises before it starts a response
        self.content_type = ""
        self.hints: dict[bytes, str] = {}

    def read_start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
        """Reads a response's start. Returns its headers without the upstream hints (which a client
        never sees), or None when there were none to remove."""
        self.status = status
        kept = None
        for i, (name, value) in enumerate(headers):
            lname = name.lower()
            if lname == b"content-type":
                self.content_type = value.decode("latin-1").lower()
            elif lname.startswith(HINT_PREFIX):
                self.hints[lname] = value.decode("latin-1")
                if lname != SIDECAR_ERROR:
                    if kept is None:
                        kept = list(headers[:i])
                    continue
            if kept is not None:
                kept.append((name, value))
        return kept


class EventSink(Protocol):
    def put(self, event: ev.Event) -> None: ...

    def put_bot(self, hit: ev.BotHit) -> None: ...

    def put_alias(self, kind: str, alias: str, item: str) -> None: ...

    def put_title(self, kind: str, item: str, title: str) -> None: ...


class Waiting(Protocol):
    def wait(self, request: tuple[Any, ...]) -> None: ...


class Capturer:
    """Turns one answered request into an event (or a bot counter, or nothing)."""

    def __init__(self, settings: Settings, sink: EventSink, salts: SaltSource, metrics: Metrics) -> None:
        self.settings = settings
        self.sink = sink
        self.salts = salts
        self.metrics = metrics
        # A redacted route is its own label too: a short token in a path (`/reset-password/<token>`)
        # does not look like an id, and the generic label would keep it.
        self.labeler = Labeler([*settings.path_redact, *settings.label_rules])
        self.content = ContentMatcher(settings.content_rules)
        self.event_rules = EventRules(parse_event_rule(r) for r in settings.event_rules)
        # Typed looks (a player's view) from the site's hints or the view-type rules.
        self.typed_views = HintedViews(
            settings.content_rules, self.content.match, settings.view_type_rules, lambda: metrics.inc("bad_view_hint")
        )
        self.client_ip = ClientIP(settings.trusted_proxies)
        self.tokens = TokenVerifier(settings.jwt_secret)
        self.countries = CountryLookup(settings.geoip_db, settings.country_header)
        country_header = self.countries.header.encode() if self.countries.header else None
        self._wanted = WANTED_HEADERS | {country_header} if country_header else WANTED_HEADERS
        # Each wanted name with its text form, decoded once rather than at every request.
        self._wanted_names = {name: name.decode("latin-1") for name in self._wanted}
        # Read at every request: kept here rather than looked up on the settings each time.
        self._honor_dnt = settings.honor_dnt
        self._store_assets = settings.store_assets
        self._bot_allowlist = settings.bot_allowlist
        self._players = settings.players
        self._site = settings.site
        self._agents: dict[tuple[str, str | None, str | None], tuple[str | None, UserAgentInfo | None]] = {}
        # The pipeline's buffer takes an event as its row (`EventBuffer.put_row`); another sink, an Event.
        put_row = getattr(sink, "put_row", None)
        self._put_row: Callable[[tuple[Any, ...]], None] = put_row or (lambda row: sink.put(ev.Event(*row)))
        self._fallback_salts: dict[date, bytes] = {}
        self._salt_of_day: tuple[int, bytes] = (-1, b"")  # (Unix day, its shared salt): the last one used
        self.flood = FloodLimit(settings.flood_per_minute, settings.flood_per_address)
        if settings.country_header and not settings.trusted_proxies:
            logger.warning(
                "TRACKSIDE_COUNTRY_HEADER is set but TRACKSIDE_TRUSTED_PROXIES is not: the header is "
                "believed only from a trusted proxy, so no country will come from it"
            )
        # Internal traffic (`TRACKSIDE_EXCLUDE_ADDRESSES`, `TRACKSIDE_EXCLUDE_USERS`): never stored,
        # so it is in no figure; only counted (`events_excluded`).
        self._excluded_networks = settings.exclude_addresses
        self._excluded_users = frozenset(settings.exclude_users)
        # Where answered requests wait to be recorded off the request path (the pipeline's buffer,
        # once its flusher runs); None: record at once.
        self.waiting: Waiting | None = None

    def read_headers(self, scope: Scope) -> dict[str, str]:
        """The request headers capture reads, as text."""
        names = self._wanted_names
        return {names[name]: value.decode("latin-1") for name, value in scope["headers"] if name in names}

    def _kept_headers(self, raw: list[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
        """The headers capture reads, flat (name, value, name, value...): what a request keeps until
        it is recorded. Nothing but bytes, so the tuple leaves the garbage collector's lists at its
        first collection (see `defer`)."""
        names = self._wanted_names
        flat: list[bytes] = []
        for name, value in raw:
            if name in names:
                flat += (name, value)
        return tuple(flat)

    def agent(self, ua: str, mobile: str | None, platform: str | None) -> tuple[str | None, UserAgentInfo | None]:
        """A user agent's bot name (None for a person's browser) and, for a person's, what
        `parse_user_agent` makes of it with its client hints."""
        key = (ua, mobile, platform)
        found = self._agents.get(key)
        if found is None:
            bot = bot_name(ua, self._bot_allowlist)
            info = None
            if bot is None:
                info = parse_user_agent(ua, self._players, mobile_hint=mobile, platform_hint=platform)
            if len(self._agents) >= AGENT_CACHE:
                self._agents.clear()
            found = self._agents[key] = (bot, info)
        return found

    def salt_at(self, started: float) -> bytes:
        """The salt of the UTC day of `started`. A shared salt never changes once made, so it is
        remembered while its day lasts; a fallback one is not, so the shared one takes over."""
        unix_day = int(started // 86400)
        cached_day, salt = self._salt_of_day
        if cached_day == unix_day:
            return salt
        day = datetime.fromtimestamp(started, UTC).date()
        shared = self.salts.salt_for(day)
        if shared is not None:
            self._salt_of_day = (unix_day, shared)
            return shared
        # The shared salt is made a day ahead, so this needs a storage outage of over a day.
        # Hash with a process-local salt rather than keep the IP: visitors may then count twice.
        fallback = self._fallback_salts.get(day)
        if fallback is None:
            logger.warning("no shared salt for %s: using a process-local one", day)
            self._fallback_salts = {day: os.urandom(32)}
            fallback = self._fallback_salts[day]
        self.metrics.inc("salt_fallback")
        return fallback

    def is_flood(self, visitor: str, ip: str, started: float) -> bool:
        """One visitor's requests beyond `flood_per_minute` in a minute, or one address's beyond
        `flood_per_address` (a script rotating user agents), are no person's: they are kept as bot
        counters (bot "flood"), never as page views or API calls."""
        return self.flood.over(visitor, ip, started)

    def excluded_address(self, ip: str) -> bool:
        """Whether the resolved client address is internal traffic (`TRACKSIDE_EXCLUDE_ADDRESSES`)."""
        if not self._excluded_networks or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:  # ::ffff:10.1.2.3 is 10.1.2.3
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._excluded_networks)

    def excluded_user(self, user: str | None) -> bool:
        return user is not None and user in self._excluded_users

    def trusted_request(self, scope: Scope, headers: dict[str, str]) -> tuple[str, str | None, str | None]:
        """The client's address, the site's own host name and the country header's value: the
        last two from `X-Forwarded-Host` and the CDN's header only when the peer is a trusted
        proxy (anyone else can write them), else from `Host` and nothing."""
        client = scope.get("client")
        return self._trusted(client[0] if client else None, headers)

    def _trusted(self, peer: str | None, headers: dict[str, str]) -> tuple[str, str | None, str | None]:
        ip = self.client_ip.resolve(peer, headers.get("x-forwarded-for"))
        own_host = self.client_ip.own_host(peer, headers.get("host"), headers.get("x-forwarded-host"))
        country = None
        if self.countries.header and peer is not None and self.client_ip.is_trusted(peer):
            country = headers.get(self.countries.header)
        return ip, own_host, country

    def answered(self, scope: Scope, started: float, answer: Answer, duration: float) -> None:
        """A request has been answered: record it (never raising into the app that served it)."""
        try:
            self.defer(scope, started, answer.status, answer.content_type, answer.hints, duration)
        except Exception:  # analytics must never break the site
            self.metrics.inc("capture_failed")
            logger.exception("failed to record an event")

    def defer(
        self, scope: Scope, started: float, status: int, content_type: str, hints: dict[bytes, str], duration: float
    ) -> None:
        """What the request path pays: the answer kept as it was, recorded by the flusher in a batch
        (building events back to back costs a fraction of building each between two proxied requests)."""
        # Only what `record` reads, flat: the whole scope (server state, extensions, the ASGI app)
        # would keep a few kilobytes a request alive until the flush. And only text, bytes and
        # numbers (no list, no dict: no hints is None), so that the garbage collector stops tracking
        # the tuple at its first collection. Held until the flush as lists and dicts, a thousand
        # waiting requests were walked by every collection and promoted to the oldest generation,
        # whose full collections walk the whole process: 10-15 us a request under wrk in the
        # in-process middleware, against about 4 with this and rows in the buffer (README, "Speed").
        client = scope.get("client")
        request = (
            self._kept_headers(scope["headers"]),
            scope["path"],
            scope["method"],
            scope.get("query_string", b""),
            client[0] if client else None,
            started,
            status,
            content_type,
            hints or None,
            duration,
        )
        if self.waiting is None:
            self.record(*request)
        else:
            self.waiting.wait(request)

    def record(
        self,
        kept_headers: tuple[bytes, ...],
        path: str,
        method: str,
        query: bytes,
        peer: str | None,
        started: float,
        status: int,
        content_type: str,
        hints: dict[bytes, str] | None,
        duration: float,
    ) -> None:
        """One answered request (what `defer` kept of it) made into its event, bot counter or nothing."""
        names = self._wanted_names
        kept = kept_headers
        headers = {names[kept[i]]: kept[i + 1].decode("latin-1") for i in range(0, len(kept), 2)}
        if hints is None:
            hints = _NO_HINTS
        if "\x00" in path:
            # PostgreSQL stores no NUL, and one such event would fail its whole batch (the sidecar
            # refuses `%00`, but records the refusal; an app under the middleware may not).
            path = path.replace("\x00", "\ufffd")
        if self._honor_dnt and (headers.get("dnt") == "1" or headers.get("sec-gpc") == "1"):
            self.metrics.inc("skipped_do_not_track")
            return
        is_api = path == "/api" or path.startswith("/api/")
        sidecar_error = hints.get(SIDECAR_ERROR) if hints else None
        c = classify(method, path, headers, status, content_type, is_api=is_api, sidecar_error=sidecar_error)
        if c.kind is None and not (self._store_assets and c.reason == "asset"):
            self.metrics.inc("skipped_" + c.reason)
            return
        page_path = c.path[:MAX_PATH]
        label = self.labeler.label(page_path)
        ua = headers.get("user-agent", "")
        ip, own_host, country_header = self._trusted(peer, headers)
        if self._excluded_networks and self.excluded_address(ip):
            self.metrics.inc("events_excluded")
            return
        bot, info = self.agent(ua, headers.get("sec-ch-ua-mobile"), headers.get("sec-ch-ua-platform"))
        if bot is not None:
            self.sink.put_bot(ev.BotHit(started, bot, label))
            return
        visitor = visitor_hash(self.salt_at(started), self._site, ip, ua)
        if self.flood.over(visitor, ip, started):
            # One visitor's requests beyond the limit are no person's (`is_flood`).
            self.sink.put_bot(ev.BotHit(started, "flood", label))
            return
        assert info is not None  # a person's browser: parsed
        user = self.tokens.user_from_header(headers.get("authorization")) or _hint(hints, HINT_USER)
        if self.excluded_user(user):
            self.metrics.inc("events_excluded")
            return
        kind = c.kind or "asset"
        content_kind = content_id = None
        if kind in (ev.PAGE_VIEW, ev.API_CALL) and method in ("GET", "HEAD") and status < 400:
            found = self.content.match(page_path)
            if found is not None:
                content_kind, content_id = found
                alias = _hint(hints, HINT_ITEM_ID)
                if alias is not None:
                    self.sink.put_alias(content_kind, alias, content_id)
        view_type = None
        if kind in (ev.PAGE_VIEW, ev.API_CALL) and status < 400:
            found_item = (content_kind, content_id) if content_kind and content_id else None
            typed = self.typed_views.look(page_path, hints, found_item)
            if typed is not None:
                content_kind, content_id, view_type = typed
        event_name = _hint(hints, HINT_EVENT)
        if event_name is None and 200 <= status < 300:
            event_name = self.event_rules.match(method, path)
        referrer = source = medium = campaign = None
        if c.nav == ev.NAV_DOCUMENT:
            referrer = referrer_domain(headers.get("referer"), own_host)
        if query and c.nav in (ev.NAV_DOCUMENT, ev.NAV_DATA, ev.NAV_RSC):
            source, medium, campaign = utm(query.decode("latin-1"))
        # The event as its row, in `ev.FIELDS` order (`EventBuffer.put_row`): no `Event` object, which
        # the garbage collector would track until the flush (see `defer`).
        row = (
            ev.new_event_id(started),  # id
            started,  # ts
            kind,
            c.nav,
            method[:8],
            page_path,  # path
            label,
            status,
            visitor,
            info.device,
            info.browser,
            info.os,
            user,  # user_id
            _hint(hints, HINT_AUTHOR),  # author_id
            content_kind,
            content_id,
            view_type,
            self.countries.country(ip, country_header),
            referrer,
            source,  # utm_source
            medium,  # utm_medium
            campaign,  # utm_campaign
            c.error_type,
            event_name[:32] if event_name else None,
            round(duration * 1000, 3),  # duration_ms
            False,  # unverified: only a beacon can be
        )
        self._put_row(row)
        if hints:
            hinted_title = hints.get(HINT_TITLE)
            if hinted_title is not None and content_kind and content_id:
                title = title_from_hint(hinted_title)
                if title is not None:
                    self.sink.put_title(content_kind, content_id, title)
            items = hints.get(HINT_ITEMS)
            if items is not None and kind != ev.ERROR and status < 400:
                self._hinted_impressions(ev.Event(*row), items)

    def _hinted_impressions(self, shown: ev.Event, value: str) -> None:
        """`X-Trackside-Items`: one impression per item the response showed (`;search` for search results)."""
        try:
            items, view = parse_items_hint(value.replace("\x00", ""), self.settings.content_rules.keys())
        except ItemError:
            self.metrics.inc("bad_items_hint")
            return
        for kind, item in items:
            # NAV_OTHER: an impression is not an API call, whatever response carried the hint.
            self.sink.put(
                replace(
                    shown,
                    id=ev.new_event_id(shown.ts),
                    kind=ev.IMPRESSION,
                    nav=ev.NAV_OTHER,
                    content_kind=kind,
                    content_id=item,
                    view_type=view,
                    author_id=None,
                    referrer=None,
                    event_name=None,
                )
            )

    def record_beacon(self, scope: Scope, beacon: Beacon, verified: bool, started: float) -> str | None:
        """The events of one checked beacon (a client page view, impressions, widget views), enriched as
        a request is. Returns why nothing was stored (`do-not-track`, `excluded`, `bot`, `flood`, `no-known-items`),
        else None."""
        headers = self.read_headers(scope)
        if self.settings.honor_dnt and (headers.get("dnt") == "1" or headers.get("sec-gpc") == "1"):
            self.metrics.inc("skipped_do_not_track")
            return "do-not-track"
        shown: list[tuple[str, str | None, str | None]]  # (path, content kind, content id)
        if beacon.type == WIDGET:
            shown = [(item_path(k, i, self.settings.content_rules), k, i) for k, i in beacon.items]
        elif beacon.type == IMPRESSION:
            shown = [(beacon.path, k, i) for k, i in beacon.items]
        elif beacon.type == ENGAGEMENT:
            shown = [(beacon.path, None, None)]
        else:
            shown = [(beacon.path, *(self.content.match(beacon.path) or (None, None)))]
        if not shown:
            return "no-known-items"
        ua = headers.get("user-agent", "")
        ip, own_host, country_header = self.trusted_request(scope, headers)
        user = self.tokens.user_from_header(headers.get("authorization"))
        if self.excluded_address(ip) or self.excluded_user(user):
            self.metrics.inc("events_excluded")
            return "excluded"
        bot = bot_name(ua, self.settings.bot_allowlist)
        if bot is not None:
            self.sink.put_bot(ev.BotHit(started, bot, self.labeler.label(shown[0][0])))
            return "bot"
        visitor = visitor_hash(self.salt_at(started), self.settings.site, ip, ua)
        if self.is_flood(visitor, ip, started):
            # A script posting beacons in a loop: counters, never rows, like any other flood.
            self.sink.put_bot(ev.BotHit(started, "flood", self.labeler.label(shown[0][0])))
            return "flood"
        info = parse_user_agent(
            ua,
            self.settings.players,
            mobile_hint=headers.get("sec-ch-ua-mobile"),
            platform_hint=headers.get("sec-ch-ua-platform"),
        )
        country = self.countries.country(ip, country_header)
        # The page's referrer comes from the page (document.referrer), not from the beacon request.
        referrer = None
        if beacon.type != IMPRESSION:
            referrer = referrer_domain(beacon.referrer, own_host)
        source = medium = campaign = None
        if beacon.type == PAGEVIEW and beacon.query:
            source, medium, campaign = utm(beacon.query)
        for path, content_kind, content_id in shown:
            self.sink.put(
                ev.Event(
                    id=ev.new_event_id(started),
                    ts=started,
                    kind=_EVENT_KIND.get(beacon.type, ev.PAGE_VIEW),
                    nav=ev.NAV_BEACON,
                    method=scope["method"][:8],
                    path=path,
                    label=self.labeler.label(path),
                    # An engagement's scroll depth and visible time ride on these two (`ev.ENGAGEMENT`).
                    status=beacon.scroll_depth if beacon.scroll_depth is not None else 204,
                    duration_ms=float(beacon.visible_ms or 0),
                    visitor=visitor,
                    device=info.device,
                    browser=info.browser,
                    os=info.os,
                    user_id=user,
                    content_kind=content_kind,
                    content_id=content_id,
                    view_type=beacon.view_type,
                    country=country,
                    referrer=referrer,
                    utm_source=source,
                    utm_medium=medium,
                    utm_campaign=campaign,
                    unverified=not verified,
                )
            )
        return None


# The event kind of each beacon type (a page view and a widget view are both page views).
_EVENT_KIND = {IMPRESSION: ev.IMPRESSION, ENGAGEMENT: ev.ENGAGEMENT}


# A request's hints when it had none (`defer` keeps None): read, never written.
_NO_HINTS: dict[bytes, str] = {}


def _hint(hints: dict[bytes, str], name: bytes) -> str | None:
    if not hints:
        return None
    value = hints.get(name)
    if value is None:
        return None
    value = value.replace("\x00", "").strip()[:64]  # no NUL: PostgreSQL would refuse the batch
    return value or None


class CaptureMiddleware:
    """Pure ASGI middleware: records every HTTP request that passes through `app`.

    Capture never raises into the app and never changes its responses, except that upstream
    hint headers (`X-Trackside-*`) are removed before the client sees them. (The sidecar's proxy
    does the same itself, with `Answer` and `Capturer.answered`, saving a layer per request.)"""

    # False: every request goes to `not_captured` (a subclass's way to run first: the in-process
    # middleware's lifespan and lazy start, without an ASGI layer of its own on each request).
    ready = True

    def __init__(self, app: ASGIApp, capturer: Capturer) -> None:
        self.app = app
        self.capturer = capturer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ready or scope["type"] != "http":
            await self.not_captured(scope, receive, send)
            return
        started = time.time()
        t0 = time.perf_counter()
        answer = Answer()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = answer.read_start(message["status"], message.get("headers") or [])
                if kept is not None:
                    message = {**message, "headers": kept}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.capturer.answered(scope, started, answer, time.perf_counter() - t0)

    async def not_captured(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A scope capture does not record (lifespan, websocket), or any while not `ready`."""
        await self.app(scope, receive, send)
