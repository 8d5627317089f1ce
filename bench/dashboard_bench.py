"""The dashboard opened cold in headless Chromium over a month of data: the time until every panel is filled,
on the embedded default (SQLite) and on PostgreSQL. Records timings; asserts no threshold.

Run from the repository root (needs node, /usr/bin/chromium and the e2e site's `npm ci` for playwright-core:
`tests/e2e/nextsite/build.sh`):

    .venv/bin/python bench/dashboard_bench.py                          # both backends, 30 days of 30,000 events
    .venv/bin/python bench/dashboard_bench.py --backends sqlite --events-per-day 100000 --runs 5

Data: `bench/facts_bench.py`'s seeding (`seed_reads`): `--days` rolled days of `--events-per-day` events of
`bench/realistic_day.py` (`SiteTraffic.day`: about 30% page views, the rest the API calls, impressions and errors
of the same visits), each stored, marked and rolled up by `trackside.rollup.rollup_day` (which derives the day's
visitor-days into facts first); today's `--events-today` events up to two minutes ago, derived by
`trackside.storage.facts.derive_marked`; raw events older than 7 days pruned. The counts of what was stored
(page views per day, visitors, fact rows) are printed with the results.

Each run: a fresh sidecar (`tests.servers.run_sidecar`, the options of `trackside serve`; its answer caches empty)
and a fresh Chromium profile (nothing cached), `bench/dashboard_bench.mjs` opens `/_trackside/#token=<moderator>`
(the default view: the last 30 days) at 1280x800 and times, from the navigation's start, when each panel is
filled (rows, a chart, an explicit empty state or error; a self-loading panel's `data-*-state` no longer
`loading`) and when each request answered. Then each request of the first load is asked again alone, one after
the other, through a fresh sidecar (what it costs without the others beside it). The database is not restarted
between runs: run 1 has PostgreSQL's buffers as the seeding left them, later runs warmer. `--sqlite-file` and
`--postgres-url` keep a seeded database to measure again without seeding.

Prints Markdown tables, writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import derive_bench as dbench  # bench/ is sys.path[0]
import facts_bench as fb
import pipeline_bench as plb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import jwt  # noqa: E402

SCRIPT = REPO / "bench" / "dashboard_bench.mjs"
log = dbench.log


def moderator_token() -> str:
    claims = {"sub": "bench-dashboard", "exp": int(time.time()) + 7200, "roles": ["user", "moderator"]}
    return jwt.encode(claims, fb.SECRET, algorithm="HS256")


async def one_load(url: str, chromium: str, timeout: float = 300.0) -> dict[str, Any]:
    """node dashboard_bench.mjs in its own process group (ended by id); its JSON."""
    from tests.e2e.helpers import run_browser_script

    environ = dict(DASHBOARD_URL=url, TOKEN=moderator_token(), CHROMIUM=chromium,
                   BENCH_TIMEOUT_MS=str(int(timeout * 1000) - 5000))  # fmt: skip
    result: dict[str, Any] = await run_browser_script(shutil.which("node") or "node", SCRIPT, environ, timeout)
    return result


async def seeded(url: str) -> bool:
    try:
        return await fb.count(url, "SELECT COUNT(*) FROM fact_page_views") > 0
    except Exception:  # noqa: BLE001 - no tables yet
        return False


async def dataset(url: str) -> dict[str, Any]:
    days = "SELECT COUNT(DISTINCT day) FROM fact_page_views"
    return {
        "fact_page_views": await fb.count(url, "SELECT COUNT(*) FROM fact_page_views"),
        "fact_visits": await fb.count(url, "SELECT COUNT(*) FROM fact_visits"),
        "fact_looks": await fb.count(url, "SELECT COUNT(*) FROM fact_looks"),
        "fact_days": await fb.count(url, days),
        "raw_events_kept": await fb.count(url, "SELECT COUNT(*) FROM events"),
    }


async def measure(
    url: str, tmp: Path, runs: int, chromium: str, settle: float = 0.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`runs` cold loads in Chromium; then each request of the first load again alone, one after the other,
    through a fresh sidecar (what each costs without the others beside it). `settle`: seconds each fresh
    sidecar runs before the page is opened (its startup rollup and prune done by then), 0 at once."""
    import httpx

    from tests.servers import run_server, run_sidecar
    from tests.upstream_app import app as upstream_asgi

    loads = []
    alone: list[dict[str, Any]] = []
    async with run_server(upstream_asgi) as upstream:
        settings = fb.settings_for(url, upstream, str(tmp / "spool"))
        for n in range(runs):
            async with run_sidecar(settings) as (base, _app):
                await asyncio.sleep(settle)
                got = await one_load(base + "/_trackside/", chromium)
            errors = sorted({f"{r['what']}: {r['status']}" for r in got["requests"] if r["status"] != 200})
            log(f"  run {n + 1}: every panel filled at {got['all_filled_ms']} ms (timed out: "
                f"{got['timed_out_ms']}, unfilled: {got['unfilled']}); refused: {errors or 'none'}")  # fmt: skip
            loads.append(got)
        auth = {"authorization": f"Bearer {moderator_token()}"}
        async with run_sidecar(settings) as (base, _app), httpx.AsyncClient(base_url=base, timeout=300) as client:
            await asyncio.sleep(settle)
            for r in loads[0]["requests"]:
                # The page's fetches are relative to /_trackside/ (or absolute URLs).
                path = "/_trackside/" + (
                    r["url"].split("/_trackside/", 1)[1] if "/_trackside/" in r["url"] else r["url"]
                )
                t = time.perf_counter()
                if r["body"]:
                    answer = await client.post(
                        path, content=r["body"], headers={**auth, "content-type": "application/json"}
                    )
                else:
                    answer = await client.get(path, headers=auth)
                ms = round((time.perf_counter() - t) * 1000)
                alone.append({"what": r["what"], "ms": ms, "status": answer.status_code})
                log(f"  alone: {r['what']}: {ms} ms ({answer.status_code})")
    return loads, alone


