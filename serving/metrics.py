"""Prometheus metrics of the serving process (exposed at `/metrics`).

Module-level singletons on purpose: prometheus_client registers each metric name once per
process, and every part of the server (routes, cache, loader) reports into the same series.

With `recsys serve --workers N` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start (prometheus_client's multiprocess mode): every worker writes its series to files
there, and `/metrics`, whichever worker answers it, reports counters and histograms summed over
all workers, gauges as each declares (`multiprocess_mode`), and the cache hit ratio computed from
the summed counters.
"""
from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_LATENCY = Histogram("recsys_http_request_duration_seconds", "Request latency by route template",
                            ["method", "route", "status"], buckets=_LATENCY_BUCKETS)
FEED_LATENCY = Histogram("recsys_feed_duration_seconds", "Server-side feed latency by cache outcome",
                         ["cache"], buckets=_LATENCY_BUCKETS)
CACHE_LOOKUPS = Counter("recsys_cache_lookups_total", "Feed cache lookups by result (hit, miss, coalesced, error)",
                        ["result"])
FEED_COMPUTATIONS = Counter("recsys_feed_computations_total", "Feeds computed (cache misses that ran the model)",
                            ["variant"])
TOWER_CALLS = Counter("recsys_user_tower_calls_total", "User-tower calls of feed misses (one per micro-batch)")
TOWER_VECTORS = Counter("recsys_user_tower_vectors_total", "User vectors those calls computed (vectors / calls = mean batch)")
INDEX_SIZE = Gauge("recsys_index_items", "Items in the nearest-neighbour index", ["variant", "model_version", "kind"],
                   multiprocess_mode="livemax")
MODEL_SWITCHES = Counter("recsys_model_switches_total", "Model version switches by outcome", ["outcome"])
EVENTS = Counter("recsys_events_total", "Ingested events by outcome (accepted, duplicate)", ["outcome"])
EXPOSURES = Counter("recsys_exposures_total", "Feeds served and logged as exposures", ["variant"])
REDIS_UP = Gauge("recsys_redis_up", "1 when the last Redis call succeeded (workers: 1 only when every worker's did)",
                 multiprocess_mode="livemin")
EVENTS_FLUSHED = Counter("recsys_events_flushed_total", "Accepted events written to the offline Parquet store")
EVENT_FLUSH_ERRORS = Counter("recsys_event_flush_errors_total", "Failed flusher rounds (Redis or disk), retried")


def _hit_ratio() -> float:
    hits = CACHE_LOOKUPS.labels("hit")._value.get() + CACHE_LOOKUPS.labels("coalesced")._value.get()
    misses = CACHE_LOOKUPS.labels("miss")._value.get()
    return hits / (hits + misses) if hits + misses else 0.0


# Kept for dashboards that read it; a ratio over a window is rate(hit) / rate(hit + miss) of the counter.
_HIT_RATIO_HELP = "Share of feed lookups answered from the cache (since start)"
if not MULTIPROCESS:  # workers: computed at scrape time from the summed counters (`metrics_text`)
    CACHE_HIT_RATIO = Gauge("recsys_cache_hit_ratio", _HIT_RATIO_HELP)
    CACHE_HIT_RATIO.set_function(_hit_ratio)
MODEL_INFO = Gauge("recsys_model_info", "1 for the model version each A/B variant serves (info-style gauge)",
                   ["variant", "model_version", "dataset"], multiprocess_mode="livemax")


def _replace_variant_series(gauge: Gauge, variant: str) -> None:
    for labels in list(gauge._metrics):
        if labels[0] == variant:
            if MULTIPROCESS:  # the series stays in this worker's file: it reads 0 once every worker switched
                gauge.labels(*labels).set(0)
            gauge.remove(*labels)


class _HitRatioOfAllWorkers:
    """`recsys_cache_hit_ratio` from the lookups counter summed over the workers."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        counts = {"hit": 0.0, "coalesced": 0.0, "miss": 0.0}
        for family in self.registry.collect():
            if family.name == "recsys_cache_lookups":
                for sample in family.samples:
                    if sample.name.endswith("_total") and sample.labels.get("result") in counts:
                        counts[sample.labels["result"]] += sample.value
        hits, total = counts["hit"] + counts["coalesced"], counts["hit"] + counts["coalesced"] + counts["miss"]
        yield GaugeMetricFamily("recsys_cache_hit_ratio", _HIT_RATIO_HELP, value=hits / total if total else 0.0)


def metrics_text() -> tuple[bytes, str]:
    """The `/metrics` body and content type: this process's series, or every worker's aggregated."""
    if not MULTIPROCESS:
        return generate_latest(), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess  # noqa: PLC0415

    workers = CollectorRegistry()
    multiprocess.MultiProcessCollector(workers)
    return generate_latest(workers) + generate_latest(_registry_of(_HitRatioOfAllWorkers(workers))), CONTENT_TYPE_LATEST


def _registry_of(collector: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def worker_exited(pid: int) -> None:
    """Drop a stopped worker's live gauges (its counters keep counting in the sums)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(pid)


def set_index_size(variant: str, model_version: str, kind: str, n_items: int, dataset: str = "") -> None:
    """Replace the variant's index-size and model-info series (the old version's labels must not linger)."""
    _replace_variant_series(INDEX_SIZE, variant)
    INDEX_SIZE.labels(variant, model_version, kind).set(n_items)
    _replace_variant_series(MODEL_INFO, variant)
    MODEL_INFO.labels(variant, model_version, dataset).set(1)


ROUTE_TEMPLATE_KEY = "recsys.route_template"  # scope key: the route template of a request answered outside FastAPI


class LatencyMiddleware:
    """Pure ASGI middleware timing every request, labelled by route template (not raw path,
    which would explode the series count with user ids)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")  # set by FastAPI's routing; the feed's fast path names its template instead
            template = scope.get(ROUTE_TEMPLATE_KEY) or getattr(route, "path", None) or "unmatched"
            REQUEST_LATENCY.labels(scope["method"], template, str(status["code"])).observe(time.perf_counter() - started)
