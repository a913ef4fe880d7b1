"""Prometheus metrics of the inference API (text exposition at ``/metrics``), and the replica's
in-memory ring buffer of recent predictions (``GET /v1/predictions/recent``, the page's chart).

Inside a Ray Serve replica every metric is also recorded as a Ray Serve metric of the same
name (``ray.serve.metrics``), which Ray's metrics agent on each node exports as ``ray_<name>``
with the replica's ``deployment``, ``replica`` and ``application`` tags. That is what a cluster
scrapes (port ``metrics`` of every Ray pod): each replica is reported once, by the node it runs
on. ``/metrics`` answers for whichever replica the Serve proxy picked, so scraping it through
the proxy counts some replicas several times and others never; it stays for the embedded demo.

Names follow Prometheus conventions: ``_total`` for counters, base units (seconds) in names.
Label values are bounded: ``route`` is the matched route template (``unmatched`` for a path no
route serves), and the ``category`` of ``shopsense_predictions_total`` goes through
``CategoryLabels`` (at most ``max_categories`` distinct values per replica, then ``other``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

# Metric label values for a prediction's product category.
CATEGORY_UNKNOWN = "unknown"  # the request named no category
CATEGORY_OTHER = "other"  # malformed, over-long, or past the per-replica cap
CATEGORY_LABEL_RE = re.compile(r"^\w[\w.&+-]{0,31}$")
MAX_METRIC_CATEGORIES = 32


def normalize_category(value: str | None) -> str | None:
    """The canonical form of a request's category: trimmed, lower case, inner runs of spaces
    as one ``-`` ("Home & Kitchen " -> "home-&-kitchen"). ``None`` for none or blank."""
    if value is None:
        return None
    norm = "-".join(value.strip().lower().split())
    return norm or None


class CategoryLabels:
    """Bounded ``category`` label values for Prometheus.

    A category becomes its own label value if, after ``normalize_category``, it has at most 32
    characters, starts with a letter or digit and holds only those and ``_ . & + -``, and fewer than ``max_categories`` distinct
    values were admitted on this replica; anything else is ``other``, and a prediction without
    a category is ``unknown``. So one replica exports at most ``max_categories + 2`` values.
    """

    def __init__(self, max_categories: int = MAX_METRIC_CATEGORIES) -> None:
        self.max_categories = max_categories
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, category: str | None) -> str:
        norm = normalize_category(category)
        if norm is None:
            return CATEGORY_UNKNOWN
        if norm in (CATEGORY_UNKNOWN, CATEGORY_OTHER):
            return norm
        if not CATEGORY_LABEL_RE.match(norm):
            return CATEGORY_OTHER
        with self._lock:
            if norm in self._admitted:
                return norm
            if len(self._admitted) >= self.max_categories:
                return CATEGORY_OTHER
            self._admitted.add(norm)
            return norm


#: Prefix Ray's metrics agent puts before every application metric it exports.
RAY_PREFIX = "ray_"
#: Tags Ray Serve adds to the metrics of a replica.
RAY_SERVE_TAGS = ("deployment", "replica", "application")


def in_serve_replica() -> bool:
    """Whether this code runs inside a Ray Serve replica."""
    try:
        from ray import serve
        from ray.serve.exceptions import RayServeException
    except ImportError:
        return False
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


class _RayChild:
    """One labelled series: records into the prometheus_client child and the Ray metric."""

    __slots__ = ("_child", "_ray", "_tags")

    def __init__(self, child, ray_metric, tags: dict[str, str]) -> None:
        self._child, self._ray, self._tags = child, ray_metric, tags

    def inc(self, amount: float = 1) -> None:
        self._child.inc(amount)
        self._ray.inc(amount, tags=dict(self._tags))

    def observe(self, amount: float) -> None:
        self._child.observe(amount)
        self._ray.observe(amount, tags=dict(self._tags))

    def set(self, value: float) -> None:
        self._child.set(value)
        self._ray.set(value, tags=dict(self._tags))


class RayExported:
    """A prometheus_client metric that also records every value into a Ray Serve metric of the
    same name (same labels, same buckets). Anything else is the wrapped metric's."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        from ray.serve import metrics as serve_metrics

        self._metric = metric
        name, doc, keys = metric._name, metric._documentation, tuple(metric._labelnames)
        if isinstance(metric, Counter):
            self._ray = serve_metrics.Counter(name, description=doc, tag_keys=keys or None)
        elif isinstance(metric, Histogram):
            bounds = [b for b in metric._upper_bounds if b != float("inf")]
            self._ray = serve_metrics.Histogram(name, description=doc, boundaries=bounds,
                                                tag_keys=keys or None)
        elif isinstance(metric, Gauge):
            self._ray = serve_metrics.Gauge(name, description=doc, tag_keys=keys or None)
        else:  # pragma: no cover - ApiMetrics defines only these three kinds
            raise TypeError(f"cannot export {type(metric).__name__} through Ray")

    def labels(self, *values: str, **labelkw: str) -> _RayChild:
        child = self._metric.labels(*values, **labelkw)
        tags = labelkw or dict(zip(self._metric._labelnames, values))
        return _RayChild(child, self._ray, {k: str(v) for k, v in tags.items()})

    def inc(self, amount: float = 1) -> None:
        _RayChild(self._metric, self._ray, {}).inc(amount)

    def observe(self, amount: float) -> None:
        _RayChild(self._metric, self._ray, {}).observe(amount)

    def set(self, value: float) -> None:
        _RayChild(self._metric, self._ray, {}).set(value)

    def __getattr__(self, name: str):
        return getattr(self._metric, name)


