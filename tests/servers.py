"""Real servers on loopback ports for the tests: uvicorn on port 0, ready when it says so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from sidecar.app import SidecarApp
from sidecar.server import uvicorn_options
from trackside.settings import Settings


@contextlib.asynccontextmanager
async def run_server(app: Any, **options: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, **{"host": "127.0.0.1", "port": 0, "log_level": "warning", **options})
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def run_sidecar(settings: Settings) -> AsyncIterator[tuple[str, SidecarApp]]:
    """The sidecar exactly as `trackside serve` runs it (same uvicorn options), in this process."""
    app = SidecarApp(settings)
    options = uvicorn_options(settings)
    options.update(host="127.0.0.1", port=0, log_level="warning")
    options.pop("loop")  # the test's own event loop runs it
    async with run_server(app, **options) as url:
        yield url, app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
