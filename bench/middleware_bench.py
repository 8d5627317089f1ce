"""CPU cost of `TracksideMiddleware` per request, in process.

One FastAPI app (an HTML page and a JSON API read, the two requests a site serves most) is called
through ASGI directly, without a server or a socket, in a loop timed with `time.process_time()`:
once bare, once with the middleware. The difference per request is what the middleware costs the
app's process. Rounds alternate between the variants and the median round is reported, so a
noisy moment hurts neither side alone.

Variants:
- `bare`: the app alone;
- `capture`: the middleware, events appended to the buffer (the request path's whole cost; the
  flusher is not running);
- `embedded`: the middleware with its pipeline started on a SQLite file, the flusher writing batches
  in the same process during the round, and the final flush inside the timing: all the CPU that
  embedded mode spends per request. (In Redis mode the writes happen in the worker instead.)

    .venv/bin/python bench/middleware_bench.py [--requests 20000] [--rounds 7] [--json out.json]

Target: the middleware adds at most 50 µs of CPU per request.

`--pieces`: the capture path's pieces in process, CPU µs a request, one fresh process per checkout
and round (interleaved): `answered` (the request path's share), `record` (the flusher making the
event), `wire` (taking the batch from the buffer and packing it for Redis). With `--before DIR` and
`--also LABEL=DIR` (a compiled build, `bench/build_compiled.py`) side by side:

    .venv/bin/python bench/middleware_bench.py --pieces --before /tmp/before --also compiled=/tmp/compiled \
        [--rounds 7] [--requests 20000]

`--storing`: the embedded mode's storing of `--wrk`'s traffic (API calls of anonymous visitors),
in process on a fresh SQLite file, CPU µs an event written (`DatabaseWriter`, the writer thread's
work) and a visitor-day derived (the deriver's rounds after each batch), one fresh process per
checkout and round (interleaved), `--before DIR` and `--also LABEL=DIR` as above. `--visitors`
(20,000) rotate; with fewer, each visitor's rows of the day grow by 2,500 / visitors a batch, and
`derive_by_batch_first_round` shows what a derivation costs as they do:

    .venv/bin/python bench/middleware_bench.py --storing --before /tmp/before [--rounds 5] [--visitors 500]

`--wrk`: throughput on a real server instead (issue 16's measure). A minimal Starlette JSON endpoint
(`GET /api/item`) on one uvicorn worker (uvloop, httptools, no access log) pinned to CPU 0, wrk on
CPU 1 (`-t1`, 64 connections), three variants in interleaved rounds: `bare` (the app alone),
`redis` (`TracksideMiddleware` in Redis mode, jobs queued on 127.0.0.1:6379 under a queue of this
run's own, removed at the end) and `embedded` (the default: SQLite, its writer thread and its
deriver process, which inherits the pin). `--before DIR` runs the two middleware variants a second
time from another checkout (`git worktree add /tmp/before <commit>`) in the same rounds. wrk's
requests carry a browser user agent and an `X-Forwarded-For` from `--visitors` rotating public
addresses, which uvicorn's proxy headers (on by default for 127.0.0.1) make the ASGI client: each
request is a person's API call, not one client's flood turned into bot counters (`--visitors 0`
sends no such header). Reported per variant: req/s of each
round and their median, the share of `bare` kept (median of the per-round ratios), the server's CPU
µs a request (its process tree) and `cpu_kept_of_bare` (bare's CPU a request over the variant's, per
round: what would be kept if the pinned core were the only limit; steadier on a shared machine),
the same for the server process alone (`server_cpu_kept_of_bare`: the embedded deriver's CPU left out),
and the events stored (SQLite rows, or events queued in Redis) against the requests sent.
`--also LABEL=DIR` runs the middleware variants from one more directory (another checkout, or the
compiled build of `bench/build_compiled.py`); `--deriver-cpu 1` moves the embedded deriver off the
pinned core (onto wrk's), once the server is up.

    .venv/bin/python bench/middleware_bench.py --wrk [--before /tmp/before] [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402

from middleware import Settings, TracksideMiddleware  # noqa: E402

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
PAGE = "<!doctype html><html><head><title>p</title></head><body>" + "x" * 4000 + "</body></html>"
TARGET_US = 50.0


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/api/p/{sqid}")
    async def artwork(sqid: str) -> dict[str, str]:
        return {"sqid": sqid, "title": "Sunrise"}

    @app.get("/p/{sqid}", response_class=HTMLResponse)
    async def page(sqid: str) -> str:
        return PAGE

    return app


def scopes(n: int) -> list[dict[str, Any]]:
    """`n` requests over 50 artworks, half documents, half API reads, each pair from its own visitor
    (one visitor's hundreds of requests a minute would be a flood, kept as a bot counter: cheaper)."""
    out = []
    for i in range(n):
        sqid = f"a{i % 50}"
        document = i % 2 == 0
        headers = [
            (b"host", b"example.com"),
            (b"user-agent", CHROME.encode()),
            (b"accept", b"text/html,application/xhtml+xml" if document else b"application/json"),
            (b"sec-fetch-dest", b"document" if document else b"empty"),
        ]
        path = f"/p/{sqid}" if document else f"/api/p/{sqid}"
        out.append(
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": headers,
                "client": (f"10.{i // 2 // 65536 % 256}.{i // 2 // 256 % 256}.{i // 2 % 256}", 40000),
                "server": ("127.0.0.1", 8000),
            }
        )
    return out


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


