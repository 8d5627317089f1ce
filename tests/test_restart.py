"""The sidecar restarted under load: a graceful stop flushes its buffer; after a SIGKILL the loss
is at most the unflushed buffer, and it is reported exactly in the metrics after the restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx

from tests.conftest import DOC
from tests.servers import free_port


def start(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_trackside/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the sidecar did not start")


def stored(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


async def test_graceful_stop_flushes_and_sigkill_loss_is_reported(upstream_url, tmp_path):
    db = tmp_path / "t.db"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        # Nothing is flushed on its own during the test: what the buffer holds is what a kill loses.
        "TRACKSIDE_FLUSH_INTERVAL": "60",
        "TRACKSIDE_LOG_LEVEL": "warning",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(env, port)
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            for i in range(40):
                assert (await c.get(f"/p/k{i}", headers=DOC)).status_code == 200
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert stored(str(db)) == 0

        proc = start(env, port)
        async with httpx.AsyncClient(base_url=url) as c:
            metrics = (await c.get("/_trackside/metrics")).json()
            assert metrics["events_lost_unclean_shutdown"] == 40
            for i in range(25):
                assert (await c.get(f"/p/g{i}", headers=DOC)).status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -15 is a clean stop.
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert stored(str(db)) == 25

        proc = start(env, port)
        async with httpx.AsyncClient(base_url=url) as c:
            metrics = (await c.get("/_trackside/metrics")).json()
        assert "events_lost_unclean_shutdown" not in metrics  # the clean stop lost nothing
    finally:
        proc.kill()
        proc.wait(10)
