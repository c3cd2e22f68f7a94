"""Prometheus metrics of one server (its own registry, so several apps can live in a process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServeMetrics:
    """Requests by endpoint and status, request latency, batch sizes and batch time, queue depth."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "softprompt_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "softprompt_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "softprompt_batch_rows",
            "Rows (input x prompt) per forward batch",
            buckets=ROW_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "softprompt_batch_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.rows = Counter("softprompt_rows", "Rows answered", registry=self.registry)
        self.queue = Gauge("softprompt_queue_rows", "Rows waiting for the model", registry=self.registry)
        self.prompts = Gauge("softprompt_prompts_loaded", "Prompts being served", registry=self.registry)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)
        self.rows.inc(rows)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