async def one_round(app: Any, requests: list[dict[str, Any]], finish: Any = None) -> float:
    """CPU seconds for `requests` through `app`, plus `finish()` (a flush) when given."""
    start = time.process_time()
    for scope in requests:
        await app(dict(scope), _receive, _send)
    if finish is not None:
        await finish()
    return time.process_time() - start


def written_through(mw: TracksideMiddleware) -> Any:
    """A round's end for `embedded`: flush, then wait (idle, no CPU) until every event is written,
    including a batch the flusher task itself was writing."""

    async def finish() -> None:
        await mw.pipeline.flusher.flush()
        counts = mw.metrics.counts
        while counts["events_written"] + counts["events_spooled"] < counts["events_captured"]:
            await asyncio.sleep(0.001)

    return finish


async def run(n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    requests = scopes(n)
    bare = create_app()

    # The request path only: the pipeline is started (schema, salts) but its flusher never wakes
    # during a round (an hour's interval, a batch larger than a round); the buffer is emptied between
    # rounds, outside the timing.
    capture_settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp}/capture.db",
        spool_dir=str(tmp / "spool-c"),
        buffer_size=10**7,
        flush_batch=10**7,
        flush_interval=3600.0,
    )
    capture = TracksideMiddleware(create_app(), settings=capture_settings)
    await capture.start()

    embedded_settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp}/embedded.db", spool_dir=str(tmp / "spool-e"), flush_interval=1.0
    )
    embedded = TracksideMiddleware(create_app(), settings=embedded_settings)
    await embedded.start()

    # Warm-up: imports, caches (user agents, labels, content matches), FastAPI's route compilation.
    for app in (bare, capture, embedded):
        await one_round(app, requests[:2000])
    capture.pipeline.buffer.take(10**9)
    await written_through(embedded)()

    timings: dict[str, list[float]] = {"bare": [], "capture": [], "embedded": []}
    for _ in range(rounds):
        timings["bare"].append(await one_round(bare, requests))
        timings["capture"].append(await one_round(capture, requests))
        capture.pipeline.buffer.take(10**9)  # outside the timing: that is the flusher's job
        timings["embedded"].append(await one_round(embedded, requests, written_through(embedded)))
    written = embedded.metrics.counts["events_written"]
    capture.pipeline.buffer.take(10**9)
    await capture.stop()
    await embedded.stop()

    per_request = {name: statistics.median(t) / n * 1e6 for name, t in timings.items()}
    result: dict[str, Any] = {
        "method": "in-process ASGI calls timed with time.process_time(), median of alternating rounds",
        "requests_per_round": n,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "cpu_us_per_request": {k: round(v, 2) for k, v in per_request.items()},
        "added_us_per_request": {
            "capture": round(per_request["capture"] - per_request["bare"], 2),
            "embedded": round(per_request["embedded"] - per_request["bare"], 2),
        },
        "events_written_by_embedded": written,
        "target_us": TARGET_US,
    }
    result["within_target"] = result["added_us_per_request"]["capture"] <= TARGET_US
    return result


# --- `--pieces`: the capture path's pieces, CPU time in process, per checkout ----------------------

