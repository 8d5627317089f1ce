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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
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
    result = {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (default 7)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="trackside-mwbench-") as tmp:
        result = asyncio.run(run(args.requests, args.rounds, Path(tmp)))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
