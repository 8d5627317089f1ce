"""Request bodies: read under a minimum rate, and taken whole before an upstream is asked.

nginx does the second by default (`proxy_request_buffering on`) for a reason that applies here
as much: an upstream connection held while a client trickles its body is one the site's other
pages cannot have. Twenty clients sending a byte a second held a pool of sixteen, and every
page waited. Buffered, a slow client costs a coroutine and a little memory or disk, never an
upstream connection.

Where a body is kept while it arrives:
- up to `body_memory_bytes` (64 KiB by default) in memory. uvicorn itself holds up to 64 KiB of
  a body per connection before it stops reading, so this at most doubles what a connection can
  make the process hold, and it covers the JSON and form posts of a site whole;
- beyond that in a temporary file in `body_buffer_dir`: opened unlinked (`O_TMPFILE` where the
  file system has it, else made 0600 and unlinked at once), so it has no name anyone could open
  and vanishes with its descriptor, whatever happens to the process. The bytes all such files
  hold are capped across the process (`body_buffer_max_bytes`): beyond it a request is a 503.
  Files are written and read in the event loop, as nginx does without aio threads: the page
  cache makes that a copy.

How fast it must arrive: each read within `client_timeout` (a stalled client), and, once
`body_rate_grace` seconds have passed, `body_min_rate` bytes a second on average since the body
began. A per-read timeout alone never fires for a byte a second; a whole-body deadline would
kill a large upload on a slow link that keeps a steady rate. This one does neither."""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from starlette.types import Message, Receive

from trackside.settings import Settings

logger = logging.getLogger("trackside.proxy")

# How much of a buffered file is read per write to the upstream.
READ_SIZE = 256 * 1024


class BodyError(Exception):
    """The body cannot be taken: the answer the client gets instead."""

    def __init__(self, status: int, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error  # X-Trackside-Error, for the sidecar's own refusals


@dataclass(frozen=True, slots=True)
class BodyRules:
    max_bytes: int
    idle_timeout: float
    min_rate: int
    grace: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyRules:
        return cls(settings.max_body_bytes, settings.client_timeout, settings.body_min_rate, settings.body_rate_grace)


async def receive_body(receive: Receive, rules: BodyRules, started: float) -> AsyncIterator[bytes]:
    """The body's chunks as the client sends them; `BodyError` when it is too slow, too large or
    the client left. `started` is the loop time the request's head was taken."""
    loop = asyncio.get_running_loop()
    received = 0
    min_rate = rules.min_rate
    while True:
        idle_at = loop.time() + rules.idle_timeout
        # The moment the average rate would fall below the minimum if nothing more came.
        slow_at = started + max(rules.grace, received / min_rate) if min_rate else math.inf
        try:
            async with asyncio.timeout_at(min(idle_at, slow_at)):
                message: Message = await receive()
        except TimeoutError:
            if slow_at <= idle_at:
                raise BodyError(408, "request body too slow") from None
            raise BodyError(408, "request body timed out") from None
        if message["type"] == "http.disconnect":
            raise BodyError(499, "client went away")
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > rules.max_bytes:
            raise BodyError(413, "request body too large")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class BodyBudget:
    """The bytes request bodies hold on disk across this process, against a cap."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class BodyStore:
    """Where buffered bodies go: memory up to a size, then unlinked files under a shared cap."""

    def __init__(self, settings: Settings) -> None:
        self.memory_bytes = settings.body_memory_bytes
        self.folder = settings.body_buffer_dir or tempfile.gettempdir()
        self.budget = BodyBudget(settings.body_buffer_max_bytes)
        self.rules = BodyRules.from_settings(settings)

    def open_file(self) -> IO[bytes]:
        # TemporaryFile: O_TMPFILE (never named) or mkstemp's 0600 file unlinked before it returns.
        return tempfile.TemporaryFile(dir=self.folder, buffering=0)

    async def take(self, receive: Receive, declared: int | None, started: float) -> BufferedBody:
        """The whole body, read under the rules; `declared` is its Content-Length, if any."""
        body = BufferedBody(self)
        try:
            if declared is not None and declared > self.memory_bytes:
                # Known to need a file: claim its room now, not after the client sent most of it.
                body.reserve(declared)
            async for chunk in receive_body(receive, self.rules, started):
                body.add(chunk)
        except BaseException:
            body.close()
            raise
        return body


class BufferedBody:
    """One request's body, whole; `close` frees its memory, its file and its share of the cap."""

    __slots__ = ("store", "parts", "file", "size", "reserved")

    def __init__(self, store: BodyStore) -> None:
        self.store = store
        self.parts: list[bytes] = []
        self.file: IO[bytes] | None = None
        self.size = 0
        self.reserved = 0

    def reserve(self, size: int) -> None:
        more = size - self.reserved
        if more > 0:
            if not self.store.budget.take(more):
                raise BodyError(503, "request body buffer full, try again later", "body_buffer_full")
            self.reserved += more

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.file is None:
            if self.size <= self.store.memory_bytes:
                self.parts.append(chunk)
                return
            self.reserve(self.size)
            self.file = self._open()
            for part in self.parts:
                self._write(part)
            self.parts = []
        else:
            self.reserve(self.size)
        self._write(chunk)

    def _open(self) -> IO[bytes]:
        try:
            return self.store.open_file()
        except OSError as exc:
            logger.warning("cannot buffer a request body in %s: %s", self.store.folder, exc.strerror or exc)
            raise BodyError(503, "no room to buffer the request body", "body_buffer_full") from None

    def _write(self, data: bytes) -> None:
        assert self.file is not None
        view = memoryview(data)
        try:
            while view:
                written = self.file.write(view)
                view = view[written:]
        except OSError as exc:  # the disk is full: the server's trouble, not the client's
            logger.warning("cannot buffer a request body in %s: %s", self.store.folder, exc.strerror or exc)
            raise BodyError(503, "no room to buffer the request body", "body_buffer_full") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body again, from the start, for the upstream."""
        file = self.file
        if file is None:
            if self.parts:
                yield self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            return
        file.seek(0)
        while data := file.read(READ_SIZE):
            yield data

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.parts = []
        if self.reserved:
            self.store.budget.give(self.reserved)
            self.reserved = 0
