"""What the operator measures: the error-rate gate (a Prometheus instant query through the
documented HTTP API, ``GET /api/v1/query``) and the operator's own Prometheus metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
REGISTRY_UP = Gauge("shopsense_operator_registry_up",
                    "1 if the last registry poll of the SentimentModel succeeded",
                    ["namespace", "name"], registry=REGISTRY)
ROLLOUT_STARTED = Gauge("shopsense_operator_rollout_started_timestamp_seconds",
                        "when the rollout in progress started (0: none in progress)",
                        ["namespace", "name"], registry=REGISTRY)
CANARY_WEIGHT = Gauge("shopsense_operator_canary_weight_percent", "canary traffic share",
                      ["namespace", "name"], registry=REGISTRY)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted SentimentModel's series."""
    for g in (SERVED, READY, CANARY_WEIGHT, REGISTRY_UP, ROLLOUT_STARTED):
        try:
            g.remove(namespace, name)
        except KeyError:
            pass


@dataclass(frozen=True)
class ErrorRate:
    """What the gate measured for one track over the window. ``rate`` is the share of 5xx
    answers among the ``/v1/`` requests, ``None`` when it could not be measured (``note``
    says why). The rollout decides with it; an unknown rate never promotes."""

    rate: float | None
    requests: float = 0.0
    errors: float = 0.0
    note: str | None = None


class ErrorRateGate:
    """The 5xx share of one track's requests over a window, from Prometheus (two instant
    queries: requests, and requests answered 5xx, in the window). Fails closed: no
    Prometheus, an unreachable one, an error answer or a malformed one gives an unknown rate,
    never 0."""

    def __init__(self, settings: OperatorSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(timeout=5.0, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _scalar(self, url: str, query: str) -> float:
        """The value of a one-sample vector; an empty vector is 0 (no such series)."""
        r = await self._client.get(url.rstrip("/") + "/api/v1/query", params={"query": query})
        body = r.json()
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise GateUnavailable(f"Prometheus answered HTTP {r.status_code}")
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") != "vector" or not isinstance(result, list):
            raise GateUnavailable("Prometheus answered something that is not a vector")
        if not result:
            return 0.0
        if len(result) != 1:
            raise GateUnavailable(f"the query returned {len(result)} series, not one")
        value = float(result[0]["value"][1])
        if math.isnan(value) or value < 0:
            raise GateUnavailable(f"the query returned {value}")
        return value

    async def measure(self, *, url: str | None, namespace: str, name: str, track: str,
                      version: str, window: str) -> ErrorRate:
        if not url:
            return ErrorRate(None, note="no Prometheus configured")
        fields = dict(namespace=namespace, name=name, track=track, version=version,
                      window=window)
        try:
            requests = await self._scalar(url, self.settings.requests_query.format(**fields))
            errors = await self._scalar(url, self.settings.errors_query.format(**fields))
        except GateUnavailable as exc:
            return ErrorRate(None, note=str(exc))
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            return ErrorRate(None, note=f"Prometheus unreachable or unreadable "
                             f"({type(exc).__name__})")
        if requests <= 0:
            return ErrorRate(None, 0.0, errors, note="no requests in the window")
        return ErrorRate(min(1.0, errors / requests), requests, errors)


class GateUnavailable(Exception):
    """Prometheus gave no usable answer."""
