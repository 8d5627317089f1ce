"""How the sidecar runs under uvicorn: one place, used by `trackside serve` and the tests."""

from __future__ import annotations

from typing import Any

from trackside.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        # The access log would print client IPs: Trackside never writes a raw IP anywhere.
        "access_log": False,
        # Trackside resolves the client IP itself, from TRACKSIDE_TRUSTED_PROXIES only.
        "proxy_headers": False,
        # The upstream's own Server and Date headers pass through; don't add a second pair.
        "server_header": False,
        "date_header": False,
        "log_level": settings.log_level,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 10,
    }
