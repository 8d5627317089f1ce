"""WebSocket pass-through: accept the client once the upstream has accepted, then relay frames
both ways until either side closes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from starlette.types import Receive, Scope, Send

from sidecar.headers import FORWARDED, HOP_BY_HOP

if TYPE_CHECKING:
    from sidecar.proxy import ProxyApp

logger = logging.getLogger("trackside.websocket")

_SKIP = HOP_BY_HOP | FORWARDED | {b"host", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions"}
_SKIP_PROTOCOL = b"sec-websocket-protocol"


async def proxy_websocket(proxy: ProxyApp, scope: Scope, receive: Receive, send: Send) -> None:
    session = proxy.websocket_session()
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    target, sent_path = proxy.upstreams.resolve(raw_path)
    query = scope.get("query_string", b"").decode("latin-1")
    url = "ws" + target.base[4:] + sent_path + ("?" + query if query else "")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in scope["headers"]:
        if name not in _SKIP and name != _SKIP_PROTOCOL:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
    client = scope.get("client")
    headers["X-Forwarded-For"] = client[0] if client else ""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    try:
        upstream = await session.ws_connect(
            url, headers=headers, protocols=scope.get("subprotocols", []), autoping=True
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.warning("websocket upstream refused: %s", type(exc).__name__)
        await send({"type": "websocket.close", "code": 1011})
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.protocol})

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=message.get("code", 1000))
                return
            if message.get("text") is not None:
                await upstream.send_str(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])

    async def upstream_to_client() -> None:
        async for msg in upstream:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": msg.data})
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": msg.data})
            else:
                break
        await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
