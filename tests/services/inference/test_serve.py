"""The real service, started the way `make demo` starts it, on both engines: ``local`` (one
process on uvicorn, the default) and ``ray`` (the Ray Serve graph the chart deploys). Every
test runs against each: the same API code behind either."""

import asyncio
import os
import socket
import subprocess
import sys

import httpx
import pytest

from .conftest import png_b64

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def reviews_jsonl(data_dir, tmp_path_factory):
    from shopsense.data.loaders import load_set

    el = load_set("blitzer-electronics", data_dir)
    path = tmp_path_factory.mktemp("serve-reviews") / "reviews.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in el[:12] + el[-12:]))
    return path, el[:12] + el[-12:]


@pytest.fixture(scope="module", params=["local", "ray"])
def service(request, registered_model, home, reviews_jsonl, tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "SHOPSENSE_HOME": str(home), "SHOPSENSE_SERVE__MAX_BATCH_ITEMS": "16",
           "SHOPSENSE_SERVE__ENGINE": request.param,
           "SHOPSENSE_SERVE__MAX_BODY_BYTES": "2000000",
           "SHOPSENSE_RETRIEVAL__DIR": str(tmp_path_factory.mktemp("serve-index")),
           "SHOPSENSE_RETRIEVAL__TEXT_MAX_LENGTH": "128"}
    p = _cli("index", "--data", str(reviews_jsonl[0]), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    p = _cli("serve", "--background", "--port", str(port), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"ready: http://127.0.0.1:{port}" in p.stdout
    yield f"http://127.0.0.1:{port}", env
    stop = _cli("stop", env=env)
    assert stop.returncode == 0, stop.stderr


def test_serves_the_champion_from_the_registry(service, registered_model):
    url, _ = service
    r = httpx.post(f"{url}/v1/sentiment", json={"text": "Great phone"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == {"name": "shopsense-sentiment",
                                 "version": registered_model["version"],
                                 "uri": "models:/shopsense-sentiment@champion"}


def test_batch_endpoint_and_limits(service):
    url, _ = service
    items = [{"text": f"review {i}"} if i % 2 else {"image": png_b64()} for i in range(6)]
    r = httpx.post(f"{url}/v1/sentiment/batch", json={"items": items}, timeout=60)
    assert r.status_code == 200
    assert [x["modalities"] for x in r.json()["items"]] == [
        ["image"] if i % 2 == 0 else ["text"] for i in range(6)]
    r = httpx.post(f"{url}/v1/sentiment/batch", json={"items": [{"text": "x"}] * 17}, timeout=30)
    assert r.status_code == 413
    r = httpx.post(f"{url}/v1/sentiment", json={"image": "not base64!"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "InvalidImage"


def test_bad_text_is_a_422_and_its_neighbours_are_answered(service):
    """Issue 16 through Ray Serve's proxy: a lone surrogate among concurrent good requests."""
    url, _ = service

    async def burst():
        async with httpx.AsyncClient(timeout=60) as c:
            bad = c.post(f"{url}/v1/sentiment", content=b'{"text": "ok \\ud800 bad"}',
                         headers={"content-type": "application/json"})
            good = [c.post(f"{url}/v1/sentiment", json={"text": f"fine product {i}"})
                    for i in range(8)]
            return await asyncio.gather(bad, *good)

    bad, *good = asyncio.run(burst())
    assert bad.status_code == 422, bad.text
    body = bad.json()
    assert body["error"] == "InvalidInput" and "surrogate" in body["message"]
    assert body["request_id"] == bad.headers["x-request-id"]
    assert [g.status_code for g in good] == [200] * 8


def test_a_chunked_body_over_the_cap_is_413_through_serve(service):
    url, _ = service

    def chunks():
        for _ in range(30):
            yield b" " * 100_000  # 3 MB without a Content-Length, over the 2 MB cap

    r = httpx.post(f"{url}/v1/sentiment", content=chunks(), timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    big = b'{"items": [' + b",".join([b"{}"] * 300_000) + b"]}"
    r = httpx.post(f"{url}/v1/sentiment/batch", content=big, timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit is 16" in r.json()["message"]


def test_concurrent_requests_are_batched(service):
    url, _ = service

    async def burst():
        async with httpx.AsyncClient(timeout=60) as c:
            rs = await asyncio.gather(*(c.post(f"{url}/v1/sentiment",
                                               json={"text": f"fine product number {i}"})
                                        for i in range(48)))
        return rs

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    # At least one forward pass carried more than one request.
    count_le1 = total = None
    for line in metrics.splitlines():
        if line.startswith('shopsense_classifier_batch_size_bucket{le="1.0"}'):
            count_le1 = float(line.split()[-1])
        if line.startswith("shopsense_classifier_batch_size_count"):
            total = float(line.split()[-1])
    assert total and count_le1 is not None and count_le1 < total


def test_demo_command_prints_answers(service):
    url, env = service
    p = _cli("demo", "--url", url, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "photo only" in p.stdout and "batch of 3" in p.stdout


def test_search_and_similar_reviews_over_http(service, reviews_jsonl):
    url, _ = service
    _, reviews = reviews_jsonl
    target = reviews[5]
    r = httpx.post(f"{url}/v1/search", json={"query": target.text, "k": 4}, timeout=30)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 4 and hits[0]["id"] == target.id
    assert set(hits[0]["scores"]) == {"dense", "sparse"}
    r = httpx.post(f"{url}/v1/search", json={"query": "x", "filters": {"size": 1}}, timeout=30)
    assert r.status_code == 422 and "size" in r.json()["message"]
    r = httpx.post(f"{url}/v1/search", json={"query": "x", "mode": "sparse",
                                             "filters": {"rating": {"gte": 5, "lte": 1}}},
                   timeout=30)
    assert r.status_code == 422 and "rating" in r.json()["message"]
    r = httpx.post(f"{url}/v1/sentiment", json={"text": target.text, "similar_k": 2}, timeout=30)
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["similar"]][:1] == [target.id]
    assert len(r.json()["similar"]) == 2


def test_indexing_while_serving_is_refused_in_one_line(service, reviews_jsonl):
    _, env = service
    p = _cli("index", "--data", str(reviews_jsonl[0]), env=env)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in p.stderr


def test_search_command_asks_the_running_service(service, reviews_jsonl):
    url, env = service
    _, reviews = reviews_jsonl
    p = _cli("search", reviews[7].text[:300], "--url", url, "--k", "2", "--label",
             reviews[7].label, "--json", env=env)
    assert p.returncode == 0, p.stderr
    import json

    out = json.loads(p.stdout)
    assert out["hits"][0]["id"] == reviews[7].id and len(out["hits"]) == 2
    p = _cli("search", "cable", "--url", url, "--k", "500", env=env)
    assert p.returncode == 2 and "HTTP 422" in p.stderr and "Traceback" not in p.stderr
