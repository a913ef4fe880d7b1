"""Prometheus metrics of the data pipeline's quality gate (``pipelines/validate``).

The pipeline's ``validate-reviews`` step (:func:`pipelines.steps.validate_reviews`) produces
them; the Grafana dashboard ("shopsense data quality", ``charts/shopsense/dashboards/``) reads
them:

- ``shopsense_validation_samples_total{dataset, category, outcome="kept"|"rejected"}``:
  samples the quality gate kept or rejected in a run;
- ``shopsense_validation_discriminator_auc{dataset, category}``: ROC AUC of the adversarial
  discriminator that tells synthetic samples from real ones (0.5 = indistinguishable, the
  goal; near 1.0 = the synthetic data is easy to tell apart);
- ``shopsense_validation_last_success_timestamp_seconds{dataset}``: when a run last finished.

A pipeline step is a batch job, not a server Prometheus can scrape, so ``PipelineMetrics``
hands its values over at the end of a run: ``push(gateway)`` to a Prometheus Pushgateway
(grouped by ``job`` and ``dataset``: each run replaces the previous run's values), or
``write_textfile(path)`` for node-exporter's textfile collector. Usage::

    m = PipelineMetrics(dataset="electronics-v3")
    m.record_samples("electronics", kept=812, rejected=188)
    m.record_discriminator_auc("electronics", 0.57)
    m.finish()                      # stamps the last-success time
    m.push("pushgateway.monitoring:9091")   # or m.write_textfile("/var/lib/node/x.prom")
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest, push_to_gateway

JOB = "shopsense-validate"
OUTCOMES = ("kept", "rejected")


class PipelineMetrics:
    """The quality gate's metrics for one run, in their own registry."""

    def __init__(self, dataset: str, job: str = JOB) -> None:
        self.dataset = dataset
        self.job = job
        self.registry = CollectorRegistry()
        self.samples = Counter(
            "shopsense_validation_samples_total",
            "Samples the data-quality gate kept or rejected, by dataset, category and outcome",
            ["dataset", "category", "outcome"], registry=self.registry,
        )
        self.discriminator_auc = Gauge(
            "shopsense_validation_discriminator_auc",
            "ROC AUC of the real-vs-synthetic discriminator (0.5 = indistinguishable)",
            ["dataset", "category"], registry=self.registry,
        )
        self.last_success = Gauge(
            "shopsense_validation_last_success_timestamp_seconds",
            "Unix time the data-quality gate last finished a run",
            ["dataset"], registry=self.registry,
        )

    def record_samples(self, category: str, *, kept: int = 0, rejected: int = 0) -> None:
        if kept < 0 or rejected < 0:
            raise ValueError("sample counts cannot be negative")
        self.samples.labels(self.dataset, category, "kept").inc(kept)
        self.samples.labels(self.dataset, category, "rejected").inc(rejected)

    def record_discriminator_auc(self, category: str, auc: float) -> None:
        if not 0.0 <= auc <= 1.0:
            raise ValueError(f"an AUC lies in [0, 1], not {auc}")
        self.discriminator_auc.labels(self.dataset, category).set(auc)

    def finish(self, when: float | None = None) -> None:
        self.last_success.labels(self.dataset).set(time.time() if when is None else when)

    def exposition(self) -> bytes:
        """The Prometheus text format of this run's metrics."""
        return generate_latest(self.registry)

    def push(self, gateway: str, timeout: float = 10.0) -> None:
        """PUT this run's metrics to a Pushgateway (replacing the group ``job``/``dataset``)."""
        push_to_gateway(gateway, job=self.job, registry=self.registry,
                        grouping_key={"dataset": self.dataset}, timeout=timeout)

    def write_textfile(self, path: str | os.PathLike) -> Path:
        """Write the metrics for node-exporter's textfile collector, atomically (a temporary
        file in the same folder, then a rename), as that collector requires."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.exposition())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
