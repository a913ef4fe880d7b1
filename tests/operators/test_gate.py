"""The error-rate gate's Prometheus side: two instant queries in Prometheus' documented
``/api/v1/query`` format (answered by an httpx MockTransport); 5xx only, and every way of not
knowing is "unknown", never 0."""

from __future__ import annotations

import httpx
import pytest

from operators.sentimentmodel.observe import ErrorRateGate
from operators.sentimentmodel.settings import OperatorSettings




def vector(value):
    return {"status": "success", "data": {"resultType": "vector", "result": (
        [] if value is None else [{"metric": {}, "value": [1.7e9, str(value)]}])}}


async def measure(handler, url="http://prom:9090"):
    gate = ErrorRateGate(OperatorSettings(metrics_port=0), transport=httpx.MockTransport(handler))
    try:
        return await gate.measure(url=url, namespace="shop", name="reviews", track="canary",
                                  version="4", window="2m")
    finally:
        await gate.aclose()


def test_the_queries_count_5xx_of_v1_routes_of_one_track():
    cfg = OperatorSettings(metrics_port=0)
    fields = dict(namespace="shop", name="reviews", track="canary", version="4", window="2m")
    req, err = cfg.requests_query.format(**fields), cfg.errors_query.format(**fields)
    for q in (req, err):
        assert q.startswith("sum(increase(ray_shopsense_requests_total{")
        assert 'shopsense_io_track="canary"' in q and 'route=~"/v1/.*"' in q and "[2m]" in q
    assert 'code=~"5.."' in err and "code" not in req
    assert ">= 400" not in err and 'code=~"4' not in err


@pytest.mark.asyncio
async def test_a_measured_rate():
    seen = []

    def handler(request):
        q = request.url.params["query"]
        seen.append(q)
        return httpx.Response(200, json=vector(7 if 'code=~"5.."' in q else 350))

    r = await measure(handler)
    assert (r.rate, r.requests, r.errors, r.note) == (0.02, 350.0, 7.0, None)
    assert len(seen) == 2


@pytest.mark.asyncio
async def test_no_5xx_series_with_traffic_is_zero_but_no_traffic_is_unknown():
    r = await measure(lambda req: httpx.Response(200, json=vector(
        None if 'code=~"5.."' in req.url.params["query"] else 200)))
    assert r.rate == 0.0 and r.requests == 200
    r = await measure(lambda req: httpx.Response(200, json=vector(None)))
    assert r.rate is None and "no requests" in r.note


@pytest.mark.parametrize("handler", [
    lambda req: httpx.Response(503, text="overloaded"),
    lambda req: httpx.Response(200, json={"status": "error", "error": "parse error"}),
    lambda req: httpx.Response(200, text="<html>not prometheus</html>"),
    lambda req: httpx.Response(200, json={"status": "success", "data": {
        "resultType": "matrix", "result": []}}),
    lambda req: httpx.Response(200, json={"status": "success", "data": {
        "resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}}),
    lambda req: httpx.Response(200, json=vector("NaN")),
])
@pytest.mark.asyncio
async def test_bad_answers_are_unknown(handler):
    r = await measure(handler)
    assert r.rate is None and r.note


@pytest.mark.asyncio
async def test_unreachable_or_unconfigured_prometheus_is_unknown():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    r = await measure(refuse)
    assert r.rate is None and "unreachable" in r.note
    r = await measure(refuse, url=None)
    assert r.rate is None and r.note == "no Prometheus configured"
