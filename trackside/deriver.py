"""The deriver: visitor-days queued by ingest (`derive_marks`) become fact rows here, a moment
after their events are stored, off the ingest path.

Storing a batch only queues the visitor-days it touched; a round takes the oldest queued ones,
reads and derives them, and writes their facts (`trackside.storage.facts.derive_round`). While the
deriver is busy, batches keep queueing, and a visitor-day marked by ten batches is derived once:
the busier the site, the more events each derivation covers. A visitor-day that reads many raw
rows (a visitor active for hours without a pause, a script) is then left to cool for a while,
so that one such visitor cannot take the deriver from everyone else; its figures lag by that much.

Where it runs: in `trackside worker` (Redis mode), as a task beside the jobs; in embedded mode, in
a child process of the sidecar (or of the app using the middleware) at a lower CPU priority, so
the proxy's requests come first. One deriver per database works (PostgreSQL: an advisory lock;
SQLite: a file lock beside the database); any other waits to take over: two would only do the same
rounds twice."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import IO, Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.derive import Derivation
from trackside.storage.facts import Round, VisitorDay, commit_round, derive_marked, prepare_round

logger = logging.getLogger("trackside.deriver")

# A round takes at most this many visitor-days: its writing transaction (the only part that
# holds a lock) stays short.
ROUND = 500
# With nothing queued, the queue is looked at again after this long: figures lag by about this.
IDLE_SECONDS = 0.5
# A visitor-day that read more raw rows than this waits before its next derivation: about ten
# times what deriving it took (30 us a row), at most a minute.
HEAVY_ROWS = 2000
COOL_SECONDS_PER_ROW = 0.0003
COOL_MAX_SECONDS = 60.0
# The database away: rounds are tried again after this long.
RETRY_SECONDS = 2.0
# At a clean stop, what is still queued gets this long to be derived (the parent waits longer).
FINISH_SECONDS = 20.0


class Deriver:
    def __init__(self, engine: AsyncEngine, derivation: Derivation) -> None:
        self.engine = engine
        self.derivation = derivation
        self.cooling: dict[VisitorDay, float] = {}
        self.derived = 0
        self.leading = False
        self._failing = False
        # The previous round's facts being written while the next round reads (`step`).
        self._writing: asyncio.Task[Round] | None = None
        self._writing_keys: frozenset[VisitorDay] = frozenset()

    async def round(self) -> bool:
        """One round, written before it returns; True when it may have left work (derive again at once)."""
        busy = await self.step()
        return await self.flush() or busy

    async def step(self) -> bool:
        """The next round read and derived while the previous one's facts are still being written:
        one connection reads while another writes, so the database's work and this process's
        derivation overlap (two cores: about one each). Then that previous write is awaited and
        this round's begun, in the background. True when there may be more work."""
        now = time.monotonic()
        self.cooling = {k: until for k, until in self.cooling.items() if until > now}
        prepared = await prepare_round(
            self.engine, self.derivation, limit=ROUND, skip=self.cooling.keys() | self._writing_keys
        )
        busy = await self.flush()
        if prepared is None:
            return busy
        for key, rows in prepared.rows.items():
            if rows > HEAVY_ROWS:
                self.cooling[key] = now + min(COOL_MAX_SECONDS, rows * COOL_SECONDS_PER_ROW)
        self._writing = asyncio.create_task(commit_round(self.engine, prepared))
        self._writing_keys = frozenset(prepared.versions)
        return True

    async def flush(self) -> bool:
        """Wait for the round being written (if any); True when it may have left work."""
        task, self._writing = self._writing, None
        self._writing_keys = frozenset()
        if task is None:
            return False
        result = await task
        self.derived += len(result.derived)
        if result.superseded and not result.derived:
            # Someone else (a read, a burst worker's last rounds) is on the same marks: a random
            # pause breaks the lockstep in which each rewinds what the other read.
            await asyncio.sleep(random.uniform(0.02, 0.3))
        return result.full or result.superseded > 0

    async def run(self) -> None:
        """Rounds for as long as it runs, once it leads (one deriver per database works; the
        others wait to take over: two would do the same rounds twice)."""
        async with lead(self.engine):
            self.leading = True
            try:
                await self._rounds()
            finally:
                self.leading = False
                await self._drop_writing()

    async def _drop_writing(self, *, cancel: bool = True) -> None:
        # Stopped: a write under way is cancelled (its transaction rolls back, its marks stay).
        # Failed: the write is left to end by itself; it does not depend on the read that failed.
        task, self._writing = self._writing, None
        self._writing_keys = frozenset()
        if cancel and task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(BaseException):
                await task

    async def _rounds(self) -> None:
        while True:
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database away (or a bug): the marks stay, nothing is lost; try again.
                await self._drop_writing(cancel=False)
                if not self._failing:
                    logger.warning("deriving facts failed (%s: %s); retrying", type(exc).__name__, exc)
                    self._failing = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._failing:
                logger.info("deriving facts again")
                self._failing = False
            await asyncio.sleep(0 if busy else IDLE_SECONDS)


