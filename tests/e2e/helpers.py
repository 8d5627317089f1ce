"""Process management and expectations for the end-to-end tests (used by conftest.py and the tests).

Everything here starts real processes on loopback ports: the e2e Next.js site (``next start``), the stand-in API
(``api_app.py`` under uvicorn), the sidecar (``python -m sidecar serve``), and the browser journey
(``node journey.mjs``). Every process is started in its own session and ended by its own id.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

E2E_DIR = Path(__file__).resolve().parent
NEXTSITE = E2E_DIR / "nextsite"
REPO_ROOT = E2E_DIR.parent.parent
JOURNEY = E2E_DIR / "journey.mjs"
API_APP = E2E_DIR / "api_app.py"

# A desktop Chrome UA: what the journey sends (HeadlessChrome would be a bot) and what the httpx tests send.
CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
JWT_SECRET = "trackside-e2e-secret-0123456789abcdef0123456789"


# --------------------------------------------------------------------------------------------------- environment


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """A missing tool skips the test on a developer machine, and fails it under CI (CI must have everything)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A started server process: its argv, log file and Popen; ``stop()`` ends it (and its own children)."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, cwd: Path, env: dict[str, str] | None = None) -> Proc:
        log = open(self.log_path, "ab")  # the child keeps its own copy of the fd
        try:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can end its children too, by this id
            )
        finally:
            log.close()
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_http(self, url: str, timeout: float = 60.0, status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                rc = self.popen and self.popen.returncode
                raise RuntimeError(f"{self.name} exited with {rc}:\n{self.log_tail()}")
            try:
                r = httpx.get(url, timeout=2.0)
                if r.status_code == status:
                    return
                last = r.status_code
            except httpx.HTTPError as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} did not answer {status} on {url} in {timeout}s (last: {last!r}):\n{self.log_tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` to the process group we started, wait, then SIGKILL it if it is still there."""
        p = self.popen
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        else:
            # The leader is gone; end any child it left in its group.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return p.returncode


def build_nextsite(timeout: float = 900.0) -> str:
    """Run build.sh (npm ci when needed, next build when needed); return the build id."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        skip_or_fail("node/npm are not installed")
    env = dict(os.environ, NEXT_TELEMETRY_DISABLED="1")
    r = subprocess.run(
        ["bash", str(NEXTSITE / "build.sh")],
        cwd=NEXTSITE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"build.sh failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return (NEXTSITE / ".next" / "BUILD_ID").read_text().strip()


def start_next(tmp: Path) -> Proc:
    port = free_port()
    next_bin = NEXTSITE / "node_modules" / "next" / "dist" / "bin" / "next"
    node = shutil.which("node") or "node"
    proc = Proc("next", [node, str(next_bin), "start", "-p", str(port), "-H", "127.0.0.1"], tmp / "next.log")
    proc.url = f"http://127.0.0.1:{port}"
    proc.start(NEXTSITE, env=dict(os.environ, NEXT_TELEMETRY_DISABLED="1", NODE_ENV="production"))
    try:
        proc.wait_http(proc.url + "/about", timeout=60)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_stub(tmp: Path, which: str) -> Proc:
    """The stand-in API (``which="api"``) or the HTML frontend stub (``which="frontend"``), under uvicorn."""
    port = free_port()
    proc = Proc(which, [sys.executable, str(API_APP), str(port), which], tmp / f"{which}.log")
    proc.url = f"http://127.0.0.1:{port}"
    proc.start(E2E_DIR)
    try:
        proc.wait_http(proc.url + ("/api/health" if which == "api" else "/"), timeout=30)
    except BaseException:
        proc.stop()
        raise
    return proc


def sidecar_env(jwt_secret: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
    if jwt_secret:
        env["TRACKSIDE_JWT_SECRET"] = jwt_secret
        env["TRACKSIDE_TRUST_ROLES_CLAIM"] = "1"  # the test site signs its tokens alone
    return env


def start_sidecar(
    tmp: Path,
    *,
    frontend_url: str,
    api_url: str,
    database_url: str,
    jwt_secret: str | None = None,
    name: str = "sidecar",
    extra_args: list[str] | None = None,
) -> Proc:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--frontend-url",
        frontend_url,
        "--api-url",
        api_url,
        "--database-url",
        database_url,
    ]
    if jwt_secret:
        argv += ["--jwt-secret", jwt_secret]
    argv += extra_args or []
    proc = Proc(name, argv, tmp / f"{name}.log")
    proc.url = f"http://127.0.0.1:{port}"
    proc.start(REPO_ROOT, env=sidecar_env(jwt_secret))
    try:
        proc.wait_http(proc.url + "/_trackside/health", timeout=60)
    except BaseException:
        proc.stop()
        raise
    return proc


def stop_sidecar(proc: Proc, timeout: float = 30.0) -> None:
    """Graceful stop (SIGTERM: the sidecar flushes its buffer); it must exit by itself, cleanly."""
    rc = proc.stop(signal.SIGTERM, timeout=timeout)
    assert rc == 0 or rc == -signal.SIGTERM, f"{proc.name} exited with {rc} on SIGTERM:\n{proc.log_tail()}"


def report(database_url: str, timeout: float = 60.0) -> dict[str, Any]:
    # From yesterday (UTC): a test that runs across midnight still sees all it recorded.
    since = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    r = subprocess.run(
        [sys.executable, "-m", "sidecar", "report", "--json", "--database-url", database_url, "--since", since],
        cwd=REPO_ROOT,
        env=sidecar_env(None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"trackside report failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return json.loads(r.stdout)


def run_journey(base_url: str, token: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed")
    chromium = chromium_path()
    if chromium is None:
        skip_or_fail("chromium is not installed (/usr/bin/chromium, or $CHROMIUM)")
    env = {k: v for k, v in os.environ.items() if k not in ("TOKEN", "USER_AGENT")}
    env.update(BASE_URL=base_url, CHROMIUM=str(chromium), USER_AGENT=CHROME_UA, JOURNEY_TIMEOUT_MS="60000")
    if token:
        env["TOKEN"] = token
    # Its own process group, so that a timeout ends node and the Chromium it started, and nothing else.
    p = subprocess.Popen(
        [str(node), str(JOURNEY)],
        cwd=E2E_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        raise AssertionError(f"journey.mjs timed out after {timeout}s:\n{err[-6000:]}") from None
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # any Chromium process left behind in its group
        except (ProcessLookupError, PermissionError):
            pass
    assert p.returncode == 0, f"journey.mjs failed ({p.returncode}):\n{err[-6000:]}\n{out[-2000:]}"
    return json.loads(out)


def make_token(sub: str = "user-7", secret: str = JWT_SECRET, ttl: int = 3600) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


# ------------------------------------------------------------------------------------------------- expectations

PREFETCH_HEADERS = ("purpose", "sec-purpose")
DATA_RE = re.compile(r"^/_next/data/[^/]+/(?P<page>.+)\.json$")
CONTENT = {"p": "artwork", "b": "blog_post"}


def is_prefetch(headers: dict[str, str]) -> bool:
    if any("prefetch" in headers.get(h, "").lower() for h in PREFETCH_HEADERS):
        return True
    return headers.get("next-router-prefetch") == "1" or headers.get("x-middleware-prefetch") == "1"


def proxy_visible(req: dict[str, Any]) -> bool:
    """Did this browser request reach the proxy? (Not served from the browser's cache, same origin, not failed.)"""
    return bool(req["same_origin"]) and not req["from_cache"] and not req["failed"]


def page_view_path(req: dict[str, Any]) -> str | None:
    """The page path this request is a page view of, by the sidecar's counting rules, or None."""
    if not proxy_visible(req) or req["method"] not in ("GET", "HEAD"):
        return None
    headers = req["headers"]
    status = req["status"] or 0
    if is_prefetch(headers) or not (200 <= status < 300 or status == 304):
        return None
    path = urlsplit(req["path"]).path
    m = DATA_RE.match(path)
    if m:
        page = m.group("page")
        return "/" if page == "index" else "/" + page
    if headers.get("rsc") == "1":
        return path
    is_doc = headers.get("sec-fetch-dest") == "document" or "text/html" in headers.get("accept", "")
    if is_doc and "text/html" in (req.get("content_type") or ""):
        return path
    return None


def label_of(path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "p":
        return "/p/[post]"
    if len(parts) == 2 and parts[0] == "b":
        return "/b/[blog]"
    return path


def expected_from_journey(journey: dict[str, Any]) -> dict[str, Any]:
    """What the sidecar can count from the requests the browser made, by its rules."""
    views = [p for p in (page_view_path(r) for r in journey["requests"]) if p is not None]
    api = [r for r in journey["requests"] if proxy_visible(r) and urlsplit(r["path"]).path.startswith("/api/")]
    content: dict[str, set[str]] = {"artwork": set(), "blog_post": set()}
    for p in views:
        parts = p.strip("/").split("/")
        if len(parts) == 2 and parts[0] in CONTENT:
            content[CONTENT[parts[0]]].add(parts[1])
    for r in api:
        m = re.match(r"^/api/p/([^/]+)$", urlsplit(r["path"]).path)
        if m and r["method"] == "GET":
            content["artwork"].add(m.group(1))
    return {
        "page_views": len(views),
        "by_label": dict(Counter(label_of(p) for p in views)),
        "api_calls": len(api),
        "api_authenticated": sum(1 for r in api if r["headers"].get("authorization", "").startswith("Bearer")),
        # One look per item: everything here happens within a minute, well inside the 30-minute window.
        "content": {kind: sorted(ids) for kind, ids in content.items()},
    }


def step_requests(journey: dict[str, Any], step: str) -> list[dict[str, Any]]:
    """The proxy-visible requests the browser made during one step of the journey."""
    return [r for r in journey["requests"] if r["step"] == step and proxy_visible(r)]


def content_row(report_json: dict[str, Any], kind: str, item: str) -> dict[str, Any]:
    rows = [row for row in report_json["content"].get(kind, []) if row["id"] == item]
    assert len(rows) == 1, f"{kind} {item!r}: expected one row in {report_json['content'].get(kind)}"
    return rows[0]


# --------------------------------------------------------------------------------------------------- browser scripts


async def run_browser_script(
    node: str, script: Path, env: dict[str, str], timeout: float, *, unset: tuple[str, ...] = ()
) -> Any:
    """`node script` (a playwright-core script driving Chromium) with these variables added to this
    process's environment (less `unset`), without blocking the event loop a sidecar under test runs
    on; in its own process group, which is ended by id whatever happens (no Chromium is left over).
    Returns the JSON it printed; a timeout or a non-zero exit fails the test with its stderr's end.
    TRACKSIDE_TEST_SCREENSHOTS, when set, becomes its SCREENSHOT_DIR."""
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    shots = os.environ.get("TRACKSIDE_TEST_SCREENSHOTS")
    if shots:
        environ["SCREENSHOT_DIR"] = shots
    environ.update(env)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(script),
        cwd=E2E_DIR,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = await proc.communicate()
        raise AssertionError(f"{script.name} timed out after {timeout}s:\n{err.decode()[-6000:]}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any Chromium process left in its group
        except (ProcessLookupError, PermissionError):
            pass
    assert proc.returncode == 0, f"{script.name} failed ({proc.returncode}):\n{err.decode()[-6000:]}"
    return json.loads(out)
