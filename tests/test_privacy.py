"""Privacy audit: after a full journey, no raw IP, no unsalted hash of one, and no salt older than
48 hours anywhere: the database, the spool, Redis, or the logs."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import redis.asyncio as redis
from sqlalchemy import text

from tests.conftest import DOC, FIREFOX, GOOGLEBOT, IPHONE
from tests.servers import run_sidecar
from trackside.settings import Settings
from trackside.storage.engine import create_engine

SECRET = "privacy-secret-privacy-secret-privacy"
CLIENTS = ["81.2.69.142", "200.160.2.3", "2a02:ff40::1"]


def forbidden(ip: str) -> list[bytes]:
    """The IP and the unsalted hashes anyone could brute-force back to it."""
    values = [ip.encode()]
    for ua in ("", FIREFOX, IPHONE):
        for text_ in (ip, ip + ua, ua + ip):
            for algo in ("sha256", "sha1", "md5"):
                digest = hashlib.new(algo, text_.encode()).hexdigest()
                values += [digest.encode(), digest[:32].encode(), digest[:16].encode()]
    return values


async def journey(url: str) -> None:
    token = jwt.encode({"sub": "u7", "exp": int(time.time()) + 86_400}, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=url) as c:
        for ip in CLIENTS:
            fwd = {"x-forwarded-for": ip}
            await c.get("/p/a1?token=hunter2", headers={**DOC, **fwd, "referer": f"http://{ip}/x"})
            await c.get("/api/p/a1", headers={"user-agent": FIREFOX, "authorization": "Bearer " + token, **fwd})
            await c.get("/b/post1", headers={**DOC, "user-agent": IPHONE, **fwd})
            await c.get("/p/a1", headers={"user-agent": GOOGLEBOT, "accept": "text/html", **fwd})
            await c.get("/nope?status=404", headers={**DOC, **fwd})


def settings_for(make_settings, upstream_url, **kw) -> Settings:
    base = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, **kw)
    # The roles claim must be chosen explicitly when a JWT secret is set without a who-am-I URL.
    return Settings.from_env({"TRACKSIDE_TRUSTED_PROXIES": "127.0.0.1", "TRACKSIDE_TRUST_ROLES_CLAIM": "1"}, **{
        k: v for k, v in base.__dict__.items() if k != "trusted_proxies"})


async def dump_database(url: str) -> bytes:
    engine = create_engine(url)
    chunks = []
    async with engine.connect() as conn:
        tables = (await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")).scalars().all()
        for table in tables:
            for row in (await conn.execute(text(f'SELECT * FROM "{table}"'))).all():
                chunks.append(repr(tuple(row)).encode())
        ages = (await conn.exec_driver_sql("SELECT created_at FROM salts")).scalars().all()
    await engine.dispose()
    now = datetime.now(UTC).replace(tzinfo=None)
    assert ages, "salts exist"
    for created in ages:
        created_at = created if isinstance(created, datetime) else datetime.fromisoformat(created)
        assert now - created_at < timedelta(hours=48)
    return b"\n".join(chunks)


def assert_clean(blob: bytes, where: str) -> None:
    for ip in CLIENTS:
        for value in forbidden(ip):
            at = blob.find(value)
            assert at < 0, f"{value!r} (from {ip}) found in {where}: ...{blob[max(0, at - 200) : at + 50]!r}"
    assert b"hunter2" not in blob, f"a query-string token found in {where}"


def sidecar_logs(caplog) -> bytes:
    # Everything logged in this process but the test's own HTTP client (it logs the URLs it asks for).
    own = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    return "\n".join(f"{r.name} {r.getMessage()}" for r in own).encode()


async def test_no_ip_anywhere_embedded_mode(upstream_url, make_settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = settings_for(make_settings, upstream_url)
    async with run_sidecar(settings) as (url, app):
        await journey(url)
        # Make a spool too: the database goes away for one batch.
        app.pipeline.spool.append(app.pipeline.buffer.take(10_000))
        await journey(url)
    assert_clean(await dump_database(settings.database_url), "the database")
    spool = b"".join(p.read_bytes() for p in Path(settings.spool_dir).glob("*"))
    assert_clean(spool, "the spool")
    assert_clean(sidecar_logs(caplog), "the logs")


async def test_no_ip_in_redis(upstream_url, make_settings, caplog):
    caplog.set_level(logging.DEBUG)
    queue = f"privacy-{uuid.uuid4().hex}"
    settings = settings_for(make_settings, upstream_url, redis_url="redis://127.0.0.1:6379/0", queue_name=queue)
    async with run_sidecar(settings) as (url, app):
        await journey(url)
        await app.pipeline.flusher.flush()
    client = redis.from_url("redis://127.0.0.1:6379/0")
    try:
        jobs = await client.zrange(queue, 0, -1)
        keys = [k async for k in client.scan_iter(match=f"*{queue}*")] + [b"arq:job:" + j for j in jobs]
        blob = b""
        for key in keys:
            kind = await client.type(key)
            if kind == b"string":
                blob += await client.get(key) or b""
            elif kind == b"zset":
                blob += b"".join(await client.zrange(key, 0, -1))
        assert blob, "the batches are in Redis"
        assert_clean(blob, "Redis")
        for key in keys:
            await client.delete(key)
    finally:
        await client.aclose()
    assert_clean(sidecar_logs(caplog), "the logs")