# Run as `python -c PIECES N` with PYTHONPATH naming a checkout (or a compiled build): N answered API
# requests from N visitors through `Capturer` as the middleware hands them over (`answered`: the
# request path), then recorded in a batch as the flusher does (`record`), then taken from the buffer
# and packed for Redis (`wire`: `take_rows` and `pack_batch`, or `take` where there is no
# `take_rows`). Three warm rounds; prints the CPU µs a request of the last one.
PIECES = r"""
import asyncio, json, sys, time
from trackside.buffer import EventBuffer
from trackside.capture import Answer, Capturer
from trackside.metrics import Metrics
from trackside.queue import pack_batch
from trackside.settings import Settings

class Salts:
    def salt_for(self, day):
        return b"s" * 32

n = int(sys.argv[1])
ua = %r.encode()
scopes = [
    {"type": "http", "method": "GET", "path": "/api/item", "query_string": b"",
     "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", ua), (b"accept", b"application/json")],
     "client": (f"81.{i // 65536 %% 256}.{i // 256 %% 256}.{i %% 256}", 40000)}
    for i in range(n)
]
metrics = Metrics()
buffer = EventBuffer(10**7, metrics)
capturer = Capturer(Settings(), buffer, Salts(), metrics)
capturer.waiting = buffer
head = [(b"content-type", b"application/json"), (b"content-length", b"52")]
clock = time.process_time
for _ in range(3):
    started = time.time()
    t0 = clock()
    for scope in scopes:
        answer = Answer()
        answer.read_start(200, head)
        capturer.answered(scope, started, answer, 0.0001)
    t1 = clock()
    for request in buffer.take_waiting():
        capturer.record(*request)
    t2 = clock()
    if hasattr(buffer, "take_rows"):
        rows, batch = buffer.take_rows(10**9)
        asyncio.run(pack_batch(batch, rows))
    else:
        batch = buffer.take(10**9)
        rows = batch.events
        asyncio.run(pack_batch(batch))
    t3 = clock()
    assert len(rows) == n, len(rows)
print(json.dumps({"answered": (t1 - t0) / n * 1e6, "record": (t2 - t1) / n * 1e6, "wire": (t3 - t2) / n * 1e6,
                  "compiled": __import__("trackside.capture").capture.__file__.endswith(".so")}))
"""


# Run as `python -c STORING BATCHES` with PYTHONPATH naming a checkout: the embedded mode's storing
# of what `--wrk` sends (API calls of anonymous visitors, 20,000 rotating), in process on a fresh
# SQLite file: BATCHES batches of 2,500 events through `DatabaseWriter` (the writer thread's work),
# each followed by the deriver's rounds (`prepare_round` and `commit_round`, 500 visitor-days each,
# as `Deriver` takes them) until nothing is queued. CPU (process_time: the aiosqlite thread included)
# µs an event written and a visitor-day derived, medians over the batches after four warm ones.
STORING = r"""
import asyncio, hashlib, json, shutil, statistics, sys, tempfile, time
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.events import API_CALL, NAV_API, Event, new_event_id
from trackside.storage.engine import create_engine
from trackside.storage.facts import commit_round, prepare_round
from trackside.storage.migrate import migrate
from trackside.storage.writes import DatabaseWriter

SIZE, VISITORS = 2500, int(sys.argv[2])
visitors = [hashlib.md5(str(i).encode()).hexdigest() for i in range(VISITORS)]

async def main(batches):
    directory = tempfile.mkdtemp(prefix="trackside-storing-")
    url = f"sqlite+aiosqlite:///{directory}/t.db"
    await migrate(url)
    engine = create_engine(url)
    writer, derivation = DatabaseWriter(engine), Derivation()
    written, derived = [], []
    for b in range(batches):
        now = time.time()
        events = [Event(new_event_id(now), now + k * 1e-5, API_CALL, NAV_API, "GET", "/api/item", "/api/item", 200,
                        visitors[(b * SIZE + k) % VISITORS], "desktop", "Chrome", "Linux") for k in range(SIZE)]
        t0 = time.process_time()
        await writer.write(Batch(events=events))
        t1 = time.process_time()
        n = 0
        while (prepared := await prepare_round(engine, derivation, limit=500)) is not None:
            n += len((await commit_round(engine, prepared)).derived)
        t2 = time.process_time()
        if b >= 4:
            written.append((t1 - t0) / SIZE * 1e6)
            derived.append((t2 - t1) / n * 1e6)
    await engine.dispose()
    shutil.rmtree(directory)
    print(json.dumps({"write_per_event": statistics.median(written),
                      "derive_per_visitor_day": statistics.median(derived),
                      "derive_by_batch": [round(x, 1) for x in derived]}))

asyncio.run(main(int(sys.argv[1])))
"""


