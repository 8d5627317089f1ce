"""The spool: batches that storage (or Redis) could not take, appended to a local file and
replayed in order when it is back. One file per process, locked while the process lives, so a
restarted or sibling process replays only files nobody holds. A torn last line (a crash while
writing) is skipped, not fatal."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from trackside.batch import Batch

logger = logging.getLogger("trackside.spool")


class Spool:
    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self._file: IO[str] | None = None
        self.path: Path | None = None
        self.pending = 0  # batches in our own file not yet replayed

    def _open(self) -> IO[str]:
        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.path = self.dir / f"spool-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
            self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self._file

    def append(self, batch: Batch) -> None:
        f = self._open()
        f.write(json.dumps(batch.to_wire(), separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())
        self.pending += 1

    async def replay(self, write: Callable[[Batch], Awaitable[object]]) -> int:
        """Replay our own file, then any orphaned file of a dead process. Stops at the first
        failure (the rest stays spooled, in order). Returns the number of batches replayed."""
        replayed = 0
        if self._file is not None and self.pending:
            replayed += await _replay_file(self._file, write)
            self._file.seek(0)
            self._file.truncate()
            self.pending = 0
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("spool-*.jsonl")):
                if path == self.path:
                    continue
                try:
                    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115
                except OSError:
                    continue
                try:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # a live process holds it
                    replayed += await _replay_file(f, write)
                    path.unlink()
                finally:
                    f.close()
        return replayed

    def orphaned(self) -> int:
        """Batches waiting in files of other (dead) processes: reported after a restart."""
        total = 0
        if self.dir.is_dir():
            for path in self.dir.glob("spool-*.jsonl"):
                if path != self.path:
                    with open(path, encoding="utf-8") as f:
                        total += sum(1 for line in f if line.endswith("\n"))
        return total

    def close(self) -> None:
        if self._file is not None:
            empty = self.pending == 0
            self._file.close()
            self._file = None
            if empty and self.path is not None:
                self.path.unlink(missing_ok=True)


async def _replay_file(f: IO[str], write: Callable[[Batch], Awaitable[object]]) -> int:
    f.seek(0)
    count = 0
    for line in f.read().splitlines(keepends=True):
        if not line.endswith("\n"):
            logger.warning("skipping a torn last line in the spool (%d bytes)", len(line))
            break
        try:
            batch = Batch.from_wire(json.loads(line))
        except (ValueError, KeyError, TypeError):
            logger.warning("skipping an unreadable spool line")
            continue
        await write(batch)  # raises: the caller keeps the file, and replay resumes later
        count += 1
    return count
