"""The events API's throughput on one core, embedded default (SQLite file in the same process),
side by side with the snippet's beacon route under the same conditions.

Run from the repository root:

    .venv/bin/python bench/events_api_bench.py [--duration 10] [--rounds 2] [--connections 32] \
        [--out bench/results/events-api.json]

What it does: makes a write API key with `trackside keys create`, starts `trackside serve` (one
server process, embedded SQLite, `TRACKSIDE_EVENTS_API_RATE` and `TRACKSIDE_FLOOD_PER_MINUTE` lifted so
one load generator is neither rate-limited nor a flood) pinned to CPU 0 with `taskset`, and drives
it with `wrk` pinned to CPU 1, in alternating rounds of:

- `events-pageview`: `{"name": "pageview", "url": ...}` with the visitor's User-Agent and X-Forwarded-For;
- `events-player-idem`: an MQTT-style player view (`props.item`, `view_type: player`, `player`) with
  a distinct `Idempotency-Key` per request;
- `beacon`: the web snippet's `POST /_trackside/b` page-view beacon (the closest existing route).

Per round: requests a second (wall clock) and the server's CPU seconds (from /proc), hence events
per CPU-second. After the rounds the server is stopped (it flushes) and the stored events are
counted: every accepted event must be in the database.

Standard library only; needs `wrk` and `taskset`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"

PAGEVIEW = json.dumps({"name": "pageview", "url": "https://makapix.club/p/a1", "domain": "makapix.club"})
PLAYER_VIEW = json.dumps(
    {
        "name": "player_view",
        "url": "https://makapix.club/api/player/p/k3x9",
        "domain": "makapix.club",
        "props": {"item": "artwork:k3x9", "view_type": "player", "player": "p7"},
    }
)
BEACON = json.dumps({"t": "pageview", "p": "/p/a1"})


def lua_script(target: str, key: str, round_id: str) -> str:
    def quoted(text: str) -> str:
        return "[==[" + text + "]==]"

    lines = ['wrk.method = "POST"', f'wrk.headers["User-Agent"] = {quoted(BROWSER_UA)}']
    if target == "beacon":
        lines += [f"wrk.body = {quoted(BEACON)}", 'wrk.headers["Content-Type"] = "text/plain"']
        return "\n".join(lines) + "\n"
    lines += [
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["Authorization"] = "Bearer {key}"',
        'wrk.headers["X-Forwarded-For"] = "203.0.113.9"',
    ]
    if target == "events-pageview":
        lines.append(f"wrk.body = {quoted(PAGEVIEW)}")
        return "\n".join(lines) + "\n"
    # One distinct idempotency key per request (per thread counter, round-unique prefix).
    lines += [
        f"body = {quoted(PLAYER_VIEW)}",
        "counter = 0",
        "request = function()",
        "  counter = counter + 1",
        f'  wrk.headers["Idempotency-Key"] = "{round_id}-" .. counter',
        "  return wrk.format(nil, nil, nil, body)",
        "end",
    ]
    return "\n".join(lines) + "\n"


PATHS = {
    "events-pageview": "/_trackside/api/event",
    "events-player-idem": "/_trackside/api/event",
    "beacon": "/_trackside/b",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(root: int) -> list[int]:
    """The process and its descendants (the server under `taskset`, or uvicorn's worker)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        todo += [int(c) for c in children]
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_trackside/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the sidecar did not become ready")


def run_wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            *("taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"),
            *("-s", str(script), url),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    return {
        "requests": requests,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "p99": p99.group(1) if p99 else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--targets", default="events-pageview,events-player-idem,beacon")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH")
    targets = [t for t in args.targets.split(",") if t]
    tmp = Path(tempfile.mkdtemp(prefix="trackside-events-bench-"))
    db = tmp / "trackside.db"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        TRACKSIDE_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        TRACKSIDE_SPOOL_DIR=str(tmp / "spool"),
        TRACKSIDE_EVENTS_API_RATE="1000000000",
        TRACKSIDE_FLOOD_PER_MINUTE="1000000000",
        TRACKSIDE_LOG_LEVEL="warning",
        TRACKSIDE_FRONTEND_URL="http://127.0.0.1:9",  # nothing is proxied in this benchmark
        TRACKSIDE_API_URL="http://127.0.0.1:9",
    )
    made = subprocess.run(
        [sys.executable, "-m", "sidecar", "keys", "create", "--scope", "write", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "sidecar.log", "wb")  # noqa: SIM115 - closed at the end
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "sidecar", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results: list[dict[str, Any]] = []
    try:
        wait_ready(url, 60)
        for round_no in range(args.rounds):
            for target in targets:
                script = tmp / f"{target}.lua"
                script.write_text(lua_script(target, key, f"r{round_no}"))
                pids = tree(server.pid)
                cpu0, t0 = cpu_seconds(pids), time.monotonic()
                done = run_wrk(url + PATHS[target], script, args.duration, args.connections)
                wall = time.monotonic() - t0
                time.sleep(1.5)  # let the flusher store the round's last events, on the server's bill
                cpu = cpu_seconds(tree(server.pid)) - cpu0
                accepted = done["requests"] - done["non_2xx"]
                row = {
                    "target": target,
                    "round": round_no,
                    **done,
                    "accepted": accepted,
                    "per_second": round(accepted / args.duration),
                    "server_cpu_seconds": round(cpu, 2),
                    "per_cpu_second": round(accepted / cpu) if cpu else None,
                    "wall": round(wall, 1),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT nav, count(*) FROM events GROUP BY nav").fetchall())
    expected = {
        "server": sum(r["accepted"] for r in results if r["target"].startswith("events")),
        "beacon": sum(r["accepted"] for r in results if r["target"] == "beacon"),
    }
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "conditions": (
            f"server pinned to CPU 0 (1 process, embedded SQLite in the same process), wrk -t1 -c{args.connections} "
            f"pinned to CPU 1, {args.duration} s rounds x {args.rounds}, alternating targets"
        ),
        "rounds": results,
        "stored_by_nav": stored,
        "expected_by_nav": expected,
        # wrk counts the answers it read within each round; requests still in flight when a round
        # ends (at most one per connection) are stored too, so the stored count may be a little higher.
        "none_lost": all(stored.get(nav, 0) >= n for nav, n in expected.items() if n),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
