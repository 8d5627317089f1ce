"""`TracksideMiddleware`: Trackside inside a FastAPI or Starlette app, no sidecar in front.

The same capture as the sidecar (`trackside.capture.CaptureMiddleware`) feeding the same pipeline
(`trackside.pipeline.Pipeline`: buffer, flusher, embedded database or Redis, daily salts), with the
same settings. The host app need do nothing but add it: the pipeline starts and stops with the
app's lifespan, which the middleware watches by wrapping `receive` and `send`; a server run without
lifespan starts it on the first request instead (and then cannot flush at exit: run with lifespan).

The middleware never raises into the app and never changes its responses, except that upstream
hint headers (`X-Trackside-*`) are removed. The client IP is the ASGI `client`: behind a proxy, let
uvicorn's `--proxy-headers --forwarded-allow-ips` set it, or name the proxy in
`TRACKSIDE_TRUSTED_PROXIES` so that capture reads `X-Forwarded-For` from it (not both)."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackside.capture import CaptureMiddleware
from trackside.pipeline import Pipeline
from trackside.settings import Settings

logger = logging.getLogger("trackside.middleware")

# Without lifespan, the first request waits this long at most for the pipeline (salts, schema).
LAZY_START_SECONDS = 5.0


class TracksideMiddleware(CaptureMiddleware):
    """`CaptureMiddleware` itself once started (an HTTP request costs no ASGI layer more than
    capture's own); until then, and for lifespan and websocket scopes, `not_captured` runs first."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.pipeline = Pipeline(self.settings)
        super().__init__(app, self.pipeline.capturer)
        self.metrics = self.pipeline.metrics
        self.ready = False  # capture's path is taken once the pipeline is starting (`start`)
        self._started: asyncio.Future[None] | None = None
        self._stopped = False

    async def not_captured(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if self._started is None:
            await self._lazy_start()
        if self.ready and scope["type"] == "http":
            await CaptureMiddleware.__call__(self, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def start(self) -> None:
        """Start the pipeline once; a failure is logged, never raised (the app is served regardless)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
            self.ready = self.settings.capture
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        """Flush what is buffered and stop the pipeline; never raises."""
        if self._started is None or self._stopped:
            return
        self._stopped = True
        try:
            await self._started
            await self.pipeline.stop()
        except Exception:
            logger.exception("Trackside did not stop cleanly")

    async def _start(self) -> None:
        try:
            await self.pipeline.start(migrate_schema=self.settings.auto_migrate)
        except Exception:
            logger.exception("Trackside could not start: requests are buffered until the buffer is full")

    async def _lazy_start(self) -> None:
        try:
            await asyncio.wait_for(self.start(), LAZY_START_SECONDS)
        except TimeoutError:
            logger.warning("Trackside is still starting; serving the request meanwhile")

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        shutting_down = False

        async def receive_wrapper() -> Message:
            nonlocal shutting_down
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            elif message["type"] == "lifespan.shutdown":
                shutting_down = True
            return message

        async def send_wrapper(message: Message) -> None:
            # After the app's own shutdown: what it did while shutting down is captured and flushed too.
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.stop()
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            if shutting_down:
                await self.stop()  # the app ended its lifespan without answering the shutdown
