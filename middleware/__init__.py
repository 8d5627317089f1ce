"""Trackside in-process: the same capture as the sidecar, as a pure-ASGI middleware.

The middleware class lives in the shared core (`trackside.capture`); this package is its public
entry point for a FastAPI or Starlette app."""

from __future__ import annotations

from trackside.capture import CaptureMiddleware
from trackside.settings import Settings

__all__ = ["CaptureMiddleware", "Settings"]
