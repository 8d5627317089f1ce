"""The sidecar as one ASGI app: Trackside's own routes under `/_trackside/`, everything else
through capture into the proxy."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.api_routes import TracksideApi
from sidecar.beacon import BeaconApp
from sidecar.dashboard_routes import Dashboard
from sidecar.events_api import ROUTE as EVENTS_ROUTE
from sidecar.events_api import EventsApi
from sidecar.funnels_routes import FunnelsApi
from sidecar.goals_routes import GoalsApi
from sidecar.inject import SnippetInjector
from sidecar.journey_routes import JourneyApi
from sidecar.operator_errors import explain
from sidecar.prometheus import CONTENT_TYPE, SidecarCollector, render
from sidecar.proxy import ProxyApp
from sidecar.server import MIGRATED_ENV
from sidecar.server import configure as configure_server
from sidecar.sign_in_limit import SignInLimit
from sidecar.snippet import SnippetFile
from sidecar.stats_routes import STATS_PATHS, StatsEndpoints
from sidecar.v2_routes import QueryApiV2
from trackside.api_keys import KeyRing
from trackside.authz import may_read_metrics
from trackside.enrich.client_ip import ClientIP
from trackside.logs import configure_logging
from trackside.page_token import PageTokens
from trackside.pipeline import Pipeline
from trackside.queue import RedisWriter
from trackside.settings import Settings
from trackside.share_tokens import ShareRing

logger = logging.getLogger("trackside.sidecar")

OWN_PREFIX = "/_trackside/"


class SidecarApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings)
        self.metrics = self.pipeline.metrics
        capturer = self.pipeline.capturer
        self.proxy = ProxyApp(settings, self.metrics, capturer if settings.capture else None)
        tokens = PageTokens(capturer.salts, settings.site, settings.beacon_token_minutes * 60.0)
        self.snippet = SnippetFile()
        self.beacon = BeaconApp(settings, capturer, tokens)
        self.events_api = EventsApi(settings, capturer, self.pipeline.buffer, KeyRing(self.pipeline.engine))
        self.entry: ASGIApp = self.proxy
        if settings.inject_snippet:
            self.entry = SnippetInjector(self.proxy, self.snippet.url, tokens, capturer)
        self.stats = StatsEndpoints(settings, self.pipeline.engine, self.pipeline.capturer.tokens)
        self.stats.authorizer.keys = self.events_api.keys  # read keys for the stats and the query API
        self.stats.authorizer.shares = ShareRing(self.pipeline.engine)  # read-only dashboard links
        self.own_routes = Starlette(
            routes=[
                Route("/_trackside/health", self.health),
                Route("/_trackside/ready", self.ready),
                Route("/_trackside/metrics", self.metrics_endpoint),
                *self.stats.routes(),
                *TracksideApi(self.stats).routes(),
                *QueryApiV2(self.stats).routes(),
                *JourneyApi(self.stats).routes(),
                *GoalsApi(self.stats).routes(),
                *FunnelsApi(self.stats).routes(),
                *Dashboard().routes(),
            ]
        )
        # Failed sign-ins on any of them count towards one client address's limit.
        self.own = SignInLimit(self.own_routes, settings.sign_in_failures, ClientIP(settings.trusted_proxies))
        self.events_entry = self.own.guarding(self.events_api)  # it takes the admin token too
        self._levels_task: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == EVENTS_ROUTE:
            await self.events_entry(scope, receive, send)  # server-side events: reports, not requests
        elif scope["type"] == "http" and self.beacon.handles(scope["path"]):
            await self.beacon(scope, receive, send)  # beacons are reports, not requests to count
        elif scope["type"] == "http" and self.snippet.handles(scope["path"]):
            await self.snippet(scope, receive, send)
        elif scope["path"] == OWN_PREFIX[:-1] and scope["type"] == "http":
            await RedirectResponse(OWN_PREFIX, status_code=308)(scope, receive, send)
        elif scope["path"].startswith(OWN_PREFIX) or STATS_PATHS.match(scope["path"]):
            # Trackside's own routes and the stats endpoints it answers for the site: never proxied
            # as such, never counted.
            await self.own(scope, receive, send)
        else:
            await self.entry(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    migrate_schema = self.settings.auto_migrate and os.environ.get(MIGRATED_ENV) != "1"
                    await self.pipeline.start(migrate_schema=migrate_schema)
                    await self.proxy.startup()
                except Exception as exc:
                    line = explain(exc, self.settings.database_url, self.settings.redis_url)
                    if line is None:
                        logger.exception("start-up failed")
                    else:
                        logger.error("start-up failed: %s", line)  # an outage or a wrong URL: no traceback
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                # Everything allocated at start-up lives as long as the process: keep the garbage
                # collector from walking it again and again, and let it run less often (buffered
                # events are short-lived and acyclic). Measured: about 5% less CPU per request.
                gc.freeze()
                gc.set_threshold(20_000, 50, 1000)
                if self.metrics.shared_dir is not None:
                    self._levels_task = asyncio.ensure_future(self.publish_levels())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._levels_task is not None:
                    self._levels_task.cancel()
                await self.pipeline.stop()
                await self.proxy.shutdown()
                await self.stats.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> JSONResponse:
        ready = self.pipeline.salts.salt_for_today() is not None
        return JSONResponse(
            {
                "ready": ready,
                "buffered": len(self.pipeline.buffer),
                "waiting": len(self.pipeline.buffer.waiting),
                "spooled_batches": self.pipeline.spool.pending,
            },
            status_code=200 if ready else 503,
        )

    def own_levels(self) -> dict[str, float]:
        return {"events_buffered": len(self.pipeline.buffer), "spooled_batches": self.pipeline.spool.pending}

    async def publish_levels(self) -> None:
        """Every second, this process's levels into its counter file: a scrape answered by
        another server process of the same `trackside serve` adds them up."""
        while True:
            self.metrics.set_gauges(self.own_levels())
            await asyncio.sleep(1.0)

    async def gauges(self) -> dict[str, float]:
        # The whole sidecar's levels: this process's now, the other server processes' as of their
        # last second.
        values = self.metrics.shared_gauges(self.own_levels())
        writer = self.pipeline.writer
        if isinstance(writer, RedisWriter):
            try:
                values.update(await asyncio.wait_for(writer.queue_state(), 1.0))  # depth, oldest job's age
            except Exception:  # Redis away: the gauge is missing, the scrape still answers
                pass
        return values

    async def metrics_endpoint(self, request: Request) -> Response:
        """Prometheus' text format for a Prometheus scraper (it asks for text/plain or
        OpenMetrics) or `?format=prometheus`; JSON for everyone else. Behind `TRACKSIDE_METRICS_TOKEN`
        when it is set."""
        if not may_read_metrics(self.settings, request.headers.get("authorization")):
            return unauthorized_metrics()
        accept = request.headers.get("accept", "")
        gauges = await self.gauges()
        if request.query_params.get("format") == "prometheus" or "openmetrics" in accept or "text/plain" in accept:
            return Response(render(SidecarCollector(self.metrics, lambda: gauges)), media_type=CONTENT_TYPE)
        counts: dict[str, float] = dict(self.metrics.snapshot())
        counts.update(gauges)
        return JSONResponse(counts)


def unauthorized_metrics() -> JSONResponse:
    return JSONResponse(
        {"detail": "the metrics token (TRACKSIDE_METRICS_TOKEN) is required as a Bearer token"},
        status_code=401,
        headers={"www-authenticate": "Bearer", "cache-control": "private, no-store"},
    )


def create_app(settings: Settings | None = None) -> SidecarApp:
    """The sidecar app; with no settings, read them from `TRACKSIDE_*` (for `--factory` and the
    server's worker processes, which also set up their own logging)."""
    if settings is None:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        configure_server(settings)
    return SidecarApp(settings)
