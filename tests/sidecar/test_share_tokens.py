"""Share tokens (`trackside share create|list|revoke`): read-only tokens that open the dashboard signed
in. The CLI's round trip, and a real sidecar on both backends reading the dashboard's data and the
query APIs with a fresh token, refusing a revoked and an expired one with their reasons, and refusing
every change (goals, events)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, SECRET, ev, midnight
from tests.sidecar.test_v2_query import ROUTE as V2
from tests.sidecar.test_v2_query import D, T
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.share_tokens import SHARE_TOKENS, ShareRing, create_share, list_shares, parse_expiry, revoke_share
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch


def test_share_cli_creates_lists_and_revokes(sqlite_url, tmp_path):
    env = {**os.environ, "TRACKSIDE_DATABASE_URL": sqlite_url, "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", "share", *args], env=env, capture_output=True, text=True, timeout=60
        )

    made = cli("create", "--expires", "12h", "--label", "board meeting")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("tss_") and "not shown again" in made.stderr and "/_trackside/#token=" in made.stderr
    token_id = token.split("_")[1]
    default = cli("create")
    assert default.returncode == 0, default.stderr
    listed = json.loads(cli("list", "--json").stdout)
    assert [(t["label"], t["revoked_at"]) for t in listed] == [("board meeting", None), ("", None)]
    assert listed[0]["id"] == token_id
    lasts = [
        datetime.fromisoformat(t["expires_at"].rstrip("Z")) - datetime.fromisoformat(t["created_at"].rstrip("Z"))
        for t in listed
    ]
    assert lasts == [timedelta(hours=12), timedelta(days=30)]
    text = cli("list").stdout
    assert token.split("_", 2)[2] not in text and "expires " in text and "board meeting" in text
    bad = cli("create", "--expires", "soon")
    assert bad.returncode == 2 and "expires must be a number and a unit" in bad.stderr
    too_long = cli("create", "--expires", "400d")
    assert too_long.returncode == 2 and "at most 366 days" in too_long.stderr
    assert cli("revoke", token_id).returncode == 0
    again = cli("revoke", token_id)
    assert again.returncode == 1 and "no active share token" in again.stderr
    assert json.loads(cli("list", "--json").stdout)[0]["revoked_at"] is not None
    assert "revoked " in cli("list").stdout


def test_expiry_spellings():
    assert parse_expiry("90m") == timedelta(minutes=90)
    assert parse_expiry("12h") == timedelta(hours=12)
    assert parse_expiry("30d") == timedelta(days=30)
    assert parse_expiry("2w") == timedelta(weeks=2)


async def test_a_sidecar_reads_with_a_share_token_and_refuses_revoked_expired_and_writes(
    upstream_url, make_settings, database_url
):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, admin_token=ADMIN,
        database_url=database_url, goals=("signup",),
    )  # fmt: skip
    engine = create_engine(database_url)
    try:
        d, t = midnight(1), midnight(0)
        events = [ev(d + 3600, "va", path="/"), ev(t + 60, "vb", path="/"), ev(t + 120, "vb", path="/about")]
        await write_batch(engine, Batch(events=events), derivation_of(settings))
        _, fresh = await create_share(engine, "board", timedelta(days=1))
        revoked_row, revoked = await create_share(engine, "old", timedelta(days=1))
        await revoke_share(engine, revoked_row.id)
        expired_row, expired = await create_share(engine, "last month", timedelta(days=1))
        async with engine.begin() as conn:
            await conn.execute(
                SHARE_TOKENS.update()
                .where(SHARE_TOKENS.c.id == expired_row.id)
                .values(expires_at=expired_row.created_at - timedelta(days=1))
            )
        # One that expires while the sidecar remembers it: expiry is checked on every use.
        _, brief = await create_share(engine, "brief", timedelta(seconds=2))
    finally:
        await engine.dispose()

    body = {"metrics": ["pageviews"], "date_range": [D, T]}
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:

            def auth(token: str) -> dict[str, str]:
                return {"authorization": "Bearer " + token}

            site = await c.get("/_trackside/api/v1/site", headers=auth(fresh))
            v2 = await c.post(V2, json=body, headers=auth(fresh))
            v1 = await c.get("/_trackside/api/v1/query?metrics=page_views&period=today", headers=auth(fresh))
            goals = await c.get("/_trackside/api/goals", headers=auth(fresh))
            brief_before = await c.post(V2, json=body, headers=auth(brief))
            refused = {
                "revoked site": await c.get("/_trackside/api/v1/site", headers=auth(revoked)),
                "revoked v2": await c.post(V2, json=body, headers=auth(revoked)),
                "expired site": await c.get("/_trackside/api/v1/site", headers=auth(expired)),
                "expired v2": await c.post(V2, json=body, headers=auth(expired)),
                "expired v1": await c.get("/_trackside/api/v1/query?metrics=page_views", headers=auth(expired)),
                "wrong secret": await c.get("/_trackside/api/v1/site", headers=auth(fresh[:-2] + "xx")),
            }
            add_goal = await c.post(
                "/_trackside/api/goals", json={"name": "About", "kind": "page", "match": "/about"}, headers=auth(fresh)
            )
            remove_goal = await c.delete("/_trackside/api/goals/signup", headers=auth(fresh))
            event = await c.post("/_trackside/api/event", json={"name": "pageview", "url": "/x"}, headers=auth(fresh))
            await asyncio.sleep(2.1)
            brief_after = await c.get("/_trackside/api/v1/site", headers=auth(brief))
            v2_after = await c.post(V2, json=body, headers=auth(fresh))

    assert site.status_code == 200, site.text
    assert site.json()["daily_views"][-1]["count"] == 2
    assert rows(v2) == [[[], [3]]]
    assert v1.status_code == 200 and v1.json()["results"] == [{"dimensions": [], "metrics": [2]}]
    assert goals.status_code == 200 and [g["name"] for g in goals.json()["goals"]] == ["signup"]
    assert rows(brief_before) == [[[], [3]]]
    assert {name: (r.status_code, r.json()) for name, r in refused.items()} == {
        "revoked site": (401, {"detail": "unknown or revoked share token"}),
        "revoked v2": (401, {"error": "unknown or revoked share token"}),
        "expired site": (401, {"detail": "the share token expired"}),
        "expired v2": (401, {"error": "the share token expired"}),
        "expired v1": (401, {"detail": "the share token expired"}),
        "wrong secret": (401, {"detail": "unknown or revoked share token"}),
    }
    assert (add_goal.status_code, add_goal.json()) == (
        403,
        {"detail": "a share token may list goals but not change them"},
    )
    assert (remove_goal.status_code, remove_goal.json()) == (
        403,
        {"detail": "a share token may list goals but not change them"},
    )
    assert event.status_code == 401 and event.json()["error"] == "unknown or revoked API key"
    assert (brief_after.status_code, brief_after.json()) == (401, {"detail": "the share token expired"})
    assert rows(v2_after) == [[[], [3]]]  # the refused event was never stored

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            digests = (await conn.execute(sa.select(SHARE_TOKENS.c.secret_sha256))).scalars().all()
    finally:
        await engine.dispose()
    # Only hashes are stored, never a usable token.
    assert len(digests) == 4 and all(fresh.split("_", 2)[2] not in d for d in digests)


def rows(response: httpx.Response) -> list:
    assert response.status_code == 200, response.text
    return [[r["dimensions"], r["metrics"]] for r in response.json()["results"]]


async def test_the_ring_remembers_a_token_until_its_recheck(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        row, token = await create_share(engine, "board", timedelta(days=1))
        patient, eager = ShareRing(engine, recheck_seconds=3600), ShareRing(engine, recheck_seconds=0)
        assert (await patient.check(token)).id == row.id
        assert (await eager.check(token)).label == "board"
        assert await eager.check("tss_" + row.id + "_wrong") is None
        assert await eager.check("tsk_" + row.id + "_x") is None
        await revoke_share(engine, row.id)
        # A revoked token stops at the next database read: at once here, within the recheck elsewhere.
        assert await eager.check(token) is None
        assert (await patient.check(token)).id == row.id
        assert [(t.id, t.revoked_at is not None) for t in await list_shares(engine)] == [(row.id, True)]
        assert not await revoke_share(engine, row.id)
    finally:
        await engine.dispose()