def summary(loads: list[dict[str, Any]]) -> dict[str, Any]:
    panels = sorted({p for load in loads for p in load["panels"]}, key=lambda p: loads[0]["panels"].get(p) or 0)
    whats = sorted({r["what"] for load in loads for r in load["requests"]})

    def med(values: list[float | None]) -> float | None:
        have = [v for v in values if v is not None]
        return round(statistics.median(have)) if have else None

    def request(w: str) -> dict[str, Any]:
        return {
            "run1": next((r["end_ms"] for r in loads[0]["requests"] if r["what"] == w), None),
            "median": med([r["end_ms"] for x in loads for r in x["requests"] if r["what"] == w]),
            "refused": sum(1 for x in loads for r in x["requests"] if r["what"] == w and r["status"] != 200),
        }

    return {
        # None: not every panel was filled before the load's time ran out (`timed_out_ms`).
        "all_filled_ms": {
            "run1": loads[0]["all_filled_ms"],
            "median": med([x["all_filled_ms"] for x in loads]),
            "timed_out": sum(1 for x in loads if x["all_filled_ms"] is None),
        },
        "panels": {
            p: {"run1": loads[0]["panels"].get(p), "median": med([x["panels"].get(p) for x in loads])} for p in panels
        },  # fmt: skip
        "requests": {w: request(w) for w in whats},
    }


def cell(s: dict[str, Any] | None) -> str:
    return "" if s is None else f"{s['median']} ({s['run1']})"