# The PostgreSQL advisory lock (session level) the working deriver holds.
LEADER_KEY = 0x7472_6163_6B64  # "trackd"
LEADER_POLL_SECONDS = 2.0


async def _close(conn: AsyncConnection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(conn.close())


@contextlib.asynccontextmanager
async def lead(engine: AsyncEngine) -> AsyncIterator[None]:
    """Wait until this deriver is the one for its database: a session advisory lock on
    PostgreSQL (held by a connection kept open; released when it closes, or when the process
    dies), a file lock beside the SQLite file."""
    if engine.dialect.name == "postgresql":
        while True:
            conn = None
            try:
                conn = await engine.connect()
                while not (await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LEADER_KEY})")).scalar():
                    await conn.commit()
                    await asyncio.sleep(LEADER_POLL_SECONDS)
                await conn.commit()  # not idle in a transaction while it leads
                break
            except (OSError, DBAPIError) as exc:
                await _close(conn)
                logger.warning("deriver: the database is away (%s); waiting", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            except BaseException:
                # Stopped while waiting to lead: the connection (and the lock, if it was just
                # taken) goes now, not when the garbage collector finds it.
                await _close(conn)
                raise
        try:
            yield
        finally:
            await _close(conn)
        return
    path = engine.url.database
    if not path or path == ":memory:":
        yield
        return
    with open(path + ".deriver-lock", "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LEADER_POLL_SECONDS)
        yield


async def finish(engine: AsyncEngine, derivation: Derivation) -> None:
    """At a clean stop: derive what is still queued (the last flush's batches), for at most
    FINISH_SECONDS; whatever is left stays queued for the next deriver."""
    try:
        await asyncio.wait_for(derive_marked(engine, derivation), FINISH_SECONDS)
    except Exception as exc:
        logger.warning("left facts to derive at the next start (%s)", type(exc).__name__)


# --- embedded mode: the deriver in a child process ---------------------------------------------


class DeriverProcess:
    """The embedded mode's deriver, in a child process that ends when this process does (its
    standard input is a pipe from here: end of file means the parent is gone)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        payload = pickle.dumps(self.settings)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trackside.deriver"],
            stdin=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C goes to the parent, which stops it
        )
        assert self.process.stdin is not None
        self.process.stdin.write(len(payload).to_bytes(8, "big") + payload)
        self.process.stdin.flush()

    async def stop(self, timeout: float = FINISH_SECONDS + 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def _read_settings(stream: IO[bytes]) -> Any:
    size = int.from_bytes(stream.read(8), "big")
    return pickle.loads(stream.read(size))  # noqa: S301 - from our own parent, over a pipe


async def _child(settings: Any) -> None:
    from trackside.derive import derivation_of
    from trackside.storage.engine import create_engine

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # The parent's end of the pipe closing (or its death) ends this process.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    engine = create_engine(settings.database_url)
    derivation = derivation_of(settings)
    deriver = Deriver(engine, derivation)
    task = asyncio.create_task(deriver.run())
    await stop.wait()
    led = deriver.leading
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if led:  # the one that worked finishes its queue; one that waited leaves it
        await finish(engine, derivation)
    await engine.dispose()


def main() -> None:
    settings = _read_settings(sys.stdin.buffer)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped by its parent, not by a terminal
    with contextlib.suppress(OSError):
        os.nice(10)  # the proxy's requests first; derivation catches up when they leave time
    from trackside.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_child(settings))


if __name__ == "__main__":
    main()
