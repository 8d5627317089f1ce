"""A task cancelled inside a SQLite write transaction leaves the database writable.

Found in CI: a worker's deriver stopped while its write ran, and every writer after it (the burst
worker's last derivation, a stats read's catch-up) waited its busy timeout of 30 s and failed with
"database is locked"; the facts it should have written were not there when the test read them. The
cancelled task's connection was closed while its statement's cursor was still alive, which in
SQLite only makes the connection a zombie that keeps its transaction until the garbage collector
finalizes the statement."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from trackside.storage.engine import create_engine, writing

# A statement that runs for a while in the connection's thread (about a second here), one row at the end.
NUMBERS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000000) "
SLOW_COUNT = NUMBERS + "SELECT count(*) FROM c"
SLOW_INSERT = "INSERT INTO t " + NUMBERS + "SELECT n FROM c"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("statement", [SLOW_COUNT, SLOW_INSERT], ids=["reading", "writing"])
async def test_a_writer_cancelled_mid_statement_rolls_back_and_frees_the_lock(tmp_path: Path, statement: str):
    url = f"sqlite+aiosqlite:///{tmp_path}/cancelled.db"
    setup = create_engine(url)
    async with writing(setup) as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    await setup.dispose()

    engine = create_engine(url)
    began = asyncio.Event()

    async def hold() -> None:
        async with writing(engine) as conn:
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            began.set()
            await conn.exec_driver_sql(statement)

    task = asyncio.create_task(hold())
    await began.wait()
    await asyncio.sleep(0.05)  # the slow statement is running in the connection's thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    other = create_engine(url)
    try:
        started = time.monotonic()
        async with writing(other) as conn:
            # The cancelled transaction is gone whole: neither its row nor the slow insert's.
            assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 0
            await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        # The lock came once the slow statement ended (about a second), not after the busy timeout (30 s).
        assert time.monotonic() - started < 15
        # And the first engine's pool hands out a usable connection (not one still in a transaction).
        async with writing(engine) as conn:
            await conn.exec_driver_sql("INSERT INTO t VALUES (3)")
        async with engine.connect() as conn:
            assert [r[0] for r in await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")] == [2, 3]
    finally:
        await other.dispose()
        await engine.dispose()
