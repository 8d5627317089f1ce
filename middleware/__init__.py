"""Trackside in-process: the same capture as the sidecar, as a pure-ASGI middleware.

    app = FastAPI()
    app.add_middleware(TracksideMiddleware)                 # settings from TRACKSIDE_* variables
    app.add_middleware(TracksideMiddleware, settings=Settings(database_url=...))

`CaptureMiddleware` (the shared core's) is exported for an app that runs its own `Pipeline`."""

from __future__ import annotations

from middleware.asgi import TracksideMiddleware
from trackside.capture import CaptureMiddleware
from trackside.settings import Settings

__all__ = ["CaptureMiddleware", "Settings", "TracksideMiddleware"]
