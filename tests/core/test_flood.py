"""The flood limits: per visitor, and per client address (a script rotating user agents is a new
visitor with each request, but not a new address)."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import httpx
import pytest

from tests.reports import report_of
from tests.servers import run_sidecar
from trackside import flood
from trackside.flood import FloodLimit
from trackside.settings import Settings


def firefox(version: int) -> str:
    return f"Mozilla/5.0 (X11; Linux x86_64; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"


T0 = 1_700_000_040.0  # the start of a minute


def test_one_address_is_limited_whatever_its_user_agents():
    limit = FloodLimit(per_visitor=5, per_address=10)
    verdicts = [limit.over(f"visitor-{i}", "203.0.113.7", T0 + i * 0.1) for i in range(25)]
    assert verdicts == [False] * 10 + [True] * 15
    # Another address, and the same one in the next minute, start from nothing.
    assert limit.over("visitor-x", "198.51.100.9", T0 + 5) is False
    assert limit.over("visitor-y", "203.0.113.7", T0 + 60) is False


def test_the_per_visitor_limit_still_holds():
    limit = FloodLimit(per_visitor=3, per_address=100)
    assert [limit.over("same", "203.0.113.7", T0 + i) for i in range(5)] == [False, False, False, True, True]


def test_no_per_address_limit_for_non_public_addresses_or_when_off():
    # Private, loopback, shared (CGNAT 100.64/10) and unresolved addresses are a proxy's, or no one's.
    limit = FloodLimit(per_visitor=1000, per_address=2)
    for address in ("10.0.0.5", "192.168.1.2", "127.0.0.1", "100.64.3.4", "::1", "fd00::1", ""):
        assert [limit.over(f"v{i}", address, T0) for i in range(5)] == [False] * 5
    off = FloodLimit(per_visitor=1000, per_address=0)
    assert [off.over(f"v{i}", "203.0.113.7", T0) for i in range(5)] == [False] * 5


def test_an_ipv6_client_is_counted_by_its_slash_64():
    limit = FloodLimit(per_visitor=1000, per_address=3)
    # Four addresses of one /64 are one client; an address of another /64 is another.
    verdicts = [limit.over(f"v{i}", f"2001:db8:1:2::{i + 1:x}", T0) for i in range(4)]
    assert verdicts == [False, False, False, True]
    assert limit.over("v9", "2001:db8:1:3::1", T0) is False


def test_no_raw_address_is_held():
    limit = FloodLimit(per_visitor=1000, per_address=1000)
    limit.over("v", "203.0.113.7", T0)
    limit.over("v", "2001:db8::7", T0)
    kept = [*limit._addresses, *limit._blocks, *(v for v in limit._blocks.values() if v)]
    assert len(kept) == 6 and {len(k) for k in kept} == {16}  # keyed hashes, nothing else
    held = b"".join(kept)
    assert b"203.0.113.7" not in held
    for raw in ("203.0.113.7", "2001:db8::7"):
        assert raw.encode() not in held
        assert ipaddress.ip_address(raw).packed[:4] not in held
    # The key changes with the minute: this minute's hashes say nothing of the last one's.
    key = limit._key
    limit.over("v", "203.0.113.7", T0 + 60)
    assert limit._key != key and len(limit._key) == 32


def test_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(flood, "MAX_KEYS", 100)
    limit = FloodLimit(per_visitor=2, per_address=2)
    for i in range(1000):
        limit.over(f"visitor-{i}", str(ipaddress.ip_address("203.0.113.0") + i), T0)
    assert len(limit) == 200
    assert len(limit._blocks) == 100
    # The ones counted stay counted: the first visitor and address still trip their limits.
    assert limit.over("visitor-0", "203.0.113.0", T0) is False
    assert limit.over("visitor-0", "203.0.113.0", T0) is True


def test_settings_default_and_validation():
    assert Settings().flood_per_address == 3000
    assert Settings.from_env({"TRACKSIDE_FLOOD_PER_ADDRESS": "0"}).flood_per_address == 0
    with pytest.raises(Exception, match="TRACKSIDE_FLOOD_PER_ADDRESS"):
        Settings.from_env({"TRACKSIDE_FLOOD_PER_ADDRESS": "-1"})
    with pytest.raises(Exception, match="TRACKSIDE_FLOOD_PER_ADDRESS"):
        Settings.from_env({"TRACKSIDE_FLOOD_PER_ADDRESS": "many"})


async def test_rotating_user_agents_from_one_address_count_as_flood(upstream_url, make_settings, database_url):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        database_url=database_url,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),  # a TLS terminator on this host
        flood_per_minute=300,
        flood_per_address=20,
    )
    # All in one minute, so the counts are exact: start a fresh one if this one is nearly over.
    if time.time() % 60 > 45:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            for i in range(50):  # a new user agent each time: 50 visitors by the per-visitor count
                headers = {
                    "user-agent": firefox(80 + i),
                    "accept": "text/html",
                    "sec-fetch-dest": "document",
                    "x-forwarded-for": "203.0.113.7",
                }
                assert (await c.get("/p/a1", headers=headers)).status_code == 200  # counted, never refused
            # Someone else behind the same terminator is not affected.
            other = {"user-agent": firefox(70), "accept": "text/html", "x-forwarded-for": "198.51.100.9"}
            for _ in range(3):
                assert (await c.get("/p/a2", headers=other)).status_code == 200
    report = await report_of(settings.database_url)
    assert report["page_views"]["total"] == 20 + 3
    assert report["bots"]["flood"] == 30
    assert report["unique_visitors"] == 20 + 1
