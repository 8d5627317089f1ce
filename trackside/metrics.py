"""The sidecar's own counters: what capture saw but did not store, and what the pipeline did.

Plain in-process numbers: the request path pays a dict increment; `/_trackside/metrics` renders
them for Prometheus at scrape time."""

from __future__ import annotations

import bisect
from collections import Counter

# Upper bounds (seconds) of the upstream latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def inc(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def observe_upstream(self, seconds: float) -> None:
        self._latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds

    def latency_histogram(self) -> tuple[list[tuple[str, float]], float, int]:
        """Cumulative buckets as Prometheus wants them, the sum, the count."""
        buckets = []
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._latency, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets, self._latency_sum, running

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
