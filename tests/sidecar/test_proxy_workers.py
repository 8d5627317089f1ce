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

from sidecar.workers import SUPERVISOR
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


def _app_libraries(pid: int) -> list[str]:
    """The app's extension modules mapped in a process (uvloop, SQLite's, SQLAlchemy's, NumPy's)."""
    with open(f"/proc/{pid}/maps") as f:
        paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    return sorted(p for p in paths if any(name in p for name in ("uvloop", "_sqlite3", "sqlalchemy", "numpy")))


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


def _env(upstream_url: str, tmp_path, log_level: str = "warning") -> dict[str, str]:
    """`trackside serve`'s environment: embedded mode on `t.db` in the test's folder."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACKSIDE_LOG_LEVEL": log_level,
    }


def _serve(port: int) -> list[str]:
    return [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--workers", "2"]


async def test_two_forked_workers_share_one_deriver_and_stop_with_everything_derived(upstream_url, tmp_path):
    db = str(tmp_path / "t.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = _serve(port)
    env = _env(upstream_url, tmp_path)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    forked_cmdline = b"\0".join(part.encode() for part in command) + b"\0"
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
        # Two server processes and one deriver, all forked by `trackside serve` (same command line,
        # no `multiprocessing.spawn`); the server processes start no deriver of their own.
        assert len(children) == 3
        names = sorted(_stat(pid)[0] for pid in children)
        assert names.count("trackside-deriv") == 1
        deriver = next(pid for pid in children if _stat(pid)[0] == "trackside-deriv")
        workers = [pid for pid in children if pid != deriver]
        for pid in children:
            assert _cmdline(pid) == forked_cmdline  # forked by `trackside serve` before it became the supervisor
        # The supervisor is a small script now, holding none of the app's modules.
        assert _cmdline(proc.pid).split(b"\0")[1:4] == [b"-I", b"-S", bytes(SUPERVISOR)]
        assert _app_libraries(proc.pid) == []
        # It pings each server process twice a second, and otherwise sleeps (a bug once ping-ponged
        # in a loop: a core's worth of CPU). Clock ticks of CPU over 3 s: a loop would take ~300.
        ticks = int(_stat(proc.pid)[13]) + int(_stat(proc.pid)[14])
        await asyncio.sleep(3)
        assert int(_stat(proc.pid)[13]) + int(_stat(proc.pid)[14]) - ticks < 30
        assert "uvloop" in " ".join(_app_libraries(workers[0]))
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
    port = free_port()
    proc = subprocess.Popen(
        _serve(port), env=_env(upstream_url, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


async def test_server_processes_that_die_hang_or_are_reloaded_are_replaced_and_nothing_is_lost(upstream_url, tmp_path):
    """The supervisor replaces a server process killed outright and one frozen (SIGSTOP: it stops
    answering pings), and on SIGHUP replaces both, one at a time, while requests keep being answered;
    a replacement is a fresh `python -m sidecar.workers` on the same socket. Every request is stored
    and derived, whichever process took it, and a killed deriver is replaced too."""
    db = str(tmp_path / "t.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_serve(port), env=_env(upstream_url, tmp_path, "info"), stdout=out, stderr=out)
    sent = 0

    async def get_pages(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            async with httpx.AsyncClient(base_url=url) as client:  # a new connection: either process
                assert (await client.get(f"/p/w{sent}", headers=DOC)).status_code == 200
            sent += 1

    async def all_stored() -> tuple[int, int, int]:
        # A process killed outright loses what it captured and had not flushed yet (at most a second
        # of it, counted as lost at the next start): each kill below waits for the flush first.
        deadline = time.monotonic() + 30
        while (counts := _counts(db)) != (sent, sent, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return counts

    def is_deriver(pid: int) -> bool:
        return _stat(pid)[0] == "trackside-deriv" or b"trackside.deriver" in _cmdline(pid)

    def servers() -> list[int]:
        return [pid for pid in _children(proc.pid) if not is_deriver(pid)]

    async def replaced(old: set[int]) -> list[int]:
        deadline = time.monotonic() + 40
        while True:
            now = servers()
            if len(now) == 2 and not old & set(now) and all(_stat(pid)[1] != "Z" for pid in now):
                async with httpx.AsyncClient(base_url=url) as client:
                    try:
                        if (await client.get("/_trackside/health")).status_code == 200:
                            return now
                    except httpx.HTTPError:
                        pass
            assert time.monotonic() < deadline, f"not replaced: {now}"
            await asyncio.sleep(0.2)

    try:
        first = await replaced(set())
        await get_pages(5)
        assert await all_stored() == (5, 5, 0)

        os.kill(first[0], signal.SIGKILL)
        second = await replaced({first[0]})
        assert first[1] in second
        (cold,) = set(second) - {first[1]}
        assert _cmdline(cold).split(b"\0")[1:3] == [b"-m", b"sidecar.workers"]
        await get_pages(5)
        assert await all_stored() == (10, 10, 0)

        os.kill(first[1], signal.SIGSTOP)  # frozen: its connections wait, the supervisor kills it
        third = await replaced({first[0], first[1]})
        await get_pages(5)

        proc.send_signal(signal.SIGHUP)
        during = asyncio.create_task(get_pages(30))
        await replaced(set(third))
        await during
        await get_pages(5)
        assert await all_stored() == (50, 50, 0)

        # The deriver killed: another is started, and derives what came since.
        (deriver,) = [pid for pid in _children(proc.pid) if is_deriver(pid)]
        os.kill(deriver, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not (again := [pid for pid in _children(proc.pid) if is_deriver(pid) and pid != deriver]):
            assert time.monotonic() < deadline, "no new deriver"
            await asyncio.sleep(0.1)
        assert _cmdline(again[0]).split(b"\0")[1:3] == [b"-m", b"trackside.deriver"]
        await get_pages(5)
        assert await all_stored() == (55, 55, 0)
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        assert proc.returncode == 0
        assert _children(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"server process {first[0]} ended (signal SIGKILL): starting another" in text
    assert f"server process {first[1]} did not answer for 5 s: killing it" in text
    assert "received SIGHUP: replacing the server processes one at a time" in text
    assert f"the deriver ({deriver}) ended (signal SIGKILL): starting another" in text


def test_a_process_that_keeps_dying_at_start_is_started_again_after_a_growing_pause():
    from sidecar.supervisor import Supervisor

    supervisor = Supervisor({"socket": "0"}, ["python"])
    now = time.monotonic()
    assert [supervisor.pause("server", now) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert supervisor.pause("deriver", now) == 1.0  # counted apart
    assert supervisor.pause("server", now - 11) == 0.0  # it ran a while: at once, and the count restarts
    assert supervisor.pause("server", now) == 1.0


async def test_sigttin_adds_a_server_process_and_sigttou_removes_one(upstream_url, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(upstream_url, tmp_path)
    proc = subprocess.Popen(_serve(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def servers() -> list[int]:
        return [pid for pid in _children(proc.pid) if _stat(pid)[0] != "trackside-deriv" and _alive(pid)]

    async def count_becomes(n: int) -> list[int]:
        deadline = time.monotonic() + 40
        while len(now := servers()) != n:
            assert time.monotonic() < deadline, f"{len(now)} server processes, not {n}"
            await asyncio.sleep(0.2)
        return now

    try:
        first = await count_becomes(2)
        proc.send_signal(signal.SIGTTIN)
        three = await count_becomes(3)
        (added,) = set(three) - set(first)
        deadline = time.monotonic() + 40
        while b"trackside-serve" not in _stat(added)[0].encode():  # named once it runs its server
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTTOU)
        two = await count_becomes(2)
        assert added not in two  # the newest goes first
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/_trackside/health")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
