"""A real `trackside serve --workers 2` on the embedded default: the server processes are forked from
the supervisor (which imported everything once, so they share those pages), and one deriver, a
child of the supervisor, derives what both of them store; a SIGTERM stops them all, the deriver
last, with every event stored and derived."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import DOC
from tests.servers import free_port
from trackside.storage.tables import DERIVE_MARKS, FACT_PAGE_VIEWS

pytestmark = pytest.mark.timeout(120)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return [text[text.index("(") + 1 : text.rindex(")")], *text[text.rindex(")") + 2 :].split()]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[2]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[1] != "Z"
    except OSError:
        return False


def _counts(db: str) -> tuple[int, int, int]:
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        facts = conn.execute(f"SELECT COUNT(*) FROM {FACT_PAGE_VIEWS.name}").fetchone()[0]
        queued = conn.execute(f"SELECT COUNT(*) FROM {DERIVE_MARKS.name}").fetchone()[0]
    return events, facts, queued


async def test_two_forked_workers_share_one_deriver_and_stop_with_everything_derived(upstream_url, tmp_path):
    db = str(tmp_path / "t.db")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACKSIDE_LOG_LEVEL": "warning",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/_trackside/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the sidecar did not start"
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while len(children := _children(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Two server processes and one deriver, all forked from the supervisor (same command line,
        # no `multiprocessing.spawn`); the server processes start no deriver of their own.
        assert len(children) == 3
        names = sorted(_stat(pid)[0] for pid in children)
        assert names.count("trackside-deriv") == 1
        deriver = next(pid for pid in children if _stat(pid)[0] == "trackside-deriv")
        workers = [pid for pid in children if pid != deriver]
        for pid in children:
            assert _cmdline(pid) == _cmdline(proc.pid)
        for pid in workers:
            assert _children(pid) == []
        deadline = time.monotonic() + 10
        while int(_stat(deriver)[17]) != 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int(_stat(deriver)[17]) == 10  # nice 10: proxied requests first

        # (The upstream runs in this test's event loop: the requests are made asynchronously.)
        for i in range(20):
            # A new connection each time: the kernel hands it to either worker.
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get(f"/p/w{i}", headers=DOC)).status_code == 200
        deadline = time.monotonic() + 20
        while (counts := _counts(db)) != (20, 20, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert counts == (20, 20, 0)  # stored by either worker, derived by the one deriver

        async with httpx.AsyncClient(base_url=url) as client:
            for path in ("/", "/b/x1"):
                assert (await client.get(path, headers=DOC)).status_code == 200
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 40)
        assert proc.returncode == 0
        assert not any(_alive(pid) for pid in children)
        assert _counts(db) == (22, 22, 0)  # the last two stored at the workers' stop, derived after it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_supervisor_killed_outright_leaves_no_process_behind(upstream_url, tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACKSIDE_LOG_LEVEL": "warning",
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(children := _children(proc.pid)) < 3:
            assert time.monotonic() < deadline, "the sidecar did not start"
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 30
        while True:  # both workers serving
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_trackside/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the sidecar did not start"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        proc.kill()
        proc.wait()
        # The server processes get SIGTERM when their parent dies (and stop as usual); the deriver
        # reads the end of its pipe.
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
