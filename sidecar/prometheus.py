"""The sidecar's own metrics in Prometheus' text format at `/_trackside/metrics`.

Counters come from the pipeline's plain counters (`trackside.metrics.Metrics`), read at scrape
time, so the request path pays for one dict increment (and one store into the process's counter
file), not for a Prometheus object. Under `trackside serve --workers N` whichever process answers
a scrape adds up every server process's counters (`trackside.metric_files`): one scrape is the
whole sidecar, and a counter never goes back while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from trackside.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Counter name in Metrics -> (Prometheus name, help).
COUNTERS = {
    "requests": ("trackside_requests", "Requests proxied"),
    "events_captured": ("trackside_events_captured", "Events captured into the buffer"),
    "events_written": ("trackside_events_written", "Events handed to the database or the queue"),
    "events_spooled": ("trackside_events_spooled", "Events written to the spool because storage or Redis was away"),
    "events_dropped": ("trackside_events_dropped", "Events dropped: the buffer was full or the spool unwritable"),
    "batches_replayed": ("trackside_batches_replayed", "Spooled batches replayed"),
    "bot_hits": ("trackside_bot_hits", "Bot requests, kept as counters only"),
    "upstream_unreachable": ("trackside_upstream_unreachable", "502 answers: the upstream could not be reached"),
    "upstream_timeout": ("trackside_upstream_timeout", "504 answers: the upstream was too slow"),
    "capture_failed": ("trackside_capture_failed", "Requests whose event could not be built (a bug)"),
    "events_lost_unclean_shutdown": (
        "trackside_events_lost_unclean_shutdown",
        "Events captured by an earlier process that was killed before it could flush them",
    ),
    "upstream_busy": ("trackside_upstream_busy", "503 answers: no upstream connection came free in time"),
    "upstream_broken_stream": ("trackside_upstream_broken_stream", "Answers cut off: the upstream broke mid-body"),
    "beacons": ("trackside_beacons", "Beacons recorded with a valid page token"),
    "events_excluded": (
        "trackside_events_excluded",
        "Requests and beacons of internal traffic (TRACKSIDE_EXCLUDE_ADDRESSES, TRACKSIDE_EXCLUDE_USERS), never stored",
    ),
    "beacons_unverified": (
        "trackside_beacons_unverified",
        "Beacons recorded without a valid page token (they count if the proxy saw the visitor)",
    ),
}


class SidecarCollector(Collector):
    def __init__(self, metrics: Metrics, gauges: Callable[[], dict[str, float]]) -> None:
        self.metrics = metrics
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        totals = self.metrics.totals()
        counts = totals.counts
        for key, (name, help_text) in COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=counts.get(key, 0))
        skipped = CounterMetricFamily("trackside_skipped", "Requests kept as no event, by reason", labels=["reason"])
        for key, value in sorted(counts.items()):
            if key.startswith("skipped_"):
                skipped.add_metric([key[len("skipped_") :]], value)
        yield skipped
        responses = CounterMetricFamily(
            "trackside_upstream_responses",
            "Upstream answers by route prefix, upstream and status class",
            labels=["route", "upstream", "status"],
        )
        for (route, upstream, status), value in sorted(totals.responses.items()):
            responses.add_metric([route, upstream, status], value)
        yield responses
        for gauge, level in self.gauges().items():
            yield GaugeMetricFamily("trackside_" + gauge, gauge.replace("_", " "), value=level)
        latency = HistogramMetricFamily(
            "trackside_upstream_seconds",
            "Time to the upstream's response headers, by route prefix and upstream",
            labels=["route", "upstream"],
        )
        for (route, upstream), histogram in sorted(totals.latency.items()):
            buckets, total, _ = histogram.cumulative()
            latency.add_metric([route, upstream], buckets, sum_value=total)
        yield latency


def render(collector: SidecarCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
