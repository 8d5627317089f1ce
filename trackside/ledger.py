"""The ledger: how many events this process captured, how many of them reached the database, Redis
or the spool, and how many answered requests still wait to become events (capture records them in
batches, off the request path). Three counters in a small memory-mapped file, so they survive a
SIGKILL of the process (the kernel keeps the page): after a restart, what a killed process captured
but never made durable is known exactly, and reported as `events_lost_unclean_shutdown` (a request
that was still waiting counts as one event). A clean stop deletes it."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_LAYOUT = struct.Struct("=QQQ")  # captured, durable, waiting; native order, as the memoryview writes them
_OLD_LAYOUT = struct.Struct("=QQ")  # before requests waited: captured, durable


class Ledger:
    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"ledger-{os.getpid()}-{os.urandom(4).hex()}.bin"
        self._file = open(self.path, "w+b")  # noqa: SIM115 - held for the life of the process
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(b"\0" * _LAYOUT.size)
        self._file.flush()
        self._map = mmap.mmap(self._file.fileno(), _LAYOUT.size)
        # Native unsigned 64-bit slots over the mapped page: one store per change.
        self._slots = memoryview(self._map).cast("Q")
        self.captured = 0
        self.durable = 0
        self.waiting = 0

    def add_captured(self, n: int = 1) -> None:
        self.captured += n
        self._slots[0] = self.captured

    def add_durable(self, n: int) -> None:
        self.durable += n
        self._slots[1] = self.durable

    def add_waiting(self, n: int) -> None:
        """Requests answered and not yet recorded (negative: recorded now)."""
        self.waiting += n
        self._slots[2] = self.waiting

    def close(self) -> None:
        self._slots.release()
        self._map.close()
        self._file.close()
        self.path.unlink(missing_ok=True)


def recover_lost(directory: str) -> int:
    """Events that processes killed before they could flush had captured and never made durable."""
    lost = 0
    folder = Path(directory)
    if not folder.is_dir():
        return 0
    for path in folder.glob("ledger-*.bin"):
        with open(path, "r+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live process holds it
            data = f.read(_LAYOUT.size)
            if len(data) == _LAYOUT.size:
                captured, durable, waiting = _LAYOUT.unpack(data)
                lost += max(captured - durable, 0) + waiting
            elif len(data) == _OLD_LAYOUT.size:
                captured, durable = _OLD_LAYOUT.unpack(data)
                lost += max(captured - durable, 0)
        path.unlink(missing_ok=True)
    return lost
