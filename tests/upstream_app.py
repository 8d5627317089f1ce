"""The test upstream: a tiny Starlette app with the behaviours a proxy must pass through."""

from __future__ import annotations

import asyncio
import gzip

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

PAGE = "<!doctype html><html><body>" + "x" * 1000 + "</body></html>"


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
        }
    )


async def upload(request: Request) -> JSONResponse:
    # Counts the bytes as they arrive: the proxy must stream, never buffer the whole body.
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"received": total})


async def big(request: Request) -> StreamingResponse:
    size = int(request.query_params.get("mb", "50")) * 1024 * 1024

    async def chunks():
        sent = 0
        block = b"y" * 65536
        while sent < size:
            yield block
            sent += len(block)

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"content-length": str(size)})


async def page(request: Request) -> Response:
    status = int(request.query_params.get("status", "200"))
    return HTMLResponse(PAGE, status_code=status)


async def api(request: Request) -> Response:
    status = int(request.query_params.get("status", "200"))
    headers = {}
    for name in ("author", "user", "event", "item-id", "title"):
        if name in request.query_params:
            headers["x-trackside-" + name] = request.query_params[name]
    return JSONResponse({"path": request.url.path}, status_code=status, headers=headers)


async def cookies(request: Request) -> Response:
    response = PlainTextResponse("cookies")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", httponly=True)
    return response


async def redirect(request: Request) -> Response:
    return RedirectResponse("/elsewhere?x=1", status_code=302)


async def gzipped(request: Request) -> Response:
    return Response(gzip.compress(b"hello " * 100), headers={"content-encoding": "gzip", "content-type": "text/plain"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return PlainTextResponse("late")


async def hop(request: Request) -> Response:
    return PlainTextResponse("hop", headers={"connection": "x-secret", "x-secret": "1", "keep-alive": "timeout=5"})


async def chunked(request: Request) -> StreamingResponse:
    async def parts():
        for i in range(5):
            yield f"part{i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


async def trickle(request: Request) -> StreamingResponse:
    # A first part at once, the rest half a second later: what the client sees meanwhile shows
    # whether the proxy holds anything back.
    async def parts():
        yield b"first\n"
        await asyncio.sleep(0.5)
        yield b"second\n"

    return StreamingResponse(parts(), media_type="text/plain")


async def post_stats(request: Request) -> Response:
    # The site's own stats endpoint: it knows reactions, comments and the numeric id, and it
    # decides who may read them (here: anyone with a token but "intruder").
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        return JSONResponse({"detail": "Not authenticated"}, status_code=401)
    if jwt.decode(auth[7:], options={"verify_signature": False}).get("sub") == "intruder":
        return JSONResponse({"detail": "Not your post"}, status_code=403)
    post_id = request.path_params["id"]
    if post_id == "999":
        return JSONResponse({"detail": "Post not found"}, status_code=404)
    return JSONResponse(
        {
            "post_id": int(post_id) if post_id.isdigit() else post_id,
            # Like the site's E1 answer, without the public id, unless the test asks for one.
            **({"public_sqid": "a1"} if post_id == "1" else {}),
            "total_reactions": 3,
            "reactions_by_emoji": {"heart": 3},
            "total_comments": 2,
            "total_views": 999,
        }
    )


# Items' API answers for the title tests (`TRACKSIDE_TITLE_URL`): a title field, none, a slow
# answer, a 404; `asked` counts the questions per id.
TITLED = {"b2": {"title": "Fetched <b>b2</b>"}, "p9": {"post": {"headline": "Nested p9"}}, "r1": {"title": "Soup"}}
asked: dict[str, int] = {}


async def item_answer(request: Request) -> Response:
    item = request.path_params["id"]
    asked[item] = asked.get(item, 0) + 1
    if item.startswith("slow"):
        await asyncio.sleep(3.0)
        return JSONResponse({"title": "Slow " + item})
    if item in TITLED:
        return JSONResponse(TITLED[item])
    if item == "untitled":
        return JSONResponse({"name": "no title field"})
    return JSONResponse({"detail": "Not found"}, status_code=404)


async def ws(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=websocket.scope["subprotocols"][0] if websocket.scope["subprotocols"] else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text("echo:" + message["text"])
        else:
            await websocket.send_bytes(b"echo:" + message["bytes"])


app = Starlette(
    routes=[
        Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
        Route("/api/echo/{rest:path}", echo, methods=["GET", "POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/big", big),
        Route("/cookies", cookies),
        Route("/redirect", redirect),
        Route("/gzip", gzipped),
        Route("/slow", slow),
        Route("/hop", hop),
        Route("/chunked", chunked),
        Route("/trickle", trickle),
        WebSocketRoute("/ws", ws),
        Route("/api/post/{id}/stats", post_stats),
        Route("/api/titled/{kind}/{id}", item_answer),
        Route("/api/{rest:path}", api, methods=["GET", "POST", "HEAD"]),
        Route("/{rest:path}", page, methods=["GET", "HEAD"]),
    ]
)
