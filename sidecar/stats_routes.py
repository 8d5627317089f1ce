"""The stats endpoints the site's panels read, served by the sidecar before proxying:
`GET /api/post/{id}/stats`, `GET /api/blog-post/{id}/stats`, `GET /api/admin/sitewide-stats`.

Where the site's API answers the same path with fields only it knows (reactions, comments, the
numeric id), it is asked first, with the caller's own token, at the path the route rules send it
(prefix stripped when they say so): its 401/403 stand, and the view figures are laid over its 200.
Where it has no such endpoint (blog posts, or a site that is not Makapix: its 404 or 405 on an
item Trackside has recorded views of, in the default `auto` mode), Trackside answers alone and
authorizes itself: moderators, or the item's owner. Authorization always comes before the cache.

The item id is checked before anything is asked: a plain path segment only, so `..` or an encoded
slash can never move the question to another of the API's paths with the caller's token.

How current: every answer is computed from what is stored at the time of the read (`computed_at`),
and cached at most `TODAY_SECONDS` while it includes today (`trackside.stats.cache`)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.titles import ItemTitles
from sidecar.upstreams import Upstreams
from trackside.authz import Authorizer, Caller, Unauthorized
from trackside.derive import derivation_of
from trackside.enrich.auth import TokenVerifier
from trackside.figures import Pending, derive_pending
from trackside.settings import Settings
from trackside.stats.cache import (
    TODAY_SECONDS,
    ClosedDays,
    MemoryCache,
    RedisCache,
    StatsCache,
    all_closed,
    closed_state,
    state_key,
)
from trackside.stats.item import DAYS as ITEM_DAYS
from trackside.stats.item import item_stats
from trackside.stats.site import DAYS as SITE_DAYS
from trackside.stats.site import site_stats
from trackside.storage.engine import snapshot
from trackside.storage.reads import content_alias, latest_author

logger = logging.getLogger("trackside.stats")

NO_STORE = {"cache-control": "private, no-store"}
_ITEM_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
STATS_PATHS = re.compile(r"^/api/(?:post/[^/]+/stats|blog-post/[^/]+/stats|admin/sitewide-stats)/?$")
ID_FIELD = {"artwork": "post_id", "blog_post": "blog_post_id"}
# What the site's API may answer for a stats path it does not have: in `auto` mode, Trackside then
# answers alone for an item it has recorded views of.
NO_SUCH_ROUTE = (404, 405)

# What `StatsEndpoints._cached` computes on a miss: (conn, now) -> the JSON-able answer.
Compute = Callable[[AsyncConnection, datetime], Awaitable[Any]]


def error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=NO_STORE)


def parse_refresh(request: Request) -> bool:
    raw = request.query_params.get("refresh", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValueError("refresh must be true or false")
    return raw in ("true", "1")


class StatsEndpoints:
    def __init__(self, settings: Settings, engine: AsyncEngine, tokens: TokenVerifier) -> None:
        self.settings = settings
        self.engine = engine
        self.client = httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False)
        self.upstreams = Upstreams(settings)
        self.authorizer = Authorizer(settings, tokens, self.client)
        self.titles = ItemTitles(settings, engine, self.client, self.upstreams)  # the dashboard's item titles
        self.closed = ClosedDays()
        self.derivation = derivation_of(settings)
        self.cache_hits = self.cache_misses = 0  # answers served from the cache, and not
        self.computations = 0  # answers computed (concurrent misses of one answer share one)
        self._flights: dict[str, asyncio.Task[Any]] = {}
        self.cache: StatsCache = (
            MemoryCache() if settings.redis_url is None else RedisCache(settings.redis_url, settings.queue_name + ":")
        )

    def routes(self) -> list[Route]:
        return [
            Route("/api/post/{id}/stats", self.artwork, methods=["GET"]),
            Route("/api/blog-post/{id}/stats", self.blog_post, methods=["GET"]),
            Route("/api/admin/sitewide-stats", self.sitewide, methods=["GET"]),
        ]

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        await self.titles.close()
        await self.client.aclose()
        if isinstance(self.cache, RedisCache):
            await self.cache.close()

    async def artwork(self, request: Request) -> Response:
        return await self.item(request, "artwork")

    async def blog_post(self, request: Request) -> Response:
        return await self.item(request, "blog_post")

    async def _caller(self, request: Request) -> Caller | JSONResponse:
        try:
            return await self.authorizer.caller(request.headers.get("authorization"))
        except Unauthorized as exc:
            return error(401, str(exc))
        except httpx.HTTPError:
            return error(502, "the site's who-am-I endpoint did not answer")

    async def _caller_and_refresh(self, request: Request) -> tuple[Caller, bool] | JSONResponse:
        """Who asks (401 first), then whether they ask for a recomputation (400 if unreadable)."""
        caller = await self._caller(request)
        if isinstance(caller, JSONResponse):
            return caller
        try:
            return caller, parse_refresh(request)
        except ValueError as exc:
            return error(400, str(exc))

    async def item(self, request: Request, kind: str) -> Response:
        asked = await self._caller_and_refresh(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, refresh = asked
        raw_id = request.path_params["id"]
        if not _ITEM_ID.match(raw_id):
            # Checked before the site's API is asked: `..`, `.` or an encoded slash would make the
            # question another path of the API (`/api/post/../stats` is `/api/stats`).
            return error(400, f"invalid {ID_FIELD[kind]} {raw_id[:140]!r}: letters, digits, - and _ only")
        upstream: dict[str, Any] | None = None
        missing: Response | None = None  # the site's 404/405, when Trackside may answer alone instead
        content_id = raw_id
        mode = self.settings.stats_overlay_mode
        if kind in self.settings.stats_overlay and mode != "never":
            answer = await self._ask_upstream(request)
            if isinstance(answer, dict):
                upstream = answer
                content_id = str(answer.get("public_sqid") or answer.get("sqid") or raw_id)
            elif mode == "auto" and answer.status_code in NO_SUCH_ROUTE:
                missing = answer
            else:
                return answer
        if content_id == raw_id:
            # The site's own (numeric) id, as its API hinted it beside the public one.
            async with self.engine.connect() as conn:
                content_id = await content_alias(conn, kind, raw_id) or raw_id
        if not _ITEM_ID.match(content_id):
            return error(404, f"no such {kind}")
        owner: str | None = None
        if upstream is None:
            if missing is not None and not await self._has_views(kind, content_id):
                # Nothing recorded either: the site's "no such item" (a 404) stands.
                return missing if missing.status_code == 404 else error(404, f"no such {kind}")
            owner_known, owner = await self._owner(request, kind, content_id)
            if owner_known is None:
                return error(404, f"no such {kind}")
            if not caller.is_moderator and (caller.user is None or caller.user != owner):
                return error(403, "only the owner or a moderator may read these stats")
        figures = await self._cached(
            f"{kind}:{content_id}", caller, refresh, self.item_figures(kind, content_id), last_days(ITEM_DAYS)
        )
        if figures is None:
            if upstream is None and owner is None:
                return error(404, f"no such {kind}")
            figures = await self._empty_item(kind, content_id)
        body = dict(upstream or {})
        body.setdefault(ID_FIELD[kind], raw_id)
        body["content_id"] = content_id
        body.update(figures)
        return JSONResponse(body, headers=NO_STORE)

    async def _has_views(self, kind: str, content_id: str) -> bool:
        """Whether Trackside has recorded anything of the item in the stats' 30 days (the same
        figures an answer would show, so it is never answered alone with nothing in it)."""
        now = datetime.now(UTC)
        await self.derive_queued(now.date() - timedelta(days=29), now.date())
        async with snapshot(self.engine) as conn:
            found = await self.item_figures(kind, content_id)(conn, now)
        return found is not None

    def item_figures(self, kind: str, content_id: str) -> Compute:
        """What `_cached` computes for one item (the stats endpoint and the query API's item route)."""

        async def compute(conn: AsyncConnection, now: datetime) -> dict[str, Any] | None:
            return await item_stats(
                conn, kind, content_id, now=now, window_seconds=self.settings.view_window_minutes * 60.0
            )

        return compute

    async def _empty_item(self, kind: str, content_id: str) -> dict[str, Any]:
        # A known item with nothing in 30 days: the same shape, all zeros.
        from trackside.stats.item import DAYS
        from trackside.stats.series import day_range, hour_label, hour_starts, iso

        now = datetime.now(UTC)
        out: dict[str, Any] = {}
        for suffix in ("", "_authenticated"):
            out.update(
                {
                    "total_views" + suffix: 0,
                    "unique_viewers" + suffix: 0,
                    "total_impressions" + suffix: 0,
                    "views_by_country" + suffix: {},
                    "views_by_device" + suffix: {},
                    "views_by_type" + suffix: {},
                    "top_referrers" + suffix: {},
                    "daily_views" + suffix: [
                        {"date": d.isoformat(), "views": 0, "unique_viewers": 0, "impressions": 0}
                        for d in day_range(now.date(), DAYS)
                    ],
                    "hourly_views" + suffix: [
                        {"hour": hour_label(h), "views": 0, "impressions": 0} for h in hour_starts(now)
                    ],
                }
            )
        out.update({"first_view_at": None, "last_view_at": None, "computed_at": iso(now)})
        return out

    async def sitewide(self, request: Request) -> Response:
        asked = await self._caller_and_refresh(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, refresh = asked
        if not caller.is_moderator:
            return error(403, "only moderators may read sitewide stats")
        figures = await self._cached("site", caller, refresh, self.site_figures, last_days(SITE_DAYS))
        return JSONResponse(figures, headers=NO_STORE)

    async def site_figures(self, conn: AsyncConnection, now: datetime) -> dict[str, Any]:
        return await site_stats(
            conn, now=now, window_seconds=self.settings.view_window_minutes * 60.0, closed=self.closed
        )

    async def _cached(self, name: str, caller: Caller, refresh: bool, compute: Compute, days: tuple[date, date]) -> Any:
        """The cached answer for `name` over `days` (first, last), or `compute(conn, now)` stored as the
        new one. The key carries the state of the range's closed days; an answer that includes a day
        read from stored events (today) is kept at most `TODAY_SECONDS`. Concurrent misses of one key
        in this process share one computation. A refresh (`refresh=True`) skips the cache, once per
        caller and answer in `REFRESH_INTERVAL_SECONDS`; beyond that the caller gets what a plain read
        gets."""
        now = datetime.now(UTC)
        started = time.monotonic()
        first, last = days
        async with snapshot(self.engine) as conn:
            state = await closed_state(conn, first, last)
            key = f"stats:{name}:{now.date().isoformat()}:{state_key(state)}"
            refresh = refresh and await self.cache.allow_refresh(f"{caller.key}:{name}")
            if not refresh:
                hit = await self.cache.get(key)
                if hit is not None:
                    self.cache_hits += 1
                    return json.loads(hit)
        self.cache_misses += 1
        seconds: float = self.settings.stats_cache_seconds
        if not all_closed(state, first, last):
            seconds = min(seconds, TODAY_SECONDS)
        flight = None if refresh else self._flights.get(key)
        if flight is None:
            # A task of its own: a caller that goes away does not cancel it for the others.
            flight = asyncio.create_task(self._compute(key, compute, now, started, seconds, days))
            flight.add_done_callback(_retrieve)
            if not refresh:
                self._flights[key] = flight
                flight.add_done_callback(
                    lambda done: self._flights.pop(key, None) if self._flights.get(key) is done else None
                )
        return await asyncio.shield(flight)

    async def refused_to_edit(self, request: Request, what: str, *, changes: bool) -> JSONResponse | None:
        """Moderators only; read-only callers (a share token, a read API key) may list `what` but
        not change it. None: go on."""
        caller = await self._caller(request)
        if isinstance(caller, JSONResponse):
            return caller
        if not caller.is_moderator:
            return error(403, "moderators only")
        if changes and caller.read_only:
            who = "a share token" if caller.share is not None else "a read API key"
            return error(403, f"{who} may list {what} but not change them")
        return None

    async def derive_queued(self, first: date, last: date) -> Pending:
        """Visitor-days of [first, last] stored but not derived yet are derived (a bounded round) before
        a read that scans facts itself (the v2 query, funnels, journeys), as every stats read does;
        returns what is left (in the answer's `meta.pending` when any is)."""
        try:
            async with self.engine.connect() as conn:
                return await derive_pending(conn, first, last, self.derivation)
        except Exception:  # answered without them; the deriver, the worker or the rollup derives them
            logger.exception("deriving queued visitor-days before a read failed")
            return Pending()

    async def _compute(
        self, key: str, compute: Compute, now: datetime, started: float, seconds: float, days: tuple[date, date]
    ) -> Any:
        """`compute` in a snapshot of its own, stored for `seconds` counted from `started` (the read's
        start: an event stored while it ran is at most that late). Visitor-days of `days` still marked
        for derivation (events stored before facts existed) are derived first, committed before the
        snapshot begins, so that it sees them."""
        self.computations += 1
        pending = Pending()
        try:
            async with self.engine.connect() as conn:
                pending = await derive_pending(conn, days[0], days[1], self.derivation)
        except Exception:  # the figures are still read; the worker or the rollup derives them later
            logger.exception("deriving marked visitor-days before a stats read failed")
        async with snapshot(self.engine) as conn:
            figures = await compute(conn, now)
        if pending.visitor_days and isinstance(figures, dict):
            # Stored events these figures do not hold yet (the deriver is behind): said, not silent;
            # in `meta` where the answer has one (the query API), beside the figures otherwise.
            meta = figures.get("meta")
            (meta if isinstance(meta, dict) else figures)["pending"] = pending.meta()
        took = time.monotonic() - started
        left = seconds - took
        if left <= 0 and seconds < self.settings.stats_cache_seconds:
            # A read of today slower than its freshness bound (a very busy day: the grouping of
            # today's facts takes seconds) is kept as long as it took, so that such reads do not
            # follow each other back to back; figures are then at most twice that read's time late.
            left = min(took, self.settings.stats_cache_seconds)
        if left > 0:
            await self.cache.set(key, json.dumps(figures), left)
        return figures

    async def _ask_upstream(self, request: Request) -> dict[str, Any] | Response:
        # Where the proxy would send this path: the route rules, a stripped `/api` prefix included.
        target, sent = self.upstreams.resolve(request.url.path)
        url = target.base + sent
        headers = {"authorization": request.headers.get("authorization", ""), "accept": "application/json"}
        try:
            answer = await self.client.get(url, headers=headers, params=dict(request.query_params))
        except httpx.TimeoutException:
            return error(504, "the site's API timed out")
        except httpx.HTTPError:
            return error(502, "the site's API did not answer")
        if answer.status_code != 200:
            # The site's verdict (401, 403, 404, ...) stands, as it gave it.
            return Response(
                answer.content,
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type"),
                headers=NO_STORE,
            )
        try:
            body = answer.json()
        except ValueError:
            return error(502, "the site's API answered with something that is not JSON")
        return body if isinstance(body, dict) else error(502, "the site's API answered with a non-object")

    async def _owner(self, request: Request, kind: str, content_id: str) -> tuple[bool | None, str | None]:
        """(known, owner): known is None when the item does not exist as far as we can tell."""
        if self.settings.owner_url:
            url = self.settings.owner_url.replace("{id}", content_id)
            headers = {"authorization": request.headers.get("authorization", "")}
            try:
                answer = await self.client.get(url, headers=headers)
            except httpx.HTTPError:
                return True, None  # unknown owner: only moderators get through
            if answer.status_code == 404:
                return None, None
            if answer.status_code == 200:
                try:
                    value = answer.json().get(self.settings.owner_field)
                except (ValueError, AttributeError):
                    value = None
                return True, str(value) if value is not None else None
            return True, None
        async with self.engine.connect() as conn:
            author = await latest_author(conn, kind, content_id)
        return True, author


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Its callers see the exception; this keeps asyncio from logging it again when they went away.
    if not task.cancelled():
        task.exception()


def last_days(count: int) -> tuple[date, date]:
    """The range of the `count` UTC days ending today."""
    today = datetime.now(UTC).date()
    return today - timedelta(days=count - 1), today
