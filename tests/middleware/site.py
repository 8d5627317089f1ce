"""A small FastAPI site for the middleware tests: pages, an API with upstream hints, errors.

The same app runs behind the sidecar (as its upstream) and with `TracksideMiddleware` inside it,
so one table of requests can be run both ways."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

PAGE = "<!doctype html><html><head><title>site</title></head><body>" + "x" * 200 + "</body></html>"


def create_site() -> FastAPI:
    site = FastAPI()

    @site.get("/api/p/{sqid}")
    async def artwork(sqid: str, request: Request, response: Response) -> dict[str, str]:
        # Hints, as the README tells a site to send them: the author, and a user the JWT does not show.
        for name in ("author", "user", "event"):
            if name in request.query_params:
                response.headers["X-Trackside-" + name.title()] = request.query_params[name]
        return {"sqid": sqid}

    @site.get("/api/feed")
    async def feed(request: Request, response: Response) -> dict[str, list[str]]:
        items = request.query_params.get("items", "")
        if items:
            response.headers["X-Trackside-Items"] = items
        return {"items": items.split(",")}

    @site.post("/api/auth/register")
    async def register() -> dict[str, bool]:
        return {"ok": True}

    @site.get("/api/unavailable")
    async def unavailable() -> JSONResponse:
        return JSONResponse({"detail": "down"}, status_code=503)

    @site.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("the site's own bug")

    @site.get("/{rest:path}", response_class=HTMLResponse)
    async def page(rest: str, request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE, status_code=int(request.query_params.get("status", "200")))

    return site
