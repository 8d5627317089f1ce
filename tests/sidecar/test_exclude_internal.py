"""Internal traffic (`TRACKSIDE_EXCLUDE_ADDRESSES`, `TRACKSIDE_EXCLUDE_USERS`): never stored, so in
no figure, and counted in `trackside_events_excluded_total`. Through a real sidecar behind a trusted
proxy (127.0.0.1) on both backends; the settings' parsing and start-up refusal."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import httpx
import jwt
import pytest
import sqlalchemy as sa

from tests.conftest import DOC, GOOGLEBOT
from tests.servers import run_sidecar
from tests.sidecar.test_events_api import new_key
from tests.sidecar.test_v2_query import ROUTE as V2
from trackside.errors import ConfigError
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

SECRET = "exclude-secret-exclude-secret-exclude"
ADMIN = "exclude-admin-token-0123456789"


def test_settings_parse_validate_and_round_trip():
    s = Settings.from_env(
        {"TRACKSIDE_EXCLUDE_ADDRESSES": "10.1.0.0/16, 2001:db8::/32,192.0.2.7", "TRACKSIDE_EXCLUDE_USERS": "staff1, u9"}
    )
    assert s.exclude_addresses == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert s.exclude_users == ("staff1", "u9")
    env = s.to_env()
    assert env["TRACKSIDE_EXCLUDE_ADDRESSES"] == "10.1.0.0/16,2001:db8::/32,192.0.2.7/32"
    assert env["TRACKSIDE_EXCLUDE_USERS"] == "staff1,u9"
    assert Settings.from_env(env).exclude_addresses == s.exclude_addresses
    with pytest.raises(ConfigError) as bad:
        Settings.from_env({"TRACKSIDE_EXCLUDE_ADDRESSES": "10.1.0.0/33"})
    assert str(bad.value).startswith("TRACKSIDE_EXCLUDE_ADDRESSES: invalid value '10.1.0.0/33'")
    with pytest.raises(ConfigError) as bad:
        Settings.from_env({"TRACKSIDE_EXCLUDE_ADDRESSES": "office"})
    assert str(bad.value).startswith("TRACKSIDE_EXCLUDE_ADDRESSES: invalid value 'office'")


def _token(user: str) -> dict[str, str]:
    return {"authorization": "Bearer " + jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")}


def _excluded_total(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("trackside_events_excluded_total "):
            return float(line.split()[1])
    return None


RECORDED = [[["/about"], [3, 3]], [["/"], [1, 1]], [["/p/a1"], [1, 1]]]


async def test_excluded_addresses_and_users_are_never_recorded(upstream_url, make_settings, database_url):
    await migrate(database_url)
    key = {"authorization": "Bearer " + await new_key(database_url)}
    env = Settings.from_env(
        {"TRACKSIDE_EXCLUDE_ADDRESSES": "10.1.0.0/16,2001:db8::/32", "TRACKSIDE_EXCLUDE_USERS": "staff1"}
    )
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, database_url=database_url, jwt_secret=SECRET,
        trust_roles_claim=True, admin_token=ADMIN, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        exclude_addresses=env.exclude_addresses, exclude_users=env.exclude_users,
    )  # fmt: skip
    asks = [
        ("/", {"x-forwarded-for": "10.1.2.3"}),  # excluded
        ("/about", {"x-forwarded-for": "10.1.2.3"}),  # excluded
        ("/", {"x-forwarded-for": "2001:db8::5"}),  # excluded
        # The client wrote the left entry; the proxy says the client is 203.0.113.9: recorded.
        ("/", {"x-forwarded-for": "10.1.2.3, 203.0.113.9"}),
        ("/p/a1", {"x-forwarded-for": "203.0.113.7"}),  # recorded, a look at a1
        ("/about", {"x-forwarded-for": "10.2.0.1"}),  # outside 10.1.0.0/16: recorded
        ("/", {"x-forwarded-for": "198.51.100.4", **_token("staff1")}),  # excluded user
        ("/about", {"x-forwarded-for": "198.51.100.4", **_token("u2")}),  # recorded
        ("/", {"x-forwarded-for": "10.1.2.3", "user-agent": GOOGLEBOT}),  # excluded, not even a bot hit
    ]
    query = {"metrics": ["visitors", "pageviews"], "date_range": "day", "dimensions": ["event:page"]}
    others = {"metrics": ["visitors", "content_views", "bot_hits"], "date_range": "day"}
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            for path, headers in asks:
                assert (await c.get(path, headers={**DOC, **headers})).status_code == 200
            beacon = await c.post(
                "/_trackside/b",
                content=b'{"t":"pageview","p":"/x"}',
                headers={"user-agent": DOC["user-agent"], "x-forwarded-for": "10.1.2.3"},
            )
            # The events API: by the client address its caller forwards.
            sent = [
                await c.post(
                    "/_trackside/api/event",
                    json={"name": "pageview", "url": "/about"},
                    headers={**key, "user-agent": DOC["user-agent"], "x-forwarded-for": forwarded},
                )
                for forwarded in ("10.1.9.9", "203.0.113.50")
            ]
            deadline = time.monotonic() + 15
            while True:
                metrics = (await c.get("/_trackside/metrics?format=prometheus")).text
                answer = await c.post(V2, json=query, headers={"authorization": "Bearer " + ADMIN})
                assert answer.status_code == 200, answer.text
                got = [[r["dimensions"], r["metrics"]] for r in answer.json()["results"]]
                # Until every recorded page view is stored (the events API's comes through its own batch).
                if (_excluded_total(metrics) == 7.0 and got == RECORDED) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            totals = await c.post(V2, json=others, headers={"authorization": "Bearer " + ADMIN})
    assert (beacon.status_code, beacon.headers.get("x-trackside-ignored")) == (204, "excluded")
    assert [(r.status_code, r.json()) for r in sent] == [
        (202, {"status": "ignored", "reason": "excluded"}),
        (202, {"status": "accepted"}),
    ]
    # 2 + 1 by address, 1 signed-in user, the bot from an excluded address, the beacon, the events API's.
    assert _excluded_total(metrics) == 7.0
    # Only the five recorded page views; no bot hit from the excluded Googlebot.
    assert got == RECORDED
    assert totals.status_code == 200 and totals.json()["results"] == [{"dimensions": [], "metrics": [5, 1, 0]}]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(sa.text("SELECT path, user_id FROM events ORDER BY path, user_id"))).all()
            bots = (await conn.execute(sa.text("SELECT count(*) FROM bot_hits"))).scalar()
    finally:
        await engine.dispose()
    assert sorted((p, u or "") for p, u in stored) == [
        ("/", ""),
        ("/about", ""),
        ("/about", ""),
        ("/about", "u2"),
        ("/p/a1", ""),
    ]
    assert bots == 0
