"""The sidecar's own counters: what capture saw but did not store, what the pipeline did, and
how the upstreams answered (per route and status class, with their latency per route).

Plain in-process numbers: the request path pays a dict increment (and, under `trackside serve`,
one 8-byte store into this process's counter file, `trackside.metric_files`, so that a scrape
answered by any worker process adds up all of them); `/_trackside/metrics` renders them for
Prometheus at scrape time."""

from __future__ import annotations

import bisect
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from trackside.metric_files import SEP, SHARED_ENV, CountFile, alive, read_dir

# Upper bounds (seconds) of the upstream latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SEP = SEP
RESPONSES = "upstream_responses"  # key prefix: upstream answers by route, upstream and status class
_BUCKET = "upstream_seconds_bucket"  # key prefix: the latency histogram, per route and upstream
_SUM = "upstream_seconds_sum"
_GAUGE = "gauge"  # key prefix: a level (events buffered, batches spooled), not a running count
_BUCKET_NAMES = tuple(str(i) for i in range(len(LATENCY_BUCKETS) + 1))
_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


@dataclass(slots=True)
class Histogram:
    """One route's upstream latency: counts per bucket (not cumulative) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def cumulative(self) -> tuple[list[tuple[str, float]], float, int]:
        """Cumulative buckets as Prometheus wants them, the sum, the count."""
        buckets = []
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets, self.total, running


@dataclass(slots=True)
class Totals:
    """Every counter of the sidecar: this process's, or all its server processes' added up."""

    counts: dict[str, int]
    responses: dict[tuple[str, str, str], int]  # (route, upstream, status class) -> answers
    latency: dict[tuple[str, str], Histogram]  # (route, upstream) -> histogram


class _Route:
    """One route and upstream's answers in this process, with where each figure sits in the
    counter file (found once, so an answer costs three stores, not three lookups by name)."""

    __slots__ = ("histogram", "responses", "_file", "_labels", "_buckets", "_sum", "_classes")

    def __init__(self, route: str, upstream: str, file: CountFile | None) -> None:
        self.histogram = Histogram()
        self.responses: dict[str, int] = {}
        self._file = file
        self._labels = (route, upstream)
        self._buckets = [file.slot((_BUCKET, route, upstream, n)) for n in _BUCKET_NAMES] if file else []
        self._sum = file.slot((_SUM, route, upstream)) if file else 0
        self._classes: dict[str, int] = {}

    def observe(self, seconds: float, status_class: str) -> None:
        histogram = self.histogram
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        n = histogram.counts[i] = histogram.counts[i] + 1
        histogram.total += seconds
        answers = self.responses[status_class] = self.responses.get(status_class, 0) + 1
        file = self._file
        if file is not None:
            file.put(self._buckets[i], n)
            file.put(self._sum, histogram.total)
            slot = self._classes.get(status_class)
            if slot is None:
                slot = self._classes[status_class] = file.slot((RESPONSES, *self._labels, status_class))
            file.put(slot, answers)


class Metrics:
    def __init__(self, shared_dir: str | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self._routes: dict[tuple[str, str], _Route] = {}
        # Under `trackside serve` (which sets the variable), this process's counters are also
        # written to its file in the run's directory, for a scrape in any process to add up.
        self.shared_dir = shared_dir if shared_dir is not None else os.environ.get(SHARED_ENV) or None
        self._file = CountFile(self.shared_dir) if self.shared_dir else None

    def inc(self, name: str, amount: int = 1) -> None:
        counts = self.counts
        counts[name] += amount
        if self._file is not None:
            self._file.set(name, counts[name])

    def observe_upstream(self, seconds: float, route: str = "", upstream: str = "", status: int = 0) -> None:
        """An upstream's answer: its status class under its route and upstream, and the time to its
        response head in that route's histogram."""
        state = self._routes.get((route, upstream))
        if state is None:
            state = self._routes[(route, upstream)] = _Route(route, upstream, self._file)
        state.observe(seconds, _CLASSES.get(status // 100, "other"))

    @property
    def responses(self) -> dict[tuple[str, str, str], int]:
        return {(*labels, c): n for labels, state in self._routes.items() for c, n in state.responses.items()}

    @property
    def latency(self) -> dict[tuple[str, str], Histogram]:
        return {labels: state.histogram for labels, state in self._routes.items()}

    def latency_histogram(self) -> tuple[list[tuple[str, float]], float, int]:
        """All routes' latency together, as one histogram (cumulative buckets, sum, count)."""
        merged = Histogram()
        for h in self.latency.values():
            merged.counts = [a + b for a, b in zip(merged.counts, h.counts, strict=True)]
            merged.total += h.total
        return merged.cumulative()

    def set_gauges(self, values: dict[str, float]) -> None:
        """This process's levels, where a scrape in another process can read them."""
        if self._file is not None:
            for name, value in values.items():
                self._file.set((_GAUGE, name), value)

    def shared_gauges(self, own: dict[str, float]) -> dict[str, float]:
        """`own` (this process's levels, just measured) added to the last levels the run's other
        live server processes wrote (every second). An ended process's levels are not counted: its
        buffer was flushed or, after a crash, is reported as lost by the ledger."""
        if self._file is None or self.shared_dir is None:
            return own
        self.set_gauges(own)
        out = dict.fromkeys(own, 0.0)
        for pid, values in read_dir(self.shared_dir):
            if pid != os.getpid() and not alive(pid):
                continue
            for key, value in values.items():
                name, _, level = key.partition(_SEP)
                if name == _GAUGE and level in out:
                    out[level] += value
        return out

    def snapshot(self) -> dict[str, int]:
        """The plain counters of the whole sidecar (every server process of this run)."""
        return self.totals().counts

    def totals(self) -> Totals:
        """Every counter, added up over the run's server processes when they share a directory (the
        ones that ended included: a counter never goes back), else this process's."""
        if self.shared_dir is None:
            return Totals(dict(self.counts), self.responses, self.latency)
        counts: Counter[str] = Counter()
        responses: Counter[tuple[str, str, str]] = Counter()
        latency: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        for _, values in read_dir(self.shared_dir):
            for key, value in values.items():
                if _SEP not in key:
                    counts[key] += int(value)
                    continue
                name, *labels = key.split(_SEP)
                if name == RESPONSES and len(labels) == 3:
                    responses[(labels[0], labels[1], labels[2])] += int(value)
                elif name == _BUCKET and len(labels) == 3 and labels[2].isdigit():
                    index = int(labels[2])
                    if index < len(LATENCY_BUCKETS) + 1:
                        latency[(labels[0], labels[1])].counts[index] += int(value)
                elif name == _SUM and len(labels) == 2:
                    latency[(labels[0], labels[1])].total += value
        return Totals(dict(counts), dict(responses), dict(latency))
