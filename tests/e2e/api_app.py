"""Tiny stand-ins for the apps behind the sidecar in the end-to-end tests.

* The API (``create_app``): ``GET /api/p/{sqid}`` answers ``{"sqid": ..., "title": ...}``. Its routes carry their
  full ``/api/...`` paths, so it works mounted at the root with the paths the sidecar forwards unchanged.
* A frontend stub (``create_frontend_stub``): any ``GET`` answers a small HTML page, for tests that need a
  document behind the sidecar but no Next.js build (and no node).

Run one with uvicorn: ``python tests/e2e/api_app.py PORT [api|frontend]`` or ``run(port)`` in-process.
"""

from __future__ import annotations

import html
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

TITLES = {"a1": "Sunrise over Alder", "b2": "Blue Study No. 2"}


async def artwork(request: Request) -> JSONResponse:
    sqid = request.path_params["sqid"]
    title = TITLES.get(sqid)
    if title is None:
        return JSONResponse({"error": "not_found", "sqid": sqid}, status_code=404)
    return JSONResponse({"sqid": sqid, "title": title, "authenticated": "authorization" in request.headers})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    return Starlette(routes=[Route("/api/p/{sqid}", artwork), Route("/api/health", health)])


async def page(request: Request) -> HTMLResponse:
    path = html.escape(request.url.path)
    return HTMLResponse(f"<!doctype html><html><head><title>{path}</title></head><body><h1>{path}</h1></body></html>")


def create_frontend_stub() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", page)])


app = create_app()

APPS = {"api": create_app, "frontend": create_frontend_stub}


def run(port: int, host: str = "127.0.0.1", which: str = "api") -> None:
    """Serve the API (or the frontend stub) with uvicorn in the foreground until interrupted."""
    uvicorn.run(APPS[which](), host=host, port=port, log_level="warning", access_log=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else free_port(), which=sys.argv[2] if len(sys.argv) > 2 else "api")
