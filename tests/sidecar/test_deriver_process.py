"""Embedded mode's deriver: a child process of the sidecar turns stored events into facts without
any read asking for it, one per database (a second sidecar's waits), and goes when its sidecar does."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import DOC
from tests.servers import run_sidecar
from trackside.storage.engine import create_engine
from trackside.storage.tables import DERIVE_MARKS, FACT_PAGE_VIEWS

pytestmark = pytest.mark.timeout(120)


async def _counts(database_url: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            facts = (await conn.execute(select(func.count()).select_from(FACT_PAGE_VIEWS))).scalar_one()
            queued = (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one()
        return facts, queued
    finally:
        await engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone too (its parent, this test process, reaps it on wait).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(")")[-1].split()[16])


async def test_the_child_derives_without_a_read_and_ends_with_its_sidecar(upstream_url, make_settings, database_url):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, database_url=database_url)
    async with run_sidecar(settings) as (url, app):
        deriver = app.pipeline.deriver
        assert deriver is not None and deriver.process is not None
        pid = deriver.process.pid
        for _ in range(100):  # the child lowers its priority once started
            if _nice(pid) == 10:
                break
            await asyncio.sleep(0.05)
        assert _nice(pid) == 10  # proxied requests first
        async with httpx.AsyncClient(base_url=url) as client:
            for path in ("/", "/p/a1", "/b/b1"):
                assert (await client.get(path, headers=DOC)).status_code == 200
        deadline = time.monotonic() + 10
        while (counts := await _counts(database_url)) != (3, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert counts == (3, 0)  # derived by the child, no read asked
    for _ in range(100):
        if not _alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(pid)


@pytest.mark.parametrize("mode", ["thread", "off"])
async def test_thread_derives_in_process_and_off_leaves_the_queue(upstream_url, make_settings, database_url, mode):
    """`thread` derives in the serving process; `off` leaves the queue to another process (a read
    would still derive what it reads)."""
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, database_url=database_url, deriver=mode)
    async with run_sidecar(settings) as (url, app):
        assert app.pipeline.deriver is None
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/", headers=DOC)).status_code == 200
        deadline = time.monotonic() + 10
        while (counts := await _counts(database_url)) == (0, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if mode == "thread":
            while (counts := await _counts(database_url)) != (1, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert counts == (1, 0)
        else:
            await asyncio.sleep(1.5)  # three idle rounds' worth: nobody derives
            assert await _counts(database_url) == (0, 1)
