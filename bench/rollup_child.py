"""One rollup of a closed day, or its funnel encoding alone, in this process (`bench/facts_bench.py` runs
it as a child for its own peak RSS; with the working directory and PYTHONPATH at another checkout, that
checkout's code): prints one JSON line, its seconds and, when the rollup logs them, each piece's.

    python bench/rollup_child.py rollup URL YYYY-MM-DD
    python bench/rollup_child.py encode URL YYYY-MM-DD
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
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


async def run(mode: str, url: str, day: date) -> dict[str, object]:
    from trackside.storage.engine import create_engine

    engine = create_engine(url)
    pieces = Pieces()
    logger = logging.getLogger("trackside.rollup")
    logger.addHandler(pieces)
    logger.setLevel(logging.INFO)
    try:
        t = time.perf_counter()
        c = time.process_time()
        if mode == "rollup":
            from trackside.rollup import rollup_day

            await rollup_day(engine, day, 1800.0, force=True)
            out: dict[str, object] = {"pieces": pieces.found}
        else:
            from trackside.storage.funnel_days import record_funnel_day

            async with engine.begin() as conn:
                out = {"rows": await record_funnel_day(conn, day)}
        out.update(seconds=round(time.perf_counter() - t, 2), cpu_s=round(time.process_time() - c, 2))
        if engine.dialect.name == "postgresql":
            out.update(await backend_memory(engine))
        return out
    finally:
        await engine.dispose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3])))))
