"""Metrics of a real `trackside serve --workers 2`: whichever worker answers a scrape, it shows the
whole sidecar, exactly, and no counter ever goes back; and the counter files themselves."""

from __future__ import annotations

import asyncio
import glob
import os
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.servers import free_port
from trackside.metric_files import CountFile, read_dir, read_file
from trackside.metrics import Metrics

N = 240
_REQUESTS = re.compile(r"^trackside_requests_total ([0-9.e+]+)$", re.M)


def start(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


async def scrape(url: str) -> str:
    # A new connection each time: the kernel hands it to either worker.
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/_trackside/metrics", headers={"accept": "text/plain;version=0.0.4"})
    assert r.status_code == 200
    return r.text


def requests_total(text: str) -> int:
    found = _REQUESTS.search(text)
    assert found, text
    return int(float(found.group(1)))


async def test_one_scrape_shows_every_worker_and_never_goes_back(upstream_url, tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),  # the run's counter directory goes here
        "TRACKSIDE_FRONTEND_URL": upstream_url,
        "TRACKSIDE_API_URL": upstream_url,
        "TRACKSIDE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
        "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACKSIDE_LOG_LEVEL": "warning",
    }
    # A directory left by a killed earlier run (its pid is gone): removed at start.
    stale = tmp_path / "trackside-metrics-999999999-x"
    stale.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(env, port)
    try:
        assert not stale.exists()
        seen: list[int] = []
        sent = 0
        deadline = time.monotonic() + 60
        while sent < N and time.monotonic() < deadline:
            # Each request on its own connection, in small parallel rounds, with scrapes between.
            async def one(i: int) -> int:
                async with httpx.AsyncClient() as c:
                    path = f"/api/x{i}?status=404" if i % 4 == 0 else f"/p/x{i}"
                    return (await c.get(url + path)).status_code

            statuses = await asyncio.gather(*(one(sent + k) for k in range(8)))
            assert sorted(set(statuses)) == [200, 404]
            sent += 8
            seen.append(requests_total(await scrape(url)))
        assert sent == N
        finals = [await scrape(url) for _ in range(10)]
        seen += [requests_total(t) for t in finals]
        # Never backwards, and every scrape after the last request says exactly N.
        assert seen == sorted(seen), seen
        assert seen[-10:] == [N] * 10
        # Both workers served requests (else this proves nothing): their files in the run's directory.
        (run_dir,) = glob.glob(str(tmp_path / "trackside-metrics-*"))
        per_process = [values.get("requests", 0) for _, values in read_dir(run_dir)]
        assert len(per_process) == 2 and min(per_process) > 0 and sum(per_process) == N, per_process
        # Labels: by route prefix, upstream and status class; latency per route.
        lines = set(finals[-1].splitlines())
        api = f'route="/api",status="4xx",upstream="{upstream_url}"'
        assert f"trackside_upstream_responses_total{{{api}}} {N // 4}.0" in lines
        front = f'route="/",status="2xx",upstream="{upstream_url}"'
        assert f"trackside_upstream_responses_total{{{front}}} {N - N // 4}.0" in lines
        assert f'trackside_upstream_seconds_count{{route="/api",upstream="{upstream_url}"}} {N // 4}.0' in lines
        assert f'trackside_upstream_seconds_count{{route="/",upstream="{upstream_url}"}} {N - N // 4}.0' in lines
        # JSON too: the whole sidecar.
        async with httpx.AsyncClient() as c:
            assert (await c.get(url + "/_trackside/metrics")).json()["requests"] == N
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) in (0, -signal.SIGINT)
        assert glob.glob(str(tmp_path / "trackside-metrics-*")) == []  # a clean stop leaves nothing
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_counter_files_survive_growth_and_the_end_of_their_process(tmp_path):
    directory = str(tmp_path)
    metrics = Metrics(directory)
    for i in range(3000):  # far past the first 16 KiB: the file grows under the map
        metrics.inc(f"skipped_reason_{i % 700}")
    metrics.inc("requests", 5)
    metrics.observe_upstream(0.003, "/api", "http://api:8000", 201)
    metrics.observe_upstream(20.0, "/api", "http://api:8000", 503)
    # Another process's file, ended: its counts stay in the total.
    ended = CountFile(directory)
    ended.set("requests", 7)
    ended.close()
    totals = metrics.totals()
    assert totals.counts["requests"] == 12
    assert sum(v for k, v in totals.counts.items() if k.startswith("skipped_")) == 3000
    assert totals.responses == {("/api", "http://api:8000", "2xx"): 1, ("/api", "http://api:8000", "5xx"): 1}
    buckets, total, count = totals.latency[("/api", "http://api:8000")].cumulative()
    assert (count, total) == (2, 20.003)
    assert buckets[2] == ("0.005", 1.0) and buckets[-2] == ("10.0", 1.0) and buckets[-1] == ("+Inf", 2.0)
    files = sorted(os.path.join(directory, name) for name in os.listdir(directory))
    assert sorted(read_file(path)["requests"] for path in files) == [5, 7]
    assert sorted(values["requests"] for _, values in read_dir(directory)) == [5, 7]


def test_levels_add_up_over_the_live_server_processes(tmp_path):
    # Another server process of the run, as a real process: it writes its levels into its own
    # counter file and stays up until told to stop.
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from trackside.metrics import Metrics\n"
            "m = Metrics(sys.argv[1])\n"
            "m.set_gauges({'events_buffered': 40.0, 'spooled_batches': 2.0})\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"ready\n"
        ours = Metrics(str(tmp_path))
        assert ours.shared_gauges({"events_buffered": 3.0, "spooled_batches": 0.0}) == {
            "events_buffered": 43.0,
            "spooled_batches": 2.0,
        }
    finally:
        other.kill()
        other.wait()
    # An ended process's levels are not the sidecar's any more (its counters still are).
    assert ours.shared_gauges({"events_buffered": 5.0, "spooled_batches": 1.0}) == {
        "events_buffered": 5.0,
        "spooled_batches": 1.0,
    }
