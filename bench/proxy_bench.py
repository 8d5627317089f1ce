"""Side-by-side loopback benchmark: upstream direct vs. nginx logging proxy vs. the Trackside sidecar.

Run from the repository root:

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--connections 64] [--workers 2] \
        [--out bench/results/latest.json] [--pin-one-core] [--targets direct,nginx-proxy,sidecar,sidecar-nocapture]

Standard library only. Needs `nginx` and `wrk` on PATH (or in /usr/sbin, /usr/bin) and `taskset` for --pin-one-core.
See bench/README.md for what is measured and how to read the numbers.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# wrk sends no User-Agent by default; the sidecar would classify that as a bot/script, so look like a browser.
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
# Per path: the request headers wrk sends (and the sanity GET).
PATHS: dict[str, dict[str, str]] = {
    "/page": {"User-Agent": BROWSER_UA, "Accept": "text/html"},
    "/api/item": {"User-Agent": BROWSER_UA, "Accept": "application/json"},
}
PAGE_BYTES = 30 * 1024

# Sidecar variants: name -> extra CLI args appended to the common `serve` command line.
SIDECAR_VARIANTS: dict[str, list[str]] = {
    "sidecar": [],
    "sidecar-redis": [],  # --redis-url is added per run (a queue of its own on REDIS_URL)
    "sidecar-nocapture": ["--no-capture"],
}
# Redis mode: the sidecar queues batches; after the run a `worker --burst` drains them into the
# same SQLite file, so the stored-event check is the same as embedded mode's.
REDIS_URL = os.environ.get("TRACKSIDE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ALL_TARGETS = ["direct", "nginx-proxy", *SIDECAR_VARIANTS]
BASELINE = "nginx-proxy"
# `--before DIR`: every sidecar variant also runs from another checkout (e.g. a `git worktree` of an
# earlier commit), as `<variant>-before`, just before the current code's, in the same run.
BEFORE = "-before"


def variant_of(name: str) -> str:
    """The sidecar variant a target runs (`sidecar-before` runs `sidecar` from the `--before` tree)."""
    return name.removesuffix(BEFORE)


def expand_targets(targets: list[str], before: Path | None) -> list[str]:
    if before is None:
        return targets
    out: list[str] = []
    for name in targets:
        if name in SIDECAR_VARIANTS:
            out.append(name + BEFORE)
        out.append(name)
    return out


# --------------------------------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is registered here so that it is stopped on any kind of exit.
# --------------------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if this harness is SIGKILLed (so no finally/atexit runs),
    # the kernel still sends SIGTERM to the servers we started. Survives the exec done by `taskset`.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; the comm field may contain spaces, so split after ')'."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _field(stat: list[str], number: int) -> int:
    # `number` is the 1-based field number from proc(5); read_stat() starts at field 3.
    return int(stat[number - 3])


def process_tree(root: int) -> list[int]:
    """root plus all its descendants, found by walking the ppid field of every /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                children.setdefault(_field(stat, 4), []).append(int(entry))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def start_time(pid: int) -> int | None:
    stat = read_stat(pid)
    return _field(stat, 22) if stat else None


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of each process, plus cutime+cstime so CPU of children that exited and were reaped still counts."""
    ticks = 0
    for pid in pids:
        stat = read_stat(pid)
        if stat:
            ticks += sum(_field(stat, n) for n in (14, 15, 16, 17))
    return ticks / CLK_TCK


def pss_kb(pid: int) -> int:
    """Proportional set size: pages shared between processes count a share each (so a tree's sum
    is what it really occupies, unlike a sum of RSS)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_detail(pid: int) -> dict[str, Any]:
    """One process's PSS split (kB), for the JSON: what it shares with its family and what is its own."""
    out: dict[str, Any] = {"pid": pid}
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            out["cmd"] = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def is_deriver(pid: int) -> bool:
    """Embedded mode's deriver: `python -m trackside.deriver` (a child of each server process before
    6a877f8), or the supervisor's forked child named `trackside-deriv`."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "trackside-deriv":
                return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"trackside.deriver" in f.read()
    except OSError:
        return False


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcessRegistry:
    """Servers started by the harness. stop() ends a server by its PID, then any of its descendants still alive."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches only us; we shut servers down in order
                preexec_fn=_die_with_parent,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> float | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns seconds taken to exit cleanly, None if killed."""
        if proc in self.procs:
            self.procs.remove(proc)
        # Remember (pid, start time) of the whole tree first: workers get re-parented once the master is gone,
        # and the start time guards against signalling a recycled PID.
        tree = [(pid, start_time(pid)) for pid in process_tree(proc.pid)] if proc.poll() is None else []
        t0 = time.monotonic()
        clean: float | None = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                clean = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            clean = 0.0
        for pid, started in tree:
            if pid != proc.pid and started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return clean

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=5.0)


REGISTRY = ProcessRegistry()
_cleanup_done = False
_tmp_dirs: list[tuple[Path, bool]] = []  # (path, keep)


def cleanup() -> None:
    """Idempotent: called from main's finally and again from atexit."""
    global _cleanup_done
    if _cleanup_done:
        return
    _cleanup_done = True
    # Don't let a second Ctrl-C interrupt the shutdown half-way and leave servers behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    REGISTRY.stop_all()
    for path, keep in _tmp_dirs:
        if keep:
            print(f"kept temp dir {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _on_signal(signum: int, _frame: Any) -> None:
    # Turn SIGINT/SIGTERM/SIGHUP into an exception so try/finally blocks run (subprocess.run also kills wrk on it).
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------

# urllib honours http_proxy from the environment; loopback checks must never go through a proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def free_port() -> int:
    # Small race between closing and the server binding; acceptable on a quiet loopback.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> str | None:
    """Poll url until it answers 200. Returns None when ready, else a reason."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"process exited with code {proc.returncode}"
        try:
            status, _, _ = http_get(url, timeout=1.0)
            if status == 200:
                return None
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    return f"not ready after {timeout:.0f}s ({last})"


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def set_affinity(root: int, cpus: set[int]) -> None:
    for pid in process_tree(root):
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Step 1: content and nginx instances
# --------------------------------------------------------------------------------------------------------------


def write_content(www: Path) -> dict[str, bytes]:
    """Deterministic 30 KB HTML page and ~200 byte JSON document, so runs are comparable."""
    head = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Trackside bench</title></head>\n<body>\n'
    )
    para = (
        "<p>Trackside benchmark page. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
        'tempor incididunt ut labore et dolore magna aliqua. <a href="/page">Link</a></p>\n'
    )
    foot = "</body></html>\n"
    body = head
    while len(body) + len(para) + len(foot) < PAGE_BYTES:
        body += para
    pad = PAGE_BYTES - len(body) - len(foot) - len("<!---->")
    page = (body + "<!--" + "x" * pad + "-->" + foot).encode()
    assert len(page) == PAGE_BYTES

    item: dict[str, Any] = {"id": 4242, "name": "Trackside bench item", "price": 19.99, "tags": ["bench", "json"]}
    item["description"] = ""
    raw = json.dumps(item, separators=(",", ":"))
    item["description"] = "d" * max(0, 200 - len(raw))
    api = json.dumps(item, separators=(",", ":")).encode()

    (www / "page.html").write_bytes(page)
    (www / "item.json").write_bytes(api)
    return {"/page": page, "/api/item": api}


def nginx_common(d: Path) -> str:
    # Temp paths default to /var/lib/nginx; keep every file nginx touches inside our temp dir.
    return "\n".join(
        [
            f"pid {d}/nginx.pid;",
            f"error_log {d}/error.log warn;",
            "events { worker_connections 4096; }",
        ]
    )


def nginx_http_common(d: Path) -> str:
    return f"""
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    # wrk keeps its connections for the whole run; the default (1000) would add reconnects to the measurement.
    keepalive_requests 1000000;
"""


def upstream_conf(d: Path, port: int, www: Path) -> str:
    return f"""
worker_processes 1;
{nginx_common(d)}
http {{
    {nginx_http_common(d)}
    # The upstream is meant to be as cheap as possible; logging cost is measured on the proxy tier instead.
    access_log off;
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /page {{ types {{ }} default_type "text/html; charset=utf-8"; alias {www}/page.html; }}
        location = /api/item {{ types {{ }} default_type application/json; alias {www}/item.json; }}
        location / {{ return 404; }}
    }}
}}
"""


def proxy_conf(d: Path, port: int, upstream_port: int, workers: int) -> str:
    return f"""
