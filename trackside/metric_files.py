"""Counters shared by the server processes of one `trackside serve`, through one small file each.

uvicorn's worker processes share the listening socket, so any of them may answer a scrape: each
process keeps its counters in a memory-mapped file of its own in the run's directory, and a scrape
adds up every file there. A process that ends leaves its file behind, so a counter never goes
back when a worker is replaced; the directory is made anew by each `trackside serve` (Prometheus
sees a restart as counters going back to zero, as it should).

File layout (little-endian): 8 bytes, how many bytes are in use; then entries, each a 4-byte key
length, the UTF-8 key, padding to 8 bytes, and an 8-byte float. Only the owning process writes;
a new entry is written whole before the length that makes it visible, and a value is one aligned
8-byte store, so a reader never sees half of one."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import shutil
import struct
import tempfile
from secrets import token_hex

# Set by `trackside serve` for its server processes: the directory of this run's counter files.
SHARED_ENV = "TRACKSIDE_SHARED_METRICS_DIR"
SEP = "\x1f"  # between a labelled counter's name and its label values, in a stored key
DIR_PREFIX = "trackside-metrics-"
_USED = struct.Struct("<Q")
_LEN = struct.Struct("<I")
_VALUE = struct.Struct("<d")
_INITIAL = 16 * 1024
_FILE_NAME = re.compile(r"^(\d+)\.[0-9a-f]+\.counts$")
_DIR_NAME = re.compile(r"^" + re.escape(DIR_PREFIX) + r"(\d+)-")


class CountFile:
    """This process's counters, written where the other processes can read them."""

    def __init__(self, directory: str) -> None:
        # The pid for liveness (gauges), a random part so a reused pid never overwrites a dead
        # process's counts.
        self.path = os.path.join(directory, f"{os.getpid()}.{token_hex(4)}.counts")
        self._file = open(self.path, "w+b")  # noqa: SIM115 - open as long as the process
        os.chmod(self.path, 0o600)
        self._file.truncate(_INITIAL)
        self._map = mmap.mmap(self._file.fileno(), _INITIAL)
        self._used = _USED.size
        _USED.pack_into(self._map, 0, self._used)
        self._offsets: dict[str | tuple[str, ...], int] = {}

    def set(self, key: str | tuple[str, ...], value: float) -> None:
        """`key`: a name, or a name and label values (stored joined by `SEP`)."""
        offset = self._offsets.get(key)
        if offset is None:
            offset = self._append(key)
        _VALUE.pack_into(self._map, offset, value)

    def slot(self, key: str | tuple[str, ...]) -> int:
        """Where `key`'s value is, for `put`: a caller that keeps it saves a lookup per write."""
        offset = self._offsets.get(key)
        return self._append(key) if offset is None else offset

    def put(self, slot: int, value: float) -> None:
        _VALUE.pack_into(self._map, slot, value)

    def _append(self, key: str | tuple[str, ...]) -> int:
        raw = (key if isinstance(key, str) else SEP.join(key)).encode()
        start = self._used
        value_at = _align(start + _LEN.size + len(raw))
        end = value_at + _VALUE.size
        if end > len(self._map):
            size = len(self._map)
            while size < end:
                size *= 2
            self._map.resize(size)  # grows the file too
        _LEN.pack_into(self._map, start, len(raw))
        self._map[start + _LEN.size : start + _LEN.size + len(raw)] = raw
        _VALUE.pack_into(self._map, value_at, 0.0)
        self._used = end
        _USED.pack_into(self._map, 0, end)  # last: the entry is whole before a reader can see it
        self._offsets[key] = value_at
        return value_at

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._map.close()
            self._file.close()


def read_file(path: str) -> dict[str, float]:
    """One process's counters as written so far (a file cut short by a crash reads as far as it goes)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if len(data) < _USED.size:
        return {}
    used = min(_USED.unpack_from(data, 0)[0], len(data))
    out: dict[str, float] = {}
    at = _USED.size
    while at + _LEN.size <= used:
        length = _LEN.unpack_from(data, at)[0]
        value_at = _align(at + _LEN.size + length)
        if value_at + _VALUE.size > used:
            break
        key = data[at + _LEN.size : at + _LEN.size + length].decode(errors="replace")
        out[key] = _VALUE.unpack_from(data, value_at)[0]
        at = value_at + _VALUE.size
    return out


def read_dir(directory: str) -> list[tuple[int, dict[str, float]]]:
    """(pid, counters) of every process of the run, the ended ones included."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        found = _FILE_NAME.match(name)
        if found:
            out.append((int(found.group(1)), read_file(os.path.join(directory, name))))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_dir() -> str:
    """A fresh directory for this run's counter files, in the system's temporary folder; the
    directories of earlier runs whose server is gone (killed before it could clean up) are removed."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            found = _DIR_NAME.match(name)
            if found and int(found.group(1)) != os.getpid() and not alive(int(found.group(1))):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")


def remove_run_dir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _align(n: int) -> int:
    return (n + 7) & ~7