def markdown(result: dict[str, Any]) -> str:
    backends = result["backends"]
    cfg = result["config"]
    names = " | ".join(b["backend"] for b in backends)
    lines = [f"Dataset: {cfg['days']} rolled days of {cfg['events_per_day']:,} events and today "
             f"{cfg['events_today']:,}; {cfg['runs']} cold loads each: median (run 1).", ""]  # fmt: skip
    for b in backends:
        d = b["dataset"]
        lines.append(f"- {b['backend']}: {d['fact_page_views']:,} page-view facts over {d['fact_days']} days, "
                     f"{d['fact_visits']:,} visits, {d['fact_looks']:,} looks")  # fmt: skip
    lines += ["", f"| filled at (ms) | {names} |", "|---|" + "---:|" * len(backends)]
    lines.append("| **every panel** | " + " | ".join(cell(b["summary"]["all_filled_ms"]) for b in backends) + " |")
    panels = list(backends[0]["summary"]["panels"])
    for p in panels:
        lines.append(f"| {p} | " + " | ".join(cell(b["summary"]["panels"].get(p)) for b in backends) + " |")
    lines += ["", f"| request: answered at (ms), median (run 1); refused; alone (ms) | {names} |",
              "|---|" + "---:|" * len(backends)]  # fmt: skip
    whats = sorted({w for b in backends for w in b["summary"]["requests"]})
    for w in whats:
        cells = []
        for b in backends:
            s = b["summary"]["requests"].get(w)
            alone = next((a for a in b.get("alone", []) if a["what"] == w), None)
            shown = "-" if alone is None else alone["ms"] if alone["status"] == 200 else f"{alone['status']}"
            cells.append("" if s is None else f"{cell(s)}; {s['refused']}; {shown}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    signal.signal(signal.SIGTERM, dbench._interrupted)
    signal.signal(signal.SIGINT, dbench._interrupted)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--days", type=int, default=30, help="rolled days before today")
    p.add_argument("--events-per-day", type=int, default=30_000)
    p.add_argument("--events-today", type=int, default=30_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds a fresh sidecar runs before the page opens (its startup rollup and prune done)",
    )
    p.add_argument("--sqlite-file", help="keep the SQLite database here (seeded once; reused when it has facts)")
    p.add_argument("--postgres-url", help="an existing PostgreSQL database to seed once and reuse (never dropped)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "dashboard.json"))
    p.add_argument(
        "--seed-only", action="store_true", help="seed the kept databases (--sqlite-file, --postgres-url) only"
    )
    args = p.parse_args()
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if shutil.which("node") is None or not os.access(chromium, os.X_OK):
        print("needs node and chromium (/usr/bin/chromium or $CHROMIUM)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="trackside-dashboard-bench-"))
    (tmp / "spool").mkdir()
    dbs = plb.Databases(tmp)
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "config": vars(args),
                              "git": dbench.git_state(), "backends": []}  # fmt: skip
    try:
        for backend in args.backends.split(","):
            kept = args.sqlite_file if backend == "sqlite" else args.postgres_url
            if kept and backend == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(kept).resolve()}"
            else:
                url = kept or dbs.new(backend, f"dashboard-{backend}")
            log(f"=== {backend}: {args.days} days of {args.events_per_day:,} events, today {args.events_today:,}")
            seed_args = argparse.Namespace(days=args.days, rolled_events_per_day=args.events_per_day,
                                           events_today=args.events_today)  # fmt: skip
            report: dict[str, Any] = {"backend": backend}
            t = time.monotonic()
            if kept and asyncio.run(seeded(url)):
                log("  reusing the seeded database")
            else:
                asyncio.run(fb.seed_reads(url, seed_args, report))
            report["seed_s"] = round(time.monotonic() - t)
            report["dataset"] = asyncio.run(dataset(url))
            log(f"  dataset: {report['dataset']}")
            if args.seed_only:
                continue
            report["loads"], report["alone"] = asyncio.run(measure(url, tmp, args.runs, chromium, args.settle))
            report["summary"] = summary(report["loads"])
            result["backends"].append(report)
    finally:
        dbs.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        result["load_avg_end"] = os.getloadavg()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        if result["backends"]:
            print(markdown(result))
        log(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
