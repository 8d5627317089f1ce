"""The ledger: how many events this process captured, how many of them reached the database, Redis
or the spool, how many answered requests still wait to become events (capture records them in
batches, off the request path), and how many events were dropped. Counters in a small memory-mapped
file, so they survive a SIGKILL of the process (the kernel keeps the page).

After a restart, the new process takes over the files of processes that ended (`Ledger.absorb`):
what a killed process captured but never made durable is known exactly, and reported as
`events_lost_unclean_shutdown` (a request that was still waiting counts as one event); and the
drops of every earlier process carry over into the new one's ledger and `events_dropped`, so that
counter never goes back to zero on a restart. A clean stop deletes the file, unless it holds drops
to carry over: then it stays, its other counters zeroed (a clean stop lost nothing)."""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

# captured, durable (or dropped after capture: settled either way), waiting, dropped, run tag;
# native order, as the memoryview writes them.
_LAYOUT = struct.Struct("=QQQQQ")
_BEFORE_DROPS = struct.Struct("=QQQ")  # captured, durable, waiting
_OLD_LAYOUT = struct.Struct("=QQ")  # before requests waited: captured, durable
_CAPTURED, _DURABLE, _WAITING, _DROPPED, _RUN = range(5)


def run_tag(run: str) -> int:
    """The run a process belongs to, as 64 bits: the server processes of one `trackside serve`
    share one (their counters are added up by a scrape), any other process has its own."""
    return int.from_bytes(hashlib.blake2b(run.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class Absorbed:
    lost: int  # captured by killed processes and never made durable
    dropped: int  # dropped by processes of earlier runs: not in this run's counters yet


class Ledger:
    def __init__(self, directory: str, run: str | None = None) -> None:
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
        self.run = run_tag(run if run is not None else self.path.name)
        self._slots[_RUN] = self.run
        self.captured = 0
        self.durable = 0
        self.waiting = 0
        self.dropped = 0

    def add_captured(self, n: int = 1) -> None:
        self.captured += n
        self._slots[_CAPTURED] = self.captured

    def add_durable(self, n: int) -> None:
        self.durable += n
        self._slots[_DURABLE] = self.durable

    def add_waiting(self, n: int) -> None:
        """Requests answered and not yet recorded (negative: recorded now)."""
        self.waiting += n
        self._slots[_WAITING] = self.waiting

    def add_dropped(self, n: int, *, captured: bool = False) -> None:
        """Events dropped; `captured` ones (the spool could not take them) are settled, not lost."""
        self.dropped += n
        self._slots[_DROPPED] = self.dropped
        if captured:
            self.add_durable(n)

    def absorb(self) -> Absorbed:
        """Take over the files of processes that ended, killed or stopped: their losses, and their
        drops (carried in this ledger from now on). A file is counted by one process only: it is
        locked while read, and one already deleted by another process is skipped."""
        lost = dropped_before = 0
        for path in self.dir.glob("ledger-*.bin"):
            if path == self.path:
                continue
            try:
                f = open(path, "r+b")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue  # taken by another process meanwhile
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live process holds it
                if os.fstat(f.fileno()).st_nlink == 0:
                    continue  # another process took it between our open and our lock
                data = f.read(_LAYOUT.size)
                dropped = 0
                if len(data) == _LAYOUT.size:
                    captured, durable, waiting, dropped, run = _LAYOUT.unpack(data)
                    lost += max(captured - durable, 0) + waiting
                    if run != self.run:
                        dropped_before += dropped
                    # else: a process of this run, whose counter file still shows its drops
                elif len(data) == _BEFORE_DROPS.size:
                    captured, durable, waiting = _BEFORE_DROPS.unpack(data)
                    lost += max(captured - durable, 0) + waiting
                elif len(data) == _OLD_LAYOUT.size:
                    captured, durable = _OLD_LAYOUT.unpack(data)
                    lost += max(captured - durable, 0)
                if dropped:
                    self.add_dropped(dropped)  # carried here before the file goes
                path.unlink(missing_ok=True)
        return Absorbed(lost, dropped_before)

    def close(self) -> None:
        """A clean stop: nothing is lost; drops stay on disk for the next process to carry."""
        keep = self.dropped > 0
        if keep:
            for slot in (_CAPTURED, _DURABLE, _WAITING):
                self._slots[slot] = 0
            self._map.flush()
        self._slots.release()
        self._map.close()
        self._file.close()
        if not keep:
            self.path.unlink(missing_ok=True)
