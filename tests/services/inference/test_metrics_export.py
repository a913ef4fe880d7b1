"""The API's metrics leave each Ray Serve replica through Ray's per-node metrics agent (what
the chart's PodMonitor scrapes on every Ray pod), so each replica counts once: a real local Ray
instance with two replicas of a deployment that records through ``ApiMetrics``, and the
agent's Prometheus endpoint read back. The ``/metrics`` text of one replica knows only its own
requests, which is why scraping it through the Serve proxy miscounts."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from services.inference.metrics import RAY_PREFIX, RAY_SERVE_TAGS, ApiMetrics
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_outside_a_replica_nothing_goes_to_ray():
    m = ApiMetrics()
    assert m.export_to_ray is False
    m.requests.labels("/v1/sentiment", "200").inc()
    assert type(m.requests).__name__ == "Counter"


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[1]))
            out.append((labels, float(m[2])))
    return out


@pytest.fixture(scope="module")
def ray_with_metrics():
    ray = pytest.importorskip("ray")
    from ray import serve

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        yield port, serve
    finally:
        serve.shutdown()
        ray.shutdown()


def test_each_replica_is_exported_once_with_its_replica_tag(ray_with_metrics):
    port, serve = ray_with_metrics

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
    class Recorder:
        def __init__(self):
            self.metrics = ApiMetrics()
            self.count = 0

        def __call__(self, code: str) -> tuple[str, int, bool]:
            self.count += 1
            self.metrics.requests.labels("/v1/sentiment", code).inc()
            self.metrics.latency.labels("/v1/sentiment").observe(0.02)
            self.metrics.batch_size.observe(4)
            ctx = serve.get_replica_context()
            return ctx.replica_tag, self.count, self.metrics.export_to_ray

    handle = serve.run(Recorder.bind(), name="metrics-test", route_prefix=None)
    answers = [handle.remote("500" if i % 10 == 0 else "200").result(timeout_s=60)
               for i in range(40)]
    assert all(exported for _, _, exported in answers)
    per_replica: dict[str, int] = {}
    for tag, count, _ in answers:
        per_replica[tag] = max(per_replica.get(tag, 0), count)
    assert sum(per_replica.values()) == 40

    name = RAY_PREFIX + "shopsense_requests_total"
    deadline = time.monotonic() + 120
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        series = [(lab, v) for lab, v in _samples(text, name)
                  if lab.get("application") == "metrics-test"]
        if sum(v for _, v in series) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sum(v for _, v in series) == 40, text[-3000:]
    for labels, _ in series:
        assert set(RAY_SERVE_TAGS) | {"route", "code"} <= set(labels)
    by_replica: dict[str, float] = {}
    for labels, v in series:
        by_replica[labels["replica"]] = by_replica.get(labels["replica"], 0) + v
    # each replica's own count, once (the replica tag is Serve's full replica id)
    assert sorted(by_replica.values()) == sorted(float(c) for c in per_replica.values())
    errors = sum(v for lab, v in series if lab["code"] == "500")
    assert errors == 4
    assert _samples(text, RAY_PREFIX + "shopsense_request_duration_seconds_bucket")
    assert _samples(text, RAY_PREFIX + "shopsense_classifier_batch_size_count")