def run_storing(opts: argparse.Namespace) -> dict[str, Any]:
    variants: list[tuple[str, Path]] = [("current", ROOT)]
    if opts.before:
        variants.insert(0, ("before", Path(opts.before)))
    for also in opts.also:
        label, _, directory = also.partition("=")
        variants.append((label, Path(directory)))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    load = [Path("/proc/loadavg").read_text().split()[0]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
    for _ in range(opts.rounds):
        for name, root in variants:
            out = subprocess.run(
                [sys.executable, "-c", STORING, str(opts.batches), str(opts.visitors)],
                env={**env, "PYTHONPATH": str(root)},
                cwd="/",
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[name].append(json.loads(out))
        load.append(Path("/proc/loadavg").read_text().split()[0])
    pieces = ("write_per_event", "derive_per_visitor_day")
    return {
        "method": "CPU µs in process (process_time), median of batches, one fresh process and SQLite file a round",
        "batches": opts.batches,
        "rounds": opts.rounds,
        "load_average_per_round": load,
        "visitors": opts.visitors,
        "per_round": {name: [{k: round(r[k], 1) for k in pieces} for r in results] for name, results in runs.items()},
        # A visitor's rows grow by SIZE / visitors a batch: with few visitors, what a derivation costs as they do.
        "derive_by_batch_first_round": {name: results[0]["derive_by_batch"] for name, results in runs.items()},
        "variants": {
            name: {k: round(statistics.median(r[k] for r in results), 1) for k in pieces}
            for name, results in runs.items()
        },
    }


def run_pieces(opts: argparse.Namespace) -> dict[str, Any]:
    variants: list[tuple[str, Path]] = [("current", ROOT)]
    if opts.before:
        variants.insert(0, ("before", Path(opts.before)))
    for also in opts.also:
        label, _, directory = also.partition("=")
        variants.append((label, Path(directory)))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    load = [Path("/proc/loadavg").read_text().split()[0]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
    for _ in range(opts.rounds):
        for name, root in variants:
            out = subprocess.run(
                [sys.executable, "-c", PIECES % CHROME, str(opts.requests)],
                env={**env, "PYTHONPATH": str(root)},
                cwd="/",
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[name].append(json.loads(out))
        load.append(Path("/proc/loadavg").read_text().split()[0])
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            piece: round(statistics.median(r[piece] for r in results), 2) for piece in ("answered", "record", "wire")
        }
        summary[name]["total"] = round(sum(summary[name].values()), 2)
        summary[name]["compiled"] = results[0]["compiled"]
    return {
        "method": "CPU µs a request in process (process_time), median of interleaved rounds, one process each",
        "requests_per_round": opts.requests,
        "rounds": opts.rounds,
        "load_average_per_round": load,
        "variants": summary,
    }


# --- `--wrk`: one uvicorn worker pinned to a core, wrk on the other --------------------------------

# The server, written to a file and run as `python serve.py ROOT VARIANT PORT COUNTS` so that ROOT (this checkout or
# another) provides `middleware` and `trackside`. Once stopped it writes the middleware's counters.
SERVE = r"""
import json, sys
root, variant, port, counts_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, root)
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def item(request):
    return JSONResponse({"id": 1, "title": "Sunrise", "author": "u1", "likes": 42})

app = Starlette(routes=[Route("/api/item", item)])
served = app
if variant != "bare":
    from middleware import Settings, TracksideMiddleware
    mw = TracksideMiddleware(app, settings=Settings.from_env())
    served = mw
    stop = mw.stop
    async def stop_and_count():
        # After the pipeline's last flush. (Not atexit: uvicorn re-raises SIGTERM once shut down.)
        await stop()
        with open(counts_file, "w") as f:
            json.dump(dict(mw.metrics.counts), f)
        globals().get("on_stop", lambda: None)()
    mw.stop = stop_and_count
uvicorn.run(served, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
            log_level="warning", lifespan="on")
"""

WRK_LUA = """
local n = 0
local visitors = %d
local ua = "%s"
request = function()
  n = n + 1
  local headers = {["User-Agent"] = ua, ["Accept"] = "application/json"}
  if visitors > 0 then
    local i = n %% visitors
    local a, b, c = math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256
    headers["X-Forwarded-For"] = "81." .. a .. "." .. b .. "." .. c
  end
  return wrk.format("GET", "/api/item", headers)
end
"""


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the deriver process of embedded mode)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def _wrk(port: int, seconds: float, connections: int, script: Path) -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s",
         "-s", str(script), f"http://127.0.0.1:{port}/api/item"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError("wrk saw errors:\n" + out)
    return rate, done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/item", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


def _clear_queue(queue: str) -> int:
    """Deletes this run's Redis queue and its jobs; returns the events they carried."""
    import msgpack
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379)
    events = 0
    job_ids: list[bytes] = r.zrange(queue, 0, -1)  # type: ignore[assignment]
    for job_id in job_ids:
        key = b"arq:job:" + job_id
        raw = r.get(key)
        if raw is not None:
            job = msgpack.unpackb(raw, raw=False)
            payload = job["a"][0]
            batch = msgpack.unpackb(payload, raw=False) if isinstance(payload, bytes) else payload
            events += len(batch.get("rows", batch.get("events", [])))
        r.delete(key)
    r.delete(queue)
    r.close()
    return events


def serve_once(variant: str, root: Path, tmp: Path, opts: argparse.Namespace, script: Path) -> dict[str, Any]:
    """One run of one variant: start, warm up, measure, stop (SIGTERM: the pipeline flushes), count."""
    mode = variant.split(":")[-1]
    port = _free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    queue = f"trackside-mwbench:{os.getpid()}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
    env.update(
        TRACKSIDE_DATABASE_URL=f"sqlite+aiosqlite:///{run_dir}/t.db",
        TRACKSIDE_SPOOL_DIR=str(run_dir / "spool"),
    )
    env.update(item.split("=", 1) for item in opts.env)
    if mode == "redis":
        env.update(TRACKSIDE_REDIS_URL="redis://127.0.0.1:6379/0", TRACKSIDE_QUEUE_NAME=queue)
    counts_file = run_dir / "counts.json"
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(script.parent / "serve.py"), str(root), mode, str(port),
         str(counts_file)],
        env={**env, "PYTHONPATH": str(root)}, cwd=str(run_dir),
    )
    try:
        _ready(port, proc)
        if opts.deriver_cpu is not None:
            # The embedded deriver (the server's child) off the pinned core (`--deriver-cpu`).
            for pid in _tree(proc.pid)[1:]:
                os.sched_setaffinity(pid, {opts.deriver_cpu})
        _, warm = _wrk(port, opts.warmup, opts.connections, script)
        pids = _tree(proc.pid)
        cpu0 = _cpu_seconds(pids)
        server0 = _cpu_seconds(pids[:1])
        rate, done = _wrk(port, opts.duration, opts.connections, script)
        cpu = _cpu_seconds(pids) - cpu0
        server = _cpu_seconds(pids[:1]) - server0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result: dict[str, Any] = {
        "req_s": round(rate, 1),
        "cpu_us_per_req": round(cpu / done * 1e6, 1),
        # The server process alone: without the embedded deriver's CPU (its child).
        "server_cpu_us_per_req": round(server / done * 1e6, 1),
    }
    if mode != "bare":
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        if mode == "redis":
            stored = _clear_queue(queue)
        else:
            import sqlite3

            with sqlite3.connect(run_dir / "t.db") as db:
                stored = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        # wrk's warm-up and load runs, the readiness request; wrk does not count what is in flight
        # when it stops (up to one per connection per run).
        result.update(
            sent=warm + done + 1,
            stored=stored,
            captured=counts.get("events_captured"),  # None: the counters were not written
            dropped=counts.get("events_dropped", 0) if counts else None,
        )
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_wrk(opts: argparse.Namespace) -> dict[str, Any]:
    modes = [m for m in opts.variants.split(",") if m in ("redis", "embedded")]
    variants: list[tuple[str, Path]] = [("bare", ROOT)]
    if opts.before:
        variants += [(f"before:{m}", Path(opts.before)) for m in modes]
    for also in opts.also:
        label, _, directory = also.partition("=")
        variants += [(f"{label}:{m}", Path(directory)) for m in modes]
    variants += [(m, ROOT) for m in modes]
    chrome = CHROME
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    load = [Path("/proc/loadavg").read_text().split()[0]]
    with tempfile.TemporaryDirectory(prefix="trackside-mwbench-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "visitors.lua"
        script.write_text(WRK_LUA % (opts.visitors, chrome))
        (tmp / "serve.py").write_text(SERVE)
        for r in range(opts.rounds):
            for name, root in variants:
                runs[name].append(serve_once(name, root, tmp, opts, script))
                print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
            load.append(Path("/proc/loadavg").read_text().split()[0])
    bare = [x["req_s"] for x in runs["bare"]]
    bare_cpu = [x["cpu_us_per_req"] for x in runs["bare"]]
    summary = {}
    for name, results in runs.items():
        rates = [x["req_s"] for x in results]
        summary[name] = {
            "req_s": rates,
            "req_s_median": statistics.median(rates),
            "kept_of_bare": round(statistics.median(x / b for x, b in zip(rates, bare, strict=True)), 3),
            "cpu_us_per_req_median": statistics.median(x["cpu_us_per_req"] for x in results),
            # The share kept if the pinned core were the only limit: bare's CPU a request over this
            # variant's, round by round. Steadier than req/s when other work shares the core.
            "cpu_kept_of_bare": round(
                statistics.median(b / x["cpu_us_per_req"] for x, b in zip(results, bare_cpu, strict=True)), 3
            ),
            # The same without the embedded deriver's CPU (the server process alone).
            "server_cpu_us_per_req_median": statistics.median(x["server_cpu_us_per_req"] for x in results),
            "server_cpu_kept_of_bare": round(
                statistics.median(b / x["server_cpu_us_per_req"] for x, b in zip(results, bare_cpu, strict=True)), 3
            ),
        }
        if name != "bare":
            summary[name]["stored_of_sent"] = [f"{x['stored']}/{x['sent']}" for x in results]
            summary[name]["dropped"] = [x["dropped"] for x in results]
    return {
        "method": "uvicorn, one worker pinned to CPU 0; wrk -t1 on CPU 1; interleaved rounds",
        "duration_s": opts.duration,
        "connections": opts.connections,
        "visitors": opts.visitors,
        "settings": opts.env,
        "rounds": opts.rounds,
        "before": opts.before,
        "also": opts.also,
        "deriver_cpu": opts.deriver_cpu,
        "load_average_per_round": load,
        "variants": summary,
        "goals": {"redis": 0.80, "embedded": 0.75},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (default 7)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--wrk", action="store_true", help="throughput on uvicorn with wrk (see above)")
    parser.add_argument("--pieces", action="store_true", help="the capture path's pieces in process (see above)")
    parser.add_argument("--storing", action="store_true", help="embedded storing in process (see above)")
    parser.add_argument("--batches", type=int, default=16, help="--storing: batches a round (default 16)")
    parser.add_argument("--before", help="--wrk: another checkout whose middleware runs too, in the same rounds")
    parser.add_argument("--duration", type=float, default=8.0, help="--wrk: seconds of each measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="--wrk: seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=64, help="--wrk: connections")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="--wrk: a setting for every middleware variant (TRACKSIDE_DERIVER=off), repeatable")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=DIR",
                        help="--wrk: another checkout (or a compiled build's directory) run as LABEL, repeatable")
    parser.add_argument("--deriver-cpu", type=int, default=None, metavar="CPU",
                        help="--wrk: move the server's child processes (the embedded deriver) to this CPU")
    parser.add_argument("--variants", default="bare,redis,embedded", help="--wrk: which variants (bare always runs)")
    parser.add_argument("--visitors", type=int, default=20_000, help="--wrk, --storing: rotating visitors")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.storing:
        result = run_storing(args)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.pieces:
        result = run_pieces(args)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.wrk:
        if args.rounds == 7 and "--rounds" not in sys.argv:
            args.rounds = 3
        result = run_wrk(args)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="trackside-mwbench-") as tmp:
        result = asyncio.run(run(args.requests, args.rounds, Path(tmp)))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