worker_processes {workers};
{nginx_common(d)}
http {{
    {nginx_http_common(d)}
    log_format bench '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                     '"$http_referer" "$http_user_agent" $request_time $upstream_response_time';
    # A plain unbuffered access log, as a typical "logging reverse proxy" would have.
    access_log {d}/access.log bench;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    base_url: str
    log_path: Path
    workdir: Path


def start_nginx(name: str, tmp: Path, conf_text: str, port: int, prefix: list[str]) -> Server:
    d = tmp / name
    d.mkdir()
    d.chmod(0o755)  # nginx workers drop to user nobody when run as root; they must be able to read our files
    conf = d / "nginx.conf"
    conf.write_text(conf_text)
    argv = [*prefix, nginx_bin(), "-p", str(d), "-c", str(conf), "-e", str(d / "error.log"), "-g", "daemon off;"]
    proc = REGISTRY.start(argv, d / "stdout.log", cwd=d)
    return Server(name, proc, f"http://127.0.0.1:{port}", d / "error.log", d)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def wrk_bin() -> str:
    return shutil.which("wrk") or "/usr/bin/wrk"


# --------------------------------------------------------------------------------------------------------------
# Step 2: the sidecar
# --------------------------------------------------------------------------------------------------------------


def sidecar_argv(variant: str, port: int, upstream_url: str, db: Path, args: argparse.Namespace) -> list[str]:
    common = [
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--frontend-url", upstream_url, "--api-url", upstream_url),
        *("--workers", str(args.workers), "--database-url", f"sqlite+aiosqlite:///{db}"),
    ]
    extra = ["--redis-url", REDIS_URL] if variant_of(variant) == "sidecar-redis" else []
    return [
        *(sys.executable, "-m", args.sidecar_module, "serve"),
        *common,
        *SIDECAR_VARIANTS[variant_of(variant)],
        *extra,
        *args.sidecar_arg,
    ]


# `--visitors N`: each request from one of N rotating public addresses in `X-Forwarded-For`, which the
# sidecar believes from loopback (as behind a load balancer): N people's requests, derived as N
# visitor-days, instead of wrk's one client, whose every request lands in one visitor-day that the
# embedded deriver then reads whole at each round.
_VISITORS_LUA = """
local n = 0
local visitors = %d
local path = "%s"
local fixed = {%s}
request = function()
  n = n + 1
  local headers = {}
  for k, v in pairs(fixed) do headers[k] = v end
  local i = n %% visitors
  local a, b, c = math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256
  headers["X-Forwarded-For"] = "81." .. a .. "." .. b .. "." .. c
  return wrk.format("GET", path, headers)
end
"""


def visitors_script(tmp: Path, path: str, visitors: int) -> Path:
    script = tmp / f"visitors{path.replace('/', '_')}.lua"
    if not script.exists():
        fixed = ", ".join(f'["{k}"] = "{v}"' for k, v in PATHS[path].items())
        script.write_text(_VISITORS_LUA % (visitors, path, fixed))
    return script


def bench_env(repo: Path = REPO) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    # wrk is one client: its thousands of requests a second would be a flood from one visitor, which
    # the sidecar rightly keeps as bot counters. Lift the limit so every request is a full event
    # (with `--visitors` too: a visitor's share of wrk's rate is still faster than a person).
    env["TRACKSIDE_FLOOD_PER_MINUTE"] = "1000000000"
    env["TRACKSIDE_TRUSTED_PROXIES"] = "127.0.0.1"  # only matters with `--visitors`: none is sent otherwise
    env["TRACKSIDE_QUEUE_NAME"] = BENCH_QUEUE
    return env


BENCH_QUEUE = f"trackside:bench:{os.getpid()}"


def repo_of(name: str, args: argparse.Namespace) -> Path:
    """The checkout a target's sidecar runs from."""
    return Path(args.before) if name.endswith(BEFORE) and args.before else REPO


def drain_queue(tmp: Path, db: Path, args: argparse.Namespace, repo: Path = REPO) -> float | None:
    """Redis mode: run a worker in burst mode until the run's queue is empty. Seconds taken, None on failure."""
    argv = [
        *(sys.executable, "-m", args.sidecar_module, "worker", "--burst"),
        *("--redis-url", REDIS_URL, "--database-url", f"sqlite+aiosqlite:///{db}"),
    ]
    started = time.monotonic()
    with open(tmp / "worker.log", "wb") as out:
        proc = subprocess.run(argv, cwd=tmp, env=bench_env(repo), stdout=out, stderr=subprocess.STDOUT, timeout=600)
    return time.monotonic() - started if proc.returncode == 0 else None


def redis_listening() -> bool:
    parts = urllib.parse.urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1).close()
        return True
    except OSError:
        return False


def start_sidecar(
    variant: str, tmp: Path, upstream_url: str, args: argparse.Namespace, prefix: list[str]
) -> tuple[Server, Path]:
    d = tmp / variant
    d.mkdir()
    port = free_port()
    db = d / "bench.db"
    argv = [*prefix, *sidecar_argv(variant, port, upstream_url, db, args)]
    # The project isn't necessarily installed into the venv: put the repo on the import path, and run from the
    # temp dir so any relative files the sidecar writes (spool, caches) land there and get removed.
    proc = REGISTRY.start(argv, d / "sidecar.log", cwd=d, env=bench_env(repo_of(variant, args)))
    log(f"  started: {' '.join(argv)}")
    return Server(variant, proc, f"http://127.0.0.1:{port}", d / "sidecar.log", d), db


def count_sidecar_rows(db: Path) -> dict[str, Any]:
    """Rows the sidecar stored, and the visitor-days still queued for derivation into facts
    (`derive_marks`). Table names are whatever the sidecar creates; anything missing is 'n/a'."""
    out: dict[str, Any] = {"events": "n/a", "bot_hits": "n/a", "derive_marks": "n/a"}
    if not db.exists():
        out["note"] = "database file was not created"
        return out
    con = sqlite3.connect(db)
    try:
        for key, sql in (
            ("events", "SELECT COUNT(*) FROM events"),
            ("bot_hits", "SELECT SUM(hits) FROM bot_hits"),
            ("derive_marks", "SELECT COUNT(*) FROM derive_marks"),
        ):
            try:
                value = con.execute(sql).fetchone()[0]
                out[key] = value if value is not None else 0
            except sqlite3.Error as exc:
                out[f"{key}_error"] = str(exc)
    finally:
        con.close()
    return out


def queued_marks(db: Path) -> int | None:
    """Visitor-days queued for derivation in a running sidecar's SQLite file (None: not readable yet)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM derive_marks").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return None


def wait_derived(bench: Bench, target: Server, db: Path, timeout: float) -> dict[str, Any]:
    """Embedded mode: after the last wrk run, until the sidecar's deriver (a child process at nice 10)
    has emptied `derive_marks`. Seconds from the end of the last run, with the queue sampled each second."""
    start = time.monotonic()
    settle_s = bench.settle(target)  # the last events written (and queued) first
    samples: list[tuple[float, int | None]] = []
    while True:
        now = time.monotonic() - start
        left = queued_marks(db)
        samples.append((round(now, 1), left))
        if left == 0 or now > timeout:
            break
        time.sleep(1.0)
    return {
        "derive_catchup_s": round(samples[-1][0], 1) if samples[-1][1] == 0 else None,
        "settle_s": settle_s,
        "derive_marks_after_run": samples[0][1],
        "derive_samples": samples,
    }


# --------------------------------------------------------------------------------------------------------------
# Step 3: load generation and measurement
# --------------------------------------------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparseable wrk time {text!r}")
    return round(float(m.group(1)) * _TIME_UNITS_MS[m.group(2)], 3)


def parse_wrk(output: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if m := re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M):
        res["avg_ms"], res["max_ms"] = _ms(m.group(1)), _ms(m.group(3))
    for pct, value in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)", output, re.M):
        res[f"p{pct}_ms"] = _ms(value)
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", output, re.M):
        res["requests"] = int(m.group(1))
        res["elapsed_ms"] = _ms(m.group(2))
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M):
        res["rps"] = float(m.group(1))
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
        errors += sum(res["socket_errors"].values())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        res["non_2xx"] = int(m.group(1))
        errors += res["non_2xx"]
    res["errors"] = errors
    return res


class RssSampler(threading.Thread):
    """Sums VmRSS over a process tree every `interval` seconds and keeps the maximum.

    The tree is found once (a walk over every /proc/*/stat takes milliseconds of CPU, which at one
    connection showed up in every target's p99, the upstream's own included)."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.pids = process_tree(root)
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        self.peak_kb = max(self.peak_kb, sum(status_kb(pid, "VmRSS") for pid in self.pids))

    def run(self) -> None:
        self.sample()
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        if self.ident is not None:  # it may never have started if wrk failed to launch
            self.join()
        self.sample()
        return self.peak_kb


@dataclass
class Bench:
    args: argparse.Namespace
    upstream: Server | None = None
    wrk_prefix: list[str] = field(default_factory=list)
    target_prefix: list[str] = field(default_factory=list)

    def wrk(
        self, url: str, path: str, connections: int, duration: float, on_start: Callable[[], None] | None = None
    ) -> tuple[dict[str, Any], str]:
        threads = min(2, connections)
        argv = [*self.wrk_prefix, wrk_bin(), f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
        # A generous timeout so slow responses land in the latency histogram instead of being dropped as errors.
        argv += ["--timeout", "10s"]
        if self.args.visitors > 0:
            argv += ["-s", str(visitors_script(self.args.tmp, path, self.args.visitors))]
        else:
            for key, value in PATHS[path].items():
                argv += ["-H", f"{key}: {value}"]
        argv.append(url + path)
        # pdeathsig: wrk also goes away if we are killed, or interrupted while Popen is still starting it.
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
        ) as proc:
            try:
                # e.g. start the RSS sampler thread: only after the fork, since preexec_fn + threads is unsafe.
                if on_start:
                    on_start()
                # wrk stops by itself after `duration`; the timeout only guards against a wedged run.
                stdout, stderr = proc.communicate(timeout=duration + 30)
            except BaseException:
                proc.kill()
                raise
        if proc.returncode != 0:
            raise RuntimeError(f"wrk exited {proc.returncode}: {stderr.strip() or stdout.strip()}")
        return parse_wrk(stdout), stdout

    def measured_run(self, target: Server, path: str, connections: int, duration: float) -> dict[str, Any]:
        """One wrk run, with CPU and memory of the target's process tree (and the upstream's) around it."""
        up_root = self.upstream.proc.pid if self.upstream else None
        cpu0 = cpu_seconds(process_tree(target.proc.pid))
        up0 = cpu_seconds(process_tree(up_root)) if up_root else 0.0
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Memory is measured under load; the one-connection run measures latency, undisturbed.
        sampler = RssSampler(target.proc.pid) if connections > 1 else None
        try:
            res, raw = self.wrk(
                target.base_url, path, connections, duration, on_start=sampler.start if sampler else None
            )
        finally:
            peak_kb = sampler.stop() if sampler else 0
        tree = process_tree(target.proc.pid)
        pss = {pid: pss_kb(pid) for pid in tree} if connections > 1 else {}  # just after the load run
        cpu = cpu_seconds(process_tree(target.proc.pid)) - cpu0
        up_cpu = (cpu_seconds(process_tree(up_root)) - up0) if up_root else 0.0
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)
        requests = max(res.get("requests", 0), 1)
        res.update(
            connections=connections,
            duration_s=duration,
            cpu_s=round(cpu, 3),
            cpu_us_per_req=round(cpu / requests * 1e6, 1),
            upstream_cpu_us_per_req=round(up_cpu / requests * 1e6, 1),
            wrk_cpu_us_per_req=round(wrk_cpu / requests * 1e6, 1),
            peak_rss_mb=round(peak_kb / 1024, 1),
            pss_mb=round(sum(v for pid, v in pss.items() if not is_deriver(pid)) / 1024, 1),
            pss_deriver_mb=round(sum(v for pid, v in pss.items() if is_deriver(pid)) / 1024, 1),
            hwm_sum_mb=round(sum(status_kb(pid, "VmHWM") for pid in process_tree(target.proc.pid)) / 1024, 1),
            pids=len(process_tree(target.proc.pid)),
            pss_detail=[smaps_detail(pid) for pid in tree] if connections > 1 else [],
            wrk_output=raw,
        )
        return res

    def check(self, target: Server, path: str, expected: bytes) -> dict[str, Any]:
        """One plain GET before loading: catches a target that answers 404/502 at 20k req/s."""
        try:
            status, body, ctype = http_get(target.base_url + path, PATHS[path], timeout=5.0)
        except (OSError, urllib.error.URLError) as exc:
            return {"ok": False, "error": str(exc)}
        return {
            "ok": status == 200,
            "status": status,
            "bytes": len(body),
            "content_type": ctype,
            "body_identical": body == expected,
        }

    def bench_path(self, target: Server, path: str, expected: bytes) -> dict[str, Any]:
        a = self.args
        result: dict[str, Any] = {"target": target.name, "path": path, "check": self.check(target, path, expected)}
        if not result["check"]["ok"]:
            log(f"  {target.name} {path}: sanity GET failed {result['check']}; measuring anyway")
        elif not result["check"]["body_identical"]:
            log(f"  {target.name} {path}: body differs from upstream ({result['check']['bytes']} bytes)")
        log(f"  {target.name} {path}: warm-up {a.warmup:g}s")
        warm, _ = self.wrk(target.base_url, path, a.connections, a.warmup)
        result["warmup_requests"] = warm.get("requests", 0)
        log(f"  {target.name} {path}: load -c{a.connections} {a.duration:g}s")
        result["load"] = self.measured_run(target, path, a.connections, a.duration)
        if target.name.startswith("sidecar"):
            result["settle_s"] = self.settle(target)
        log(f"  {target.name} {path}: one connection {a.latency_duration:g}s")
        result["single"] = self.measured_run(target, path, 1, a.latency_duration)
        load = result["load"]
        log(
            f"  -> {load.get('rps', 0):,.0f} req/s, p50 {load.get('p50_ms')} ms, p99 {load.get('p99_ms')} ms, "
            f"{load['cpu_us_per_req']} CPU µs/req, errors {load['errors']}"
        )
        return result

    def settle(self, target: Server, timeout: float = 20.0) -> float:
        """Wait until the sidecar has written what the load run left in its buffer: the one-connection
        run measures the latency a request meets on a quiet proxy, not behind the previous run's
        writes. Several answers in a row must say so (with two workers, each answers for itself)."""
        start = time.monotonic()
        quiet = 0
        while quiet < 6 and time.monotonic() - start < timeout:
            try:
                _, body, _ = http_get(target.base_url + "/_trackside/ready")
                state = json.loads(body)
                quiet = quiet + 1 if state.get("buffered") == 0 and state.get("waiting", 0) == 0 else 0
            except (OSError, ValueError):
                quiet = 0
            time.sleep(0.1)
        return round(time.monotonic() - start, 2)

    def bench_target(self, target: Server, content: dict[str, bytes]) -> list[dict[str, Any]]:
        results = []
        for path in PATHS:
            try:
                results.append(self.bench_path(target, path, content[path]))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"  {target.name} {path}: FAILED: {exc}")
                results.append({"target": target.name, "path": path, "error": str(exc)})
            if target.proc.poll() is not None:
                log(f"  {target.name} exited (code {target.proc.returncode}) during the run:\n{tail(target.log_path)}")
                break
        return results


# --------------------------------------------------------------------------------------------------------------
# Step 4: orchestration per target
# --------------------------------------------------------------------------------------------------------------


def total_requests(results: list[dict[str, Any]]) -> dict[str, int]:
    """Requests wrk reports as completed against a target (warm-up + load + one-connection + sanity GET)."""
    per_path: dict[str, int] = {}
    for r in results:
        n = r.get("warmup_requests", 0) + (1 if r.get("check", {}).get("ok") else 0)
        n += r.get("load", {}).get("requests", 0) + r.get("single", {}).get("requests", 0)
        per_path[r["path"]] = n
    return per_path


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    bench = Bench(args)
    if args.pin_one_core:
        bench.wrk_prefix = ["taskset", "-c", "1"]
        bench.target_prefix = ["taskset", "-c", "0"]
    www = tmp / "www"
    www.mkdir()
    content = write_content(www)
    for p in (tmp, www, *www.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)

    report: dict[str, Any] = {"results": [], "skipped": {}, "sidecar_storage": {}}

    # The upstream lives for the whole run; every target proxies to it (direct = the upstream itself).
    up_port = free_port()
    upstream = start_nginx("upstream", tmp, upstream_conf(tmp / "upstream", up_port, www), up_port, [])
    if reason := wait_ready(upstream.proc, upstream.base_url + "/api/item", 10):
        raise SystemExit(f"upstream nginx failed to start: {reason}\n{tail(upstream.log_path)}")
    bench.upstream = upstream
    log(f"upstream nginx on {upstream.base_url} (pid {upstream.proc.pid})")

    for name in args.targets:
        log(f"[{name}]")
        if args.pin_one_core:
            # direct: the upstream *is* the target, so it gets core 0; otherwise it shares core 1 with wrk
            # and the target has core 0 to itself.
            set_affinity(upstream.proc.pid, {0} if name == "direct" else {1})
        if name == "direct":
            bench.upstream = None  # its CPU is the target's CPU; don't count it twice
            report["results"] += bench.bench_target(dataclasses.replace(upstream, name="direct"), content)
            bench.upstream = upstream
            continue

        if name == "nginx-proxy":
            port = free_port()
            conf = proxy_conf(tmp / name, port, up_port, args.workers)
            server = start_nginx(name, tmp, conf, port, bench.target_prefix)
            reason = wait_ready(server.proc, server.base_url + "/api/item", 10)
            db = None
        else:
            if variant_of(name) == "sidecar-redis" and not redis_listening():
                log(f"  SKIPPED: no Redis at {REDIS_URL} (set TRACKSIDE_BENCH_REDIS_URL)")
                report["skipped"][name] = {"reason": f"no Redis at {REDIS_URL}"}
                continue
            server, db = start_sidecar(name, tmp, upstream.base_url, args, bench.target_prefix)
            reason = wait_ready(server.proc, server.base_url + "/_trackside/health", args.ready_timeout)
        if reason:
            msg = f"{name} did not start: {reason}"
            log(f"  SKIPPED: {msg}\n  --- last lines of {server.log_path.name} ---\n{tail(server.log_path)}")
            report["skipped"][name] = {"reason": reason, "log_tail": tail(server.log_path)}
            REGISTRY.stop(server.proc)
            continue

        results = bench.bench_target(server, content)
        report["results"] += results
        catchup = None
        if variant_of(name) == "sidecar" and db is not None and args.derive_wait > 0 and server.proc.poll() is None:
            log(f"  waiting (up to {args.derive_wait:g}s) for the embedded deriver to empty derive_marks")
            catchup = wait_derived(bench, server, db, args.derive_wait)
            log(f"  derive backlog after the run: {catchup['derive_marks_after_run']} visitor-days, "
                f"empty after {catchup['derive_catchup_s']} s")  # fmt: skip
        # SIGTERM and wait, so the sidecar can flush buffered events before we count them.
        shutdown_s = REGISTRY.stop(server.proc, timeout=args.stop_timeout)
        if db is not None:
            sent = total_requests(results)
            redis = variant_of(name) == "sidecar-redis"
            drained = drain_queue(server.workdir, db, args, repo_of(name, args)) if redis else None
            stored = count_sidecar_rows(db)
            if redis:
                stored["drain_s"] = drained
            if catchup is not None:
                stored.update(catchup)
            stored.update(requests_sent=sum(sent.values()), requests_sent_per_path=sent, shutdown_s=shutdown_s)
            report["sidecar_storage"][name] = stored
            log(f"  stored: events={stored['events']} bot_hits={stored['bot_hits']} vs wrk requests={sent}")
            if shutdown_s is None:
                log(f"  {name} did not exit within {args.stop_timeout:g}s of SIGTERM and was killed")
    return report


# --------------------------------------------------------------------------------------------------------------
# Step 5: report
# --------------------------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def markdown_table(report: dict[str, Any], connections: int) -> str:
    base = {r["path"]: r["load"].get("rps") for r in report["results"] if r["target"] == BASELINE and "load" in r}
    lines = [
        f"| target | path | req/s | vs {BASELINE} | p50 / p99 ms @{connections}c | p50 / p99 ms @1c "
        "| CPU µs/req | peak RSS MB | PSS MB (deriver) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in report["results"]:
        if "load" not in r:
            lines.append(f"| {r['target']} | {r['path']} | failed | | | | | | |")
            continue
        load, single = r["load"], r["single"]
        rps, ref = load.get("rps"), base.get(r["path"])
        ratio = f"{rps / ref:.2f}x" if rps and ref else "n/a"
        lines.append(
            f"| {r['target']} | {r['path']} | {_fmt(rps, ',.0f')} | {ratio} "
            f"| {_fmt(load.get('p50_ms'))} / {_fmt(load.get('p99_ms'))} "
            f"| {_fmt(single.get('p50_ms'))} / {_fmt(single.get('p99_ms'))} "
            f"| {_fmt(load['cpu_us_per_req'], '.1f')} | {_fmt(load['peak_rss_mb'], '.1f')} "
            f"| {_fmt(load.get('pss_mb'), '.1f')}"
            + (f" ({_fmt(load.get('pss_deriver_mb'), '.1f')})" if load.get("pss_deriver_mb") else "")
            + " |"
        )
        for label, run_ in (("load", load), ("1-conn", single)):
            if run_["errors"]:
                notes.append(
                    f"- {r['target']} {r['path']} ({label}): {run_['errors']} errors "
                    f"(non-2xx {run_.get('non_2xx', 0)}, socket {run_.get('socket_errors', {})})"
                )
        if not r["check"].get("ok"):
            notes.append(f"- {r['target']} {r['path']}: sanity GET failed: {r['check']}")
    for name, info in report["skipped"].items():
        notes.append(f"- {name}: skipped, {info['reason']}")
    for name, s in report["sidecar_storage"].items():
        sent = s["requests_sent"]
        pct = f" ({s['events'] / sent:.1%} of requests)" if isinstance(s["events"], int) and sent else ""
        notes.append(
            f"- {name}: stored events={s['events']}{pct}, SUM(bot_hits.hits)={s['bot_hits']}, "
            f"requests wrk reported={sent} {s['requests_sent_per_path']}, "
            f"shutdown after SIGTERM={_fmt(s['shutdown_s'], '.1f')}s, derive_marks left={s.get('derive_marks', 'n/a')}"
            + (f", drained by a burst worker in {_fmt(s['drain_s'], '.1f')}s" if s.get("drain_s") is not None else "")
            + (
                f", embedded deriver caught up {_fmt(s['derive_catchup_s'], '.1f')}s after the last run"
                f" ({s['derive_marks_after_run']} visitor-days queued then)"
                if "derive_catchup_s" in s
                else ""
            )
        )
    return "\n".join(lines + ([""] + notes if notes else []))


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    cpu_model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown",
    )
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit or None,
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": os.getloadavg(),
        "before": str(args.before) if args.before else None,
        "visitors": args.visitors,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": tool_version([nginx_bin(), "-v"]),
        "wrk": tool_version([wrk_bin(), "--version"]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
        "page_bytes": PAGE_BYTES,
        "request_headers": PATHS,
        "sidecar_variants": SIDECAR_VARIANTS,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for the load run (default 64)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for nginx-proxy and the sidecar")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured wrk before each load run")
    p.add_argument("--latency-duration", type=float, default=5, help="seconds of the one-connection run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json", help="JSON results file")
    p.add_argument("--pin-one-core", action="store_true", help="target on CPU 0 (taskset), wrk on CPU 1")
    p.add_argument(
        "--visitors",
        type=int,
        default=0,
        help="requests from N rotating addresses (X-Forwarded-For, believed from loopback); 0: wrk's one client",
    )
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)} (default: all)",
    )
    p.add_argument("--ready-timeout", type=float, default=20, help="seconds to wait for sidecar health (default 20)")
    p.add_argument("--stop-timeout", type=float, default=30, help="seconds to wait for a sidecar to exit on SIGTERM")
    p.add_argument("--sidecar-module", default="sidecar", help="module run as `python -m MODULE serve ...`")
    p.add_argument(
        "--sidecar-arg",
        action="append",
        default=[],
        help="extra argument appended to every sidecar variant's command line (repeatable; use --sidecar-arg=--x)",
    )
    p.add_argument(
        "--derive-wait",
        type=float,
        default=180,
        help="embedded sidecar: seconds to wait after its last run for its deriver to empty derive_marks (0: don't)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, sqlite db)")
    p.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before HEAD~3`): each sidecar variant also runs "
        "from it, as VARIANT-before, just before the current code's",
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {ALL_TARGETS}")
    if args.before is not None and not (args.before / "sidecar").is_dir():
        p.error(f"--before {args.before}: no sidecar package there")
    args.targets = expand_targets(args.targets, args.before)
    if args.pin_one_core and (os.cpu_count() or 1) < 2:
        p.error("--pin-one-core needs at least 2 CPUs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (nginx_bin(), wrk_bin(), *(["taskset"] if args.pin_one_core else [])):
        if not shutil.which(tool) and not Path(tool).exists():
            raise SystemExit(f"{tool} not found")
    if args.pin_one_core and args.workers != 1:
        log(f"note: --pin-one-core with --workers {args.workers}: all workers share CPU 0")

    atexit.register(cleanup)
    # SIGINT too: when started in the background by a non-interactive shell, SIGINT is inherited as ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="trackside-bench-"))
    _tmp_dirs.append((tmp, args.keep_tmp))
    args.tmp = tmp  # where `--visitors`' wrk scripts go
    info = machine_info(args)
    try:
        report = run(args, tmp)
    finally:
        cleanup()

    info["loadavg_at_end"] = os.getloadavg()
    report["meta"] = info
    table = markdown_table(report, args.connections)
    report["markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nTrackside proxy bench — {info['cpus']} CPUs ({info['cpu_model']}), duration {args.duration:g}s, "
        f"{args.connections} connections, workers {args.workers}, pin-one-core {args.pin_one_core}, "
        f"visitors {args.visitors or 'one client'}\n"
    )
    print(table)
    print(f"\nload average at the start {info['loadavg_at_start']}, at the end {info['loadavg_at_end']}")
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
