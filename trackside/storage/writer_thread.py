"""The embedded mode's writer, off the proxy's event loop: batches are stored and derived into facts
by a thread with its own event loop and its own database engine.

Deriving a batch's visitor-days is Python work (tens of milliseconds for a second of busy traffic);
on the proxy's loop it would hold every proxied request back that long. In its own thread it
still shares the GIL, but the interpreter hands the GIL over every few milliseconds, so the
proxy's loop keeps answering while a batch is derived."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.storage.engine import create_engine
from trackside.storage.writes import DatabaseWriter

T = TypeVar("T")


class WriterThread:
    """`write` from any event loop; the batch is written on the writer thread's loop."""

    def __init__(self, database_url: str, derivation: Derivation | None = None) -> None:
        self._database_url = database_url
        self._derivation = derivation
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._writer: DatabaseWriter | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        if self._loop is None:  # started by the first batch: a pipeline never started has no thread
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="trackside-writer", daemon=True)
            self._thread.start()
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _write(self, batch: Batch) -> int:
        if self._writer is None:  # made on the writer's loop: the engine belongs to that loop
            self._writer = DatabaseWriter(create_engine(self._database_url), self._derivation)
        return await self._writer.write(batch)

    async def write(self, batch: Batch) -> int:
        return await self._run(self._write(batch))

    def derive_too(self) -> None:
        """Run the deriver on this thread's loop too (`TRACKSIDE_DERIVER=thread`)."""
        self._run(self._derive())

    async def _derive(self) -> None:
        from trackside.deriver import Deriver

        if self._writer is None:
            self._writer = DatabaseWriter(create_engine(self._database_url), self._derivation)
        self._deriver_task = asyncio.current_task()
        await Deriver(self._writer.engine, self._derivation or Derivation()).run()

    async def _dispose(self) -> None:
        task = getattr(self, "_deriver_task", None)
        if task is not None:
            from trackside.deriver import finish

            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._writer is not None:
                await finish(self._writer.engine, self._derivation or Derivation())
        if self._writer is not None:
            await self._writer.engine.dispose()

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        await self._run(self._dispose())
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        loop.close()
        self._loop = self._thread = None
