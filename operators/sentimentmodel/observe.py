"""What the operator measures: the error-rate gate (a Prometheus instant query through the
documented HTTP API, ``GET /api/v1/query``) and the operator's own Prometheus metrics."""

from __future__ import annotations

import math

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from operators.sentimentmodel.settings import OperatorSettings

REGISTRY = CollectorRegistry(auto_describe=True)
RECONCILES = Counter("shopsense_operator_reconciles_total", "handler runs",
                     ["handler", "outcome"], registry=REGISTRY)
REGISTRY_POLLS = Counter("shopsense_operator_registry_polls_total", "registry polls",
                         ["outcome"], registry=REGISTRY)
ROLLOUTS = Counter("shopsense_operator_rollouts_total", "finished rollouts",
                   ["strategy", "result"], registry=REGISTRY)
APPLIES = Counter("shopsense_operator_object_writes_total", "child object writes",
                  ["kind", "action"], registry=REGISTRY)
SERVED = Gauge("shopsense_operator_served_version", "model version serving stable traffic",
               ["namespace", "name"], registry=REGISTRY)
READY = Gauge("shopsense_operator_ready", "1 if the SentimentModel is Ready",
              ["namespace", "name"], registry=REGISTRY)
CANARY_WEIGHT = Gauge("shopsense_operator_canary_weight_percent", "canary traffic share",
                      ["namespace", "name"], registry=REGISTRY)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted SentimentModel's series."""
    for g in (SERVED, READY, CANARY_WEIGHT):
        try:
            g.remove(namespace, name)
        except KeyError:
            pass


class ErrorRateGate:
    """``error rate = errors / requests`` of one track over a window, from Prometheus."""

    def __init__(self, settings: OperatorSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(timeout=5.0, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def measure(self, *, url: str | None, namespace: str, name: str, track: str,
                      version: str, window: str) -> tuple[float | None, str | None]:
        """(rate, None), or (None, why not measured). No data means no traffic yet: 0."""
        if not url:
            return None, "(error-rate gate skipped: no Prometheus configured)"
        query = self.settings.error_rate_query.format(namespace=namespace, name=name,
                                                      track=track, version=version,
                                                      window=window)
        try:
            r = await self._client.get(url.rstrip("/") + "/api/v1/query",
                                       params={"query": query})
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"(error-rate gate skipped: Prometheus unreachable: {exc})"
        if r.status_code != 200 or body.get("status") != "success":
            return None, f"(error-rate gate skipped: Prometheus said {body.get('error', r.text)})"
        result = (body.get("data") or {}).get("result") or []
        if not result:
            return 0.0, None
        value = float(result[0]["value"][1])
        return (0.0 if math.isnan(value) else value), None
