from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.servers import run_server
from tests.upstream_app import app as upstream_asgi
from trackside.settings import Settings

REQUIRE_SERVICES = os.environ.get("CI") == "true" or os.environ.get("TRACKSIDE_TEST_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get("TRACKSIDE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
DOC = {"accept": "text/html,application/xhtml+xml", "sec-fetch-dest": "document", "user-agent": FIREFOX}


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TRACKSIDE_") and not key.startswith("TRACKSIDE_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    async with run_server(upstream_asgi) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/trackside.db"


@pytest.fixture
def make_settings(tmp_path: Any, sqlite_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": sqlite_url,
            "spool_dir": str(tmp_path / "spool"),
            "flush_interval": 0.05,
            "log_level": "warning",
        }
        values.update(overrides)
        return Settings(**values)

    return make


async def _postgres_database() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    name = "trackside_test_" + uuid.uuid4().hex[:12]
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def _drop_postgres_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh database of each kind: a SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    url = await _postgres_database()
    if url is None:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required under CI and not reachable at {POSTGRES_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable")
    try:
        yield url
    finally:
        await _drop_postgres_database(url)


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate() if asyncio.iscoroutinefunction(predicate) else not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
