"""`events_dropped` survives a restart: a clean stop, a new app on the same spool; and a SIGKILL of
a real `trackside serve`, then a new one. The counter shows the exact number each time."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.conftest import DOC
from tests.servers import free_port, run_sidecar
from tests.test_restart import start
from trackside.ledger import Ledger


async def _views(url: str, prefix: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        for i in range(n):
            assert (await c.get(f"/{prefix}{i}", headers=DOC)).status_code == 200


async def _metric(url: str, name: str) -> int:
    async with httpx.AsyncClient(base_url=url) as c:
        return int((await c.get("/_trackside/metrics")).json().get(name, 0))


async def test_dropped_count_survives_clean_restarts(upstream_url, make_settings):
    # A buffer of 5 that is flushed only when the app stops: of 12 page views, 7 are dropped.
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, buffer_size=5, flush_interval=60)
    async with run_sidecar(settings) as (url, _):
        await _views(url, "p/a", 12)
        assert await _metric(url, "events_dropped") == 7
    async with run_sidecar(settings) as (url, _):
        assert await _metric(url, "events_dropped") == 7
        await _views(url, "p/b", 8)  # 3 more
        assert await _metric(url, "events_dropped") == 10
    async with run_sidecar(settings) as (url, app):
        assert await _metric(url, "events_dropped") == 10
        assert app.metrics.counts.get("events_lost_unclean_shutdown", 0) == 0  # clean stops lost nothing
    # One ledger file carries the count between runs.
    assert [p.name.startswith("ledger-") for p in Path(settings.spool_dir).iterdir() if p.suffix == ".bin"] == [True]


async def test_dropped_count_survives_a_sigkill(upstream_url, tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACKSIDE_BUFFER_SIZE": "4",
        "TRACKSIDE_FLUSH_INTERVAL": "60",
        "TRACKSIDE_LOG_LEVEL": "warning",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(env, port)
    try:
        await _views(url, "p/k", 10)
        assert await _metric(url, "events_dropped") == 6
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start(env, port)
        assert await _metric(url, "events_dropped") == 6
        assert await _metric(url, "events_lost_unclean_shutdown") == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)
        proc = start(env, port)
        assert await _metric(url, "events_dropped") == 6
    finally:
        proc.kill()
        proc.wait(10)


def _killed(ledger: Ledger) -> None:
    """What a SIGKILL leaves: the file and its counters, no lock."""
    ledger._slots.release()
    ledger._map.close()
    ledger._file.close()


def test_a_spool_failure_is_dropped_not_also_lost(tmp_path):
    """Events the spool could not take were captured: they count as dropped, never also as lost."""
    first = Ledger(str(tmp_path))
    first.add_captured(9)
    first.add_durable(4)
    first.add_dropped(5, captured=True)
    first.add_dropped(2)  # the buffer was full: never captured
    _killed(first)
    second = Ledger(str(tmp_path))
    found = second.absorb()
    assert (found.lost, found.dropped, second.dropped) == (0, 7, 7)
    # A ledger of the same run (a sibling server process that ended): its drops are carried, not
    # counted again (its counter file in the run still shows them).
    sibling = Ledger(str(tmp_path), run="run-1")
    sibling.add_dropped(3)
    sibling.close()
    again = Ledger(str(tmp_path), run="run-1")
    found = again.absorb()
    assert (found.lost, found.dropped, again.dropped) == (0, 0, 3)  # `second` is alive: left alone
    second.close()
    _killed(again)
    third = Ledger(str(tmp_path), run="run-2")
    found = third.absorb()
    assert (found.lost, found.dropped, third.dropped) == (0, 10, 10)
    assert [p.name for p in tmp_path.iterdir()] == [third.path.name]
    third.close()
