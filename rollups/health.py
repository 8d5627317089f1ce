"""The worker's state, told three ways: one log line when it changes (never one per retry), a small
JSON file rewritten every few seconds (its heartbeat), and `trackside worker --check`, which reads
that file for a container's health check.

States: `starting`, `running` (Redis answers), `redis_away` (waiting to reconnect), `stopped`.
Beside it, the database: `ok` or `away` (batches wait in the queue and are retried)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from trackside.settings import Settings

logger = logging.getLogger("trackside.worker")

# A heartbeat older than this means the worker is hung or gone.
STALE_SECONDS = 60.0


def health_path(settings: Settings) -> Path:
    return Path(settings.spool_dir) / "worker-health.json"


class Health:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.state = "starting"
        self.since = time.time()
        self.database = "ok"
        self.database_since = self.since
        self.queue_depth: int | None = None
        self.oldest_job_seconds: float | None = None
        self.reason = ""

    def _change(self, state: str, reason: str = "") -> float:
        now = time.time()
        lasted = now - self.since
        self.state, self.since, self.reason = state, now, reason
        self.write()
        return lasted

    def redis_ok(self) -> None:
        if self.state == "running":
            return
        was = self.state
        lasted = self._change("running")
        queue = f"{self.queue_depth} jobs queued, the oldest due {self.oldest_job_seconds or 0:.0f} s ago"
        if was == "redis_away":
            logger.warning("Redis is back after %.0f s: the worker resumed (%s)", lasted, queue)
        else:
            logger.info("worker running (%s)", queue)

    def redis_away(self, error: BaseException, *, delay_cap: float) -> None:
        if self.state == "redis_away":
            return
        reason = f"{type(error).__name__}: {error}"
        self._change("redis_away", reason)
        logger.warning(
            "Redis unavailable (%s): the worker waits and reconnects (every %.0f s at most); "
            "the sidecars spool their batches meanwhile (last seen: %s jobs queued)",
            reason,
            delay_cap,
            self.queue_depth,
        )

    def database_away(self, error: BaseException) -> None:
        if self.database == "away":
            return
        self.database, self.database_since = "away", time.time()
        self.write()
        logger.warning(
            "database unavailable (%s): batches stay queued and are retried until it is back", type(error).__name__
        )

    def database_ok(self) -> None:
        if self.database == "ok":
            return
        lasted = time.time() - self.database_since
        self.database, self.database_since = "ok", time.time()
        self.write()
        logger.warning("the database is back after %.0f s: queued batches are being stored", lasted)

    def queue(self, state: dict[str, Any]) -> None:
        self.queue_depth = int(state["queue_depth"])
        self.oldest_job_seconds = float(state["queue_oldest_job_seconds"])

    def stopped(self) -> None:
        self._change("stopped")

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "state": self.state,
            "since": self.since,
            "reason": self.reason,
            "database": self.database,
            "queue_depth": self.queue_depth,
            "queue_oldest_job_seconds": self.oldest_job_seconds,
            "heartbeat": time.time(),
        }

    def write(self) -> None:
        """Written whole, then renamed over the last one: a reader never sees half a file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            part = self.path.with_name(self.path.name + f".{os.getpid()}.part")
            part.write_text(json.dumps(self.as_dict()))
            os.replace(part, self.path)
        except OSError as exc:  # a health file is never worth stopping the worker for
            logger.debug("cannot write %s (%s)", self.path, exc)


def check(path: str | os.PathLike[str], stale_after: float = STALE_SECONDS) -> tuple[bool, str]:
    """(healthy, one line saying why): healthy means a fresh heartbeat, Redis reached, database up."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return False, f"no worker health file at {path} (is `trackside worker` running here?)"
    except (OSError, ValueError) as exc:
        return False, f"cannot read the worker health file {path}: {exc}"
    age = time.time() - float(data.get("heartbeat", 0))
    state = data.get("state")
    pid = data.get("pid")
    if state == "stopped":
        return False, f"worker {pid} stopped"
    if age > stale_after:
        return False, f"worker {pid} silent for {age:.0f} s (last state {state}): hung or gone"
    away = time.time() - float(data.get("since", 0))
    if state == "redis_away":
        return False, f"worker {pid} waiting for Redis for {away:.0f} s ({data.get('reason')})"
    if state != "running":
        return False, f"worker {pid} {state}"
    if data.get("database") != "ok":
        return False, f"worker {pid} running, database unavailable: batches wait in the queue"
    depth = data.get("queue_depth")
    oldest = data.get("queue_oldest_job_seconds")
    queue = "" if depth is None else f"; queue depth {depth}, oldest job {oldest:.1f} s"
    return True, f"worker {pid} running{queue}"