class ApiMetrics:
    """One set of metrics per API instance, in its own registry (no global state).

    Every metric assigned as an attribute is recorded the same way whether or not it is
    exported through Ray: with ``export_to_ray`` (default: when running inside a Ray Serve
    replica) each one is wrapped in :class:`RayExported` as it is assigned."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, MetricWrapperBase) and self.__dict__.get("export_to_ray"):
            value = RayExported(value)
        super().__setattr__(name, value)

    def __init__(self, max_categories: int = MAX_METRIC_CATEGORIES, *,
                 export_to_ray: bool | None = None) -> None:
        self.export_to_ray = in_serve_replica() if export_to_ray is None else export_to_ray
        self.registry = CollectorRegistry()
        self.category_label = CategoryLabels(max_categories)
        self.requests = Counter(
            "shopsense_requests_total", "HTTP requests by route and status code",
            ["route", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "shopsense_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "shopsense_predictions_total",
            "Predicted labels by label, modalities and product category (bounded: 'unknown' "
            "without one, 'other' past the per-replica cap)",
            ["label", "modalities", "category"], registry=self.registry,
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
        self.rejected = Counter(
            "shopsense_rejected_requests_total",
            "Requests answered with an error, by reason (unauthorized, rate_limited, "
            "overloaded, too_large, invalid_input, deadline, ...) and API key name ('anonymous' "
            "with auth off, 'unknown' for a missing or wrong key; never the key itself)",
            ["reason", "key"], registry=self.registry,
        )
        self.key_requests = Counter(
            "shopsense_key_requests_total", "/v1/ requests by API key name and status code",
            ["key", "code"], registry=self.registry,
        )
        self.similar_skipped = Counter(
            "shopsense_similar_skipped_total",
            "Predictions answered without similar reviews because the lookup ran out of its "
            "time budget or failed, by reason", ["reason"], registry=self.registry,
        )
        self.model_info = Gauge(
            "shopsense_model_info", "The model version in service (value 1)",
            ["name", "version", "backend"], registry=self.registry,
        )


@dataclass(frozen=True, slots=True)
class RecentPrediction:
    """One entry of the ring buffer (no review text or photo is kept)."""

    ts: float  # unix seconds
    category: str | None  # normalize_category of the request's category
    product: str | None
    label: str
    modalities: tuple[str, ...]
    model_version: str | None


class RecentPredictions:
    """A bounded, in-memory ring buffer of this replica's latest predictions (the oldest fall
    out past ``capacity``). Per replica: with several ingress replicas each answers for its own.
    """

    def __init__(self, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.clock = clock
        self._items: deque[RecentPrediction] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, *, category: str | None, product: str | None, label: str,
            modalities: Iterable[str], model_version: str | None) -> None:
        item = RecentPrediction(self.clock(), normalize_category(category), product, label,
                                tuple(modalities), model_version)
        with self._lock:
            self._items.append(item)

    def since(self, start: float) -> list[RecentPrediction]:
        with self._lock:
            items = list(self._items)
        return [i for i in items if i.ts >= start]

    def summary(self, minutes: int, bucket_seconds: int, category: str | None = None,
                top: int = 8, latest: int = 20) -> dict:
        """Counts per time bucket and category over the last ``minutes``: the ``top`` busiest
        categories by name, the rest summed as ``other``; totals per category and label; the
        ``latest`` predictions, newest first."""
        now = self.clock()
        n_buckets = max(1, -(-minutes * 60 // bucket_seconds))
        # Buckets end at "now" rounded up to a bucket boundary, so that they stay put between
        # refreshes of the chart.
        end = (int(now) // bucket_seconds + 1) * bucket_seconds
        start = end - n_buckets * bucket_seconds
        want = normalize_category(category)
        items = [i for i in self.since(start)
                 if want is None or (i.category or CATEGORY_UNKNOWN) == want]
        per_cat = Tally(i.category or CATEGORY_UNKNOWN for i in items)
        keep = {c for c, _ in sorted(per_cat.items(), key=lambda kv: (-kv[1], kv[0]))[:top]}

        def shown(i: RecentPrediction) -> str:
            c = i.category or CATEGORY_UNKNOWN
            return c if c in keep else CATEGORY_OTHER

        categories = sorted({shown(i) for i in items})
        counts = {c: [0] * n_buckets for c in categories}
        totals = {c: {"negative": 0, "neutral": 0, "positive": 0} for c in categories}
        for i in items:
            b = min(n_buckets - 1, int((i.ts - start) // bucket_seconds))
            c = shown(i)
            counts[c][b] += 1
            if i.label in totals[c]:
                totals[c][i.label] += 1
        return {
            "now": now,
            "start": start,
            "end": end,
            "minutes": minutes,
            "bucket_seconds": bucket_seconds,
            "bucket_starts": [start + k * bucket_seconds for k in range(n_buckets)],
            "count": len(items),
            "capacity": self.capacity,
            "buffered": len(self),
            "categories": categories,
            "series": [{"category": c, "counts": counts[c]} for c in categories],
            "totals": [{"category": c, **totals[c], "total": sum(totals[c].values())}
                       for c in categories],
            "latest": [{"ts": i.ts, "category": i.category, "product": i.product,
                        "label": i.label, "modalities": list(i.modalities),
                        "model_version": i.model_version}
                       for i in items[::-1][:latest]],  # newest first
        }
