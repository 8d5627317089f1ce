"""An operator's mistakes through the real `trackside` command: one line on stderr, an exit code,
never a traceback. And `--version`, JSON logs for every line, the dashboard's URL at start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_ADMIN_URL
from tests.servers import clean_env, free_port

REPO = Path(__file__).resolve().parent.parent
TRACKSIDE = str(REPO / ".venv" / "bin" / "trackside")
PG = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://")


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRACKSIDE, *args], env={**clean_env(), **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_version(tmp_path):
    done = run(["--version"], {}, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"trackside {version('trackside')}\n", "")


@pytest.mark.parametrize("command", [["migrate"], ["report"], ["serve", "--port", "0"], ["rollup", "--backfill"]])
def test_unreachable_database_is_one_line(tmp_path, command):
    env = {"TRACKSIDE_DATABASE_URL": "postgresql+asyncpg://trackside:hunter2-password@127.0.0.1:1/trackside"}
    done = run(command, env, tmp_path)
    assert done.returncode == 1
    assert one_line(done) == (
        "trackside: cannot use the database postgresql+asyncpg://trackside:***@127.0.0.1:1/trackside: "
        "Connect call failed ('127.0.0.1', 1)"
    )


def test_missing_postgres_database_and_bad_urls_are_one_line(tmp_path):
    missing = run(["migrate"], {"TRACKSIDE_DATABASE_URL": PG.rsplit("/", 1)[0] + "/no_such_db_zz"}, tmp_path)
    assert missing.returncode == 1
    assert one_line(missing).endswith(': database "no_such_db_zz" does not exist')
    port = run(["migrate"], {"TRACKSIDE_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:5432:99/x"}, tmp_path)
    assert (port.returncode, one_line(port)) == (
        2,
        "trackside: TRACKSIDE_DATABASE_URL is not a valid URL (Port could not be cast to integer value as '5432:99')",
    )
    sqlite = run(["migrate"], {"TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:////no/such/dir/t.db"}, tmp_path)
    assert (sqlite.returncode, one_line(sqlite)) == (
        1,
        "trackside: cannot use the database sqlite+aiosqlite:////no/such/dir/t.db: unable to open database file",
    )


def test_report_where_no_database_is_says_where_it_looked(tmp_path):
    done = run(["report"], {"TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:///./trackside.db"}, tmp_path)
    assert done.returncode == 1
    assert one_line(done) == (
        f"trackside: no database at {tmp_path / 'trackside.db'} "
        "(TRACKSIDE_DATABASE_URL=sqlite+aiosqlite:///./trackside.db); run it where the sidecar ran"
    )
    assert not (tmp_path / "trackside.db").exists()  # no empty database left behind
    # A database without Trackside's tables (PostgreSQL's own): said so, with what to do.
    bare = run(["report"], {"TRACKSIDE_DATABASE_URL": PG}, tmp_path)
    assert bare.returncode == 1
    line = one_line(bare)
    assert line.startswith(f"trackside: the database {PG} has no Trackside tables (")
    assert line.endswith("); run `trackside migrate`")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"TRACKSIDE_ADMIN_TOKEN": "change-me-admin-token-0123456789"},
            "trackside: TRACKSIDE_ADMIN_TOKEN is a known placeholder value; set a long random one "
            "(e.g. `openssl rand -hex 32`)",
        ),
        (
            {"TRACKSIDE_JWT_SECRET": "a-long-random-secret-0123456789abcdef"},
            "trackside: TRACKSIDE_TRUST_ROLES_CLAIM must be set to 1 or 0: TRACKSIDE_JWT_SECRET is set without",
        ),
    ],
)
def test_secrets_refused_at_start_are_one_line(tmp_path, env, expected):
    done = run(["serve", "--port", "0"], {"TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:///./t.db", **env}, tmp_path)
    assert done.returncode == 2
    assert one_line(done).startswith(expected)
    assert not (tmp_path / "t.db").exists()


def test_json_logs_every_line_and_the_dashboard_url(tmp_path):
    port = free_port()
    env = {
        **clean_env(),
        "TRACKSIDE_LOG_FORMAT": "json",
        "TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:///./t.db",
        "TRACKSIDE_JWT_SECRET": "short-secret-0123456789",
        "TRACKSIDE_TRUST_ROLES_CLAIM": "0",
    }
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [TRACKSIDE, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/_trackside/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
                time.sleep(0.2)
            httpx.get(f"http://127.0.0.1:{port}/_trackside/nothing", timeout=5)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    lines = out.read_text().splitlines() + err.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, alembic's and uvicorn's included
    loggers = {e["logger"] for e in entries}
    assert {"alembic.runtime.migration", "uvicorn.error", "trackside.sidecar"} <= loggers
    messages = [e["message"] for e in entries]
    assert f"Trackside on http://127.0.0.1:{port}/, dashboard http://127.0.0.1:{port}/_trackside/" in messages
    assert messages.count("TRACKSIDE_JWT_SECRET is shorter than 32 bytes: use a long random value") == 1
    assert not any("Traceback" in line for line in lines)


def test_errors_are_json_with_json_logs(tmp_path):
    env = {"TRACKSIDE_LOG_FORMAT": "json", "TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:///./trackside.db"}
    done = run(["report"], env, tmp_path)
    assert done.returncode == 1
    entry = json.loads(one_line(done))
    assert (entry["level"], entry["logger"]) == ("error", "trackside")
    assert entry["message"].startswith(f"no database at {tmp_path / 'trackside.db'} ")


assert os.path.exists(TRACKSIDE), "the project's virtualenv is expected at .venv"


def test_the_app_under_plain_uvicorn_says_why_it_cannot_start(tmp_path):
    """`uvicorn --factory sidecar.app:create_app` (no `trackside serve` to migrate first): the
    start-up failure is one log line naming the database, no traceback."""
    env = {
        **clean_env(),
        "TRACKSIDE_DATABASE_URL": "postgresql+asyncpg://trackside:pw@127.0.0.1:1/trackside",
        "TRACKSIDE_PORT": str(free_port()),
    }
    uvicorn = str(REPO / ".venv" / "bin" / "uvicorn")
    done = subprocess.run(
        [uvicorn, "--factory", "sidecar.app:create_app", "--port", env["TRACKSIDE_PORT"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3  # uvicorn's exit code for a failed start-up
    assert "Traceback" not in done.stderr + done.stdout
    failed = [line for line in done.stderr.splitlines() if "start-up failed" in line]
    assert len(failed) == 1
    head, _, reason = failed[0].partition(" ERROR ")[2].rpartition(": ")
    assert head == (
        "trackside.sidecar: start-up failed: cannot use the database postgresql+asyncpg://trackside:***@127.0.0.1:1/trackside"
    )
    assert reason in ("Connection refused", "Connect call failed ('127.0.0.1', 1)")  # uvloop's words, asyncio's
