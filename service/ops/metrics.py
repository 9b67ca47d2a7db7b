"""Prometheus metrics, in a registry owned by one app (two apps in one test process never collide).

With ``workers > 1``, ``python -m service`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before
the workers start: prometheus-client then keeps every process's values in files there, and a scrape of
any worker answers the sum over all of them (gauges: the sum over the live workers).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """prometheus-client picks its multiprocess value store by this variable when it is imported; the
    rendering must follow the same choice."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServiceMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry
        self.requests = Counter(
            "sd_http_requests", "HTTP requests answered, by route template and status", ["route", "method", "status"],
            registry=r,
        )
        self.in_flight = Gauge("sd_http_requests_in_flight", "HTTP requests being answered now", registry=r,
                               multiprocess_mode="livesum")
        self.grpc_requests = Counter(
            "sd_grpc_requests", "gRPC calls answered, by method and status code", ["method", "code"], registry=r
        )
        self.request_seconds = Histogram(
            "sd_http_request_seconds", "Time from request start to response start", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_seconds = Histogram(
            "sd_queue_seconds", "Time a request waited before its batch ran", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inference_seconds = Histogram(
            "sd_inference_seconds", "Time of one runtime call (one batch)", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_texts = Histogram(
            "sd_batch_texts", "Texts per runtime call", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "sd_batch_requests", "Requests per runtime call", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("sd_queue_depth", "Requests waiting in a model's queue", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        self.rejected = Counter(
            "sd_rejected", "Requests not run: queue_full, deadline, client_gone", ["model", "reason"], registry=r
        )
        self.cascade_texts = Counter(
            "sd_cascade_texts", "Texts answered by the cascade route, by student and by the model that answered",
            ["model", "answered_by"], registry=r,
        )
        self.model_info = Gauge(
            "sd_model_info", "Loaded models (value 1)", ["model", "kind", "device"], registry=r,
            multiprocess_mode="livemax",
        )

    def for_model(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiprocess_dir)
        return generate_latest(combined)

    def process_exit(self) -> None:
        """This worker's live gauges stop counting (called when its app shuts down)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


class ModelObserver:
    """The batcher's view of the metrics for one model (implements ``batcher.BatchObserver``)."""

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        self._depth = metrics.queue_depth.labels(model)
        self._queue = metrics.queue_seconds.labels(model)
        self._inference = metrics.inference_seconds.labels(model)
        self._texts = metrics.batch_texts.labels(model)
        self._requests = metrics.batch_requests.labels(model)
        self._rejected = metrics.rejected
        self._model = model

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self._model, reason).inc()

    def batch_done(self, texts: int, requests: int, inference_s: float, queue_s: list[float]) -> None:
        self._inference.observe(inference_s)
        self._texts.observe(texts)
        self._requests.observe(requests)
        for waited in queue_s:
            self._queue.observe(waited)
