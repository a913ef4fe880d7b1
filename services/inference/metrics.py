"""Prometheus metrics of the inference API (text exposition at ``/metrics``).

Names follow Prometheus conventions: ``_total`` for counters, base units (seconds) in names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class ApiMetrics:
    """One set of metrics per API instance, in its own registry (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shopsense_requests_total", "HTTP requests by route and status code",
            ["route", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "shopsense_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "shopsense_predictions_total", "Predicted labels by label and modalities",
            ["label", "modalities"], registry=self.registry,
        )
        self.errors = Counter(
            "shopsense_request_errors_total", "Rejected or failed requests by error type",
            ["route", "error"], registry=self.registry,
        )
        self.batch_size = Histogram(
            "shopsense_classifier_batch_size", "Items per classifier forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry,
        )
        self.retrieval_failures = Counter(
            "shopsense_retrieval_failures_total",
            "Retrieval calls that failed, by operation (similar, search) and error type",
            ["operation", "error"], registry=self.registry,
        )
        self.model_info = Gauge(
            "shopsense_model_info", "The model version in service (value 1)",
            ["name", "version", "backend"], registry=self.registry,
        )
