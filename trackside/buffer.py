"""The bounded in-memory buffer the request path appends to, and the flusher that drains it.

The request path only appends (no I/O, no await): a proxied request's answer as it was (`wait`),
which the flusher turns into its event, in batches, before each flush. The flusher sends batches
by size or time to a writer (the database in embedded mode, Redis in scale-out mode); a batch the
writer cannot take goes to the spool and is replayed when the writer is back. A full buffer drops
and counts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Protocol

from trackside.batch import Batch, BotKey
from trackside.events import BotHit, Event, as_row
from trackside.ledger import Ledger
from trackside.metrics import Metrics
from trackside.spool import Spool

logger = logging.getLogger("trackside.buffer")


class BatchWriter(Protocol):
    async def write(self, batch: Batch) -> object: ...


class Recorder(Protocol):
    def record(self, *request: Any) -> None: ...


# Recording runs in slices between yields to the event loop, so that a proxied request arriving
# meanwhile waits no longer than a slice: at least RECORD_SLICE seconds, and RECORD_SHARE of the
# time the loop spent on other work before it came back. A quiet loop comes back at once and the
# slices stay short (one-connection p99 in Redis mode, three paired runs: 16 requests a slice,
# about 180 µs, 1.00-1.59 ms; 50 µs slices 0.74-0.76 ms). A busy one comes back late, and the
# slices grow so that recording keeps pace with the requests (with fixed 50 µs slices it fell
# behind at 64 connections and the buffer overflowed).
RECORD_SLICE = 0.00005
RECORD_SHARE = 0.5
# Waiting requests that wake the flusher before its interval: bounds what they hold in memory.
WAITING_WAKEUP = 1000


class EventBuffer:
    """The capture sink: `put` and `put_bot` are synchronous and never block.

    Events wait here as rows (`put_row`, in `events.FIELDS` order) and become `Event`s when a batch
    is taken: a tuple of text and numbers leaves the garbage collector's lists at its first
    collection, where thousands of `Event`s waiting for the flush were walked by every collection
    (see `Capturer.defer`)."""

    def __init__(self, capacity: int, metrics: Metrics, ledger: Ledger | None = None) -> None:
        self.capacity = capacity
        self.metrics = metrics
        self.ledger = ledger
        self.events: list[tuple[Any, ...]] = []  # rows, in `events.FIELDS` order
        self.waiting: list[tuple[Any, ...]] = []  # answered requests, not yet recorded
        self.bots: Counter[BotKey] = Counter()
        self.aliases: dict[tuple[str, str], str] = {}
        self.titles: dict[tuple[str, str], str] = {}  # (kind, id) -> the title last hinted
        self.wakeup = asyncio.Event()
        self.batch_size = capacity

    def put(self, event: Event) -> None:
        self.put_row(as_row(event))

    def put_row(self, row: tuple[Any, ...]) -> None:
        """An event as its row (`events.as_row`): what capture hands over, with no `Event` made."""
        if len(self.events) >= self.capacity:
            self.dropped(1)
            return
        self.events.append(row)
        self.metrics.inc("events_captured")
        if self.ledger is not None:
            self.ledger.add_captured()
        if len(self.events) >= self.batch_size:
            self.wakeup.set()

    def wait(self, request: tuple[Any, ...]) -> None:
        """An answered request, recorded later by the flusher (`Capturer.record`'s arguments)."""
        if len(self.waiting) + len(self.events) >= self.capacity:
            self.dropped(1)
            return
        self.waiting.append(request)
        if self.ledger is not None:
            self.ledger.add_waiting(1)
        if len(self.waiting) >= WAITING_WAKEUP:
            self.wakeup.set()

    def dropped(self, n: int, *, captured: bool = False) -> None:
        """Events lost for want of room (or of a spool): counted, and kept in the ledger so that
        the count survives a restart."""
        self.metrics.inc("events_dropped", n)
        if self.ledger is not None:
            self.ledger.add_dropped(n, captured=captured)

    def take_waiting(self) -> list[tuple[Any, ...]]:
        waiting, self.waiting = self.waiting, []
        return waiting

    def put_bot(self, hit: BotHit) -> None:
        self.bots[(datetime.fromtimestamp(hit.ts, UTC).date(), hit.bot, hit.label)] += 1
        self.metrics.inc("bot_hits")

    def put_alias(self, kind: str, alias: str, item: str) -> None:
        if len(self.aliases) < 10_000:
            self.aliases[(kind, alias)] = item

    def put_title(self, kind: str, item: str, title: str) -> None:
        if len(self.titles) < 10_000 or (kind, item) in self.titles:
            self.titles[(kind, item)] = title

    def take(self, limit: int) -> Batch:
        rows, batch = self.take_rows(limit)
        batch.events = [Event(*row) for row in rows]
        return batch

    def take_rows(self, limit: int) -> tuple[list[tuple[Any, ...]], Batch]:
        """Up to `limit` events as their rows, and a batch with the counters, aliases and titles but
        no events yet (a writer that takes rows packs them as they are: `RedisWriter.write_rows`)."""
        rows, self.events = self.events[:limit], self.events[limit:]
        bots, self.bots = self.bots, Counter()
        aliases, self.aliases = self.aliases, {}
        titles, self.titles = self.titles, {}
        return rows, Batch(bots=bots, aliases=aliases, titles=titles)

    def __len__(self) -> int:
        return len(self.events)


class Flusher:
    def __init__(
        self, buffer: EventBuffer, writer: BatchWriter, spool: Spool, metrics: Metrics, interval: float, batch: int
    ) -> None:
        self.buffer = buffer
        self.writer = writer
        self.spool = spool
        self.metrics = metrics
        self.interval = interval
        self.batch = batch
        buffer.batch_size = batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.recorder: Recorder | None = None  # turns waiting requests into events (the capturer)
        # A writer that packs the buffer's rows as they are (Redis), else None: batches of `Event`s.
        self._write_rows: Any = getattr(writer, "write_rows", None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trackside-flusher")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self.buffer.wakeup.wait(), self.interval)
            except TimeoutError:
                pass
            self.buffer.wakeup.clear()
            try:
                await self.flush()
            except Exception:  # never let the flusher die: the next round retries
                logger.exception("flush failed")

    async def flush(self) -> None:
        """Record the requests that wait, then write what is buffered now, spooling what the writer
        cannot take. Events that arrive meanwhile wait for the next round: under steady load a round
        must end, and batches stay full-sized instead of trickling out a few events at a time."""
        await self._record_waiting()
        await self._replay()
        rounds = max(1, -(-len(self.buffer) // self.batch))
        for _ in range(rounds):
            if not (len(self.buffer) or self.buffer.bots or self.buffer.aliases):
                break
            if self._write_rows is not None:
                await self._send_rows(*self.buffer.take_rows(self.batch))
            else:
                await self._send(self.buffer.take(self.batch))

    async def _record_waiting(self) -> None:
        waiting = self.buffer.take_waiting()
        if not waiting:
            return
        ledger = self.buffer.ledger
        record = self.recorder.record if self.recorder is not None else None
        clock = time.perf_counter
        deadline = clock() + RECORD_SLICE
        for request in waiting:
            try:
                if record is not None:
                    record(*request)
            except Exception:  # one bad request must not cost the others their events
                self.metrics.inc("capture_failed")
                logger.exception("failed to record an event")
            if ledger is not None:  # at once, after the event: a SIGKILL's loss stays exact
                ledger.add_waiting(-1)
            now = clock()
            if now > deadline:
                await asyncio.sleep(0)
                back = clock()
                deadline = back + max(RECORD_SLICE, (back - now) * RECORD_SHARE)

    async def _send_rows(self, rows: list[tuple[Any, ...]], batch: Batch) -> None:
        """`_send` for a writer that takes rows (Redis): the events become `Event`s only if the batch
        goes to the spool."""
        if not self.spool.pending:
            assert self._write_rows is not None
            try:
                await self._write_rows(batch, rows)
            except Exception as exc:
                logger.warning("writer unavailable (%s): spooling %d events", type(exc).__name__, len(rows))
            else:
                self.metrics.inc("events_written", len(rows))
                self.metrics.inc("batches_written")
                if self.buffer.ledger is not None:
                    self.buffer.ledger.add_durable(len(rows))
                return
        batch.events = [Event(*row) for row in rows]
        self._spool(batch)

    async def _send(self, batch: Batch) -> None:
        if self.spool.pending:
            # Keep order: while older batches wait in the spool, newer ones queue behind them.
            self._spool(batch)
            return
        try:
            await self.writer.write(batch)
            self.metrics.inc("events_written", len(batch.events))
            self.metrics.inc("batches_written")
            self._durable(batch)
        except Exception as exc:
            logger.warning("writer unavailable (%s): spooling %d events", type(exc).__name__, len(batch.events))
            self._spool(batch)

    def _spool(self, batch: Batch) -> None:
        try:
            self.spool.append(batch)
            self.metrics.inc("events_spooled", len(batch.events))
            self._durable(batch)
        except OSError:
            self.buffer.dropped(len(batch.events), captured=True)
            logger.exception("cannot write the spool: %d events lost", len(batch.events))

    def _durable(self, batch: Batch) -> None:
        if self.buffer.ledger is not None:
            self.buffer.ledger.add_durable(len(batch.events))

    async def _replay(self) -> None:
        try:
            replayed = await self.spool.replay(self.writer.write)
        except Exception as exc:
            logger.info("spool replay waits: writer still unavailable (%s)", type(exc).__name__)
            return
        if replayed:
            self.metrics.inc("batches_replayed", replayed)
            logger.info("replayed %d spooled batches", replayed)

    async def stop(self) -> None:
        """Graceful shutdown: stop the loop and flush what is left (spooling if need be)."""
        self._stopping = True
        self.buffer.wakeup.set()
        if self._task is not None:
            await self._task
        while len(self.buffer) or self.buffer.waiting or self.buffer.bots or self.buffer.aliases:
            await self.flush()
        self.spool.close()
        if self.buffer.ledger is not None:
            self.buffer.ledger.close()
