"""The sidecar's own counters: what capture saw but did not store, and what the pipeline did."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Plain in-process counters, read by `/_trackside/metrics` and the tests."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def inc(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
