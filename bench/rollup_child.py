"""One rollup of a closed day, or its funnel encoding alone, in this process (`bench/facts_bench.py` runs
it as a child for its own peak RSS; with the working directory and PYTHONPATH at another checkout, that
checkout's code): prints one JSON line, its seconds and, when the rollup logs them, each piece's.

    python bench/rollup_child.py rollup URL YYYY-MM-DD     # forced: `trackside rollup --day D --force`
    python bench/rollup_child.py reroll URL YYYY-MM-DD [N]  # the day made dirty, N visitor-days marked again
    python bench/rollup_child.py first URL YYYY-MM-DD     # `rollup_day` as it finds the day
    python bench/rollup_child.py encode URL YYYY-MM-DD

`reroll` is a rolled day rolled again after late events: before the timed part it marks the day dirty
and marks again its first N visitor-days (1,000 unless given; as late events stored and not derived yet
leave them), which the rollup derives in its transaction; then `rollup_day` without `force`. `first` is
`rollup_day` without `force` on the day as it is: `facts_bench.py --modes first` deletes the day's output
rows and marks it never rolled before (`forget_rollup`), so the child times a first rollup again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from datetime import date
from typing import Any


class Pieces(logging.Handler):
    """The rollup's own log line: 'rolled up D: N events in S s (piece X s, ...)'."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("rolled up"):
            self.found = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", message.partition("(")[2])}


async def backend_memory(engine: Any) -> dict[str, object]:
    """The PostgreSQL backend's peak RSS (VmHWM, MB; it counts the shared buffers it touched, up to
    `shared_buffers`) and its shared memory now: the one connection the rollup ran on (the pool's only
    one, the work done one statement at a time). Same machine only: read from /proc."""
    async with engine.connect() as conn:
        pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    found: dict[str, object] = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            name, _, value = line.partition(":")
            if name in ("VmHWM", "RssShmem"):
                found[f"backend_{name}_mb"] = round(int(value.split()[0]) / 1024)
    except OSError:
        pass
    return found


class PrivatePeak(threading.Thread):
    """The backend's own memory at its highest (RssAnon, sampled every 50 ms): what its statements
    took, without the shared buffers VmHWM also counts (shared with every other backend); and its PSS
    at its highest (`pss_peak`): its own pages plus its share of each shared page (the shared buffers
    split between the processes that touched them), the measure issue 16's memory goal uses.

    `database`: the same for every other backend of that database too (`others_*`), found by their
    process titles once a second: the second connection a rollup uses for its pieces apart."""

    def __init__(self, pid: int, database: str = "") -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.database = (" " + database + " ").encode() if database else b""
        self.others: list[int] = []
        self.peak = self.pss_peak = self.others_peak = self.others_pss_peak = self.others_hwm = 0
        self.stop = threading.Event()

    def _read(self, pid: int) -> tuple[int, int]:
        anon = pss = 0
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("VmHWM:") and pid != self.pid:
                self.others_hwm = max(self.others_hwm, int(line.split()[1]))
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
        return anon, pss

    def _find_others(self) -> None:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        title = f.read()
                except OSError:
                    continue
                if title.startswith(b"postgres: ") and self.database in title:
                    found.append(int(entry))
        self.others = found

    def run(self) -> None:
        ticks = 0
        while not self.stop.is_set():
            if self.database and ticks % 20 == 0:
                self._find_others()
            ticks += 1
            try:
                anon, pss = self._read(self.pid)
            except OSError:
                return
            self.peak, self.pss_peak = max(self.peak, anon), max(self.pss_peak, pss)
            for pid in self.others:
                try:
                    anon, pss = self._read(pid)
                except OSError:
                    continue
                self.others_peak, self.others_pss_peak = max(self.others_peak, anon), max(self.others_pss_peak, pss)
            self.stop.wait(0.05)


async def daily_digest(engine: Any, day: date) -> str:
    """One md5 of the day's daily rows (site, site dims, content, content dims; every column but the
    sketches of signed-in users, whose bytes follow the order the users are streamed in, which the
    plan decides), after the rollup: two rollups of the same day must give the same. PostgreSQL."""
    parts = []
    async with engine.connect() as conn:
        for table in ("daily_site", "daily_site_dims", "daily_content", "daily_content_dims"):
            parts.append(
                (
                    await conn.exec_driver_sql(
                        "SELECT md5(COALESCE(string_agg(r, '|' ORDER BY r), '')) FROM (SELECT "
                        f"(to_jsonb(t) - 'users_sketch')::text AS r FROM {table} AS t WHERE day = $1) AS d",  # noqa: S608
                        (day,),
                    )
                ).scalar_one()
            )
    return hashlib.md5("".join(parts).encode()).hexdigest()[:12]  # noqa: S324


async def make_dirty(engine: Any, day: date, remark: int) -> int:
    """The day dirty, and its first `remark` visitor-days (by visitor) marked again, whole: what late
    events stored and not derived yet leave. Returns the visitor-days marked."""
    async with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        marked = await conn.exec_driver_sql(
            "INSERT INTO derive_marks (day, visitor, marked_at) SELECT day, visitor, "
            + ("now() AT TIME ZONE 'utc' " if postgres else "CURRENT_TIMESTAMP ")
            + "FROM (SELECT DISTINCT day, visitor FROM fact_visits WHERE day = "
            + ("$1" if postgres else "?")
            + " ORDER BY visitor LIMIT "
            + str(int(remark))
            + ") AS v WHERE true ON CONFLICT DO NOTHING",  # (SQLite: a WHERE before its upsert clause)
            (day if postgres else day.isoformat(),),
        )
        await conn.exec_driver_sql(
            "UPDATE rollup_days SET dirty = true WHERE day = " + ("$1" if postgres else "?"),
            (day if postgres else day.isoformat(),),
        )
        return max(marked.rowcount, 0)


async def run(mode: str, url: str, day: date, remark: int = 1000) -> dict[str, object]:
    from trackside.storage.engine import create_engine

    engine = create_engine(url)
    pieces = Pieces()
    logger = logging.getLogger("trackside.rollup")
    logger.addHandler(pieces)
    logger.setLevel(logging.INFO)
    try:
        marked = await make_dirty(engine, day, remark) if mode == "reroll" else None
        sampler = None
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:  # the pool's one connection, which the rollup runs on next
                pid, database = (await conn.exec_driver_sql("SELECT pg_backend_pid(), current_database()")).one()
                sampler = PrivatePeak(pid, database)
            sampler.start()
        t = time.perf_counter()
        c = time.process_time()
        if mode in ("rollup", "reroll", "first"):
            from trackside.rollup import rollup_day

            result = await rollup_day(engine, day, 1800.0, force=mode == "rollup")
            out: dict[str, object] = {"pieces": pieces.found, "skipped": result.skipped}
            if marked is not None:
                out["remarked"] = marked
        else:
            from trackside.storage.funnel_days import record_funnel_day

            async with engine.begin() as conn:
                out = {"rows": await record_funnel_day(conn, day)}
        out.update(seconds=round(time.perf_counter() - t, 2), cpu_s=round(time.process_time() - c, 2))
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
            out["backend_private_peak_mb"] = round(sampler.peak / 1024)
            out["backend_pss_peak_mb"] = round(sampler.pss_peak / 1024)
            out["other_backends_private_peak_mb"] = round(sampler.others_peak / 1024)
            out["other_backends_pss_peak_mb"] = round(sampler.others_pss_peak / 1024)
            out["other_backends_VmHWM_mb"] = round(sampler.others_hwm / 1024)
        if engine.dialect.name == "postgresql":
            out.update(await backend_memory(engine))
            if mode in ("rollup", "reroll", "first"):
                out["daily_md5"] = await daily_digest(engine, day)
        return out
    finally:
        await engine.dispose()


if __name__ == "__main__":
    extra = [int(sys.argv[4])] if len(sys.argv) > 4 else []
    print(json.dumps(asyncio.run(run(sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3]), *extra))))
