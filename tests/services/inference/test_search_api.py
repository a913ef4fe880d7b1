"""``/v1/search`` and the ``similar`` reviews of ``/v1/sentiment``, in-process: the real API, the
real torch backend and a real HybridRetriever (Qdrant local mode + tantivy) over real reviews."""

import pytest
from fastapi.testclient import TestClient

from services.inference.api import LocalClassifierService, build_api
from services.retrieval.deployment import LocalSearchService
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .conftest import png_b64


def _settings(**serve) -> Settings:
    return Settings(serve=ServeSettings(max_text_chars=5000, **serve),
                    images=ImageSettings(max_bytes=100_000, allow_hosts=[]))


@pytest.fixture(scope="module")
def client(torch_backend, indexed):
    r, _ = indexed
    return TestClient(build_api(LocalClassifierService(torch_backend), _settings(),
                                LocalSearchService(r)))


def test_search_returns_ranked_reviews_with_every_score(client, indexed):
    _, reviews = indexed
    target = reviews[2]
    r = client.post("/v1/search", json={"query": target.text, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "hybrid" and body["latency_ms"] > 0
    hits = body["hits"]
    assert len(hits) == 5 and hits[0]["id"] == target.id
    assert set(hits[0]["scores"]) == {"dense", "sparse"} and set(hits[0]["ranks"]) == {"dense",
                                                                                       "sparse"}
    assert hits[0]["label"] == target.label and hits[0]["product"] == target.product.id
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_single_retriever_modes(client, mode):
    r = client.post("/v1/search", json={"query": "battery charger", "k": 3, "mode": mode})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert 1 <= len(hits) <= 3 and all(list(h["scores"]) == [mode] for h in hits)


def test_filters_on_category_label_and_rating(client):
    r = client.post("/v1/search", json={
        "query": "works great", "k": 20,
        "filters": {"category": "electronics", "label": "negative", "rating": {"lte": 2}}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits and all(h["category"] == "electronics" and h["label"] == "negative"
                        and h["rating"] <= 2 for h in hits)
    r = client.post("/v1/search", json={"query": "movie", "filters": {"rating": {"gte": 4}},
                                        "fusion": "weighted"})
    assert r.status_code == 200 and all(h["rating"] >= 4 for h in r.json()["hits"])


def test_query_photo_searches_image_vectors(client):
    # none of these reviews has a photo: the image list is empty, the text lists still answer
    r = client.post("/v1/search", json={"query": "cable", "image": png_b64(), "k": 3})
    assert r.status_code == 200, r.text
    assert all("image" in h["scores"] for h in r.json()["hits"])


@pytest.mark.parametrize("body,status,needle", [
    ({"query": ""}, 422, "query is empty"),
    ({"query": "   "}, 422, "query is empty"),
    ({}, 422, "give a query"),
    ({"query": "x", "k": 0}, 422, "k"),
    ({"query": "x", "k": 101}, 422, "k"),
    ({"query": "x", "mode": "fuzzy"}, 422, "mode"),
    ({"query": "x", "fusion": "max"}, 422, "fusion"),
    ({"query": "x", "filters": {"colour": "red"}}, 422, "colour"),
    ({"query": "x", "filters": {"label": "great"}}, 422, "label"),
    ({"query": "x", "filters": {"rating": {"gte": 6}}}, 422, "gte"),
    ({"query": "x", "filters": {"rating": {"gte": 5, "lte": 1}}}, 422, "rating"),
    ({"query": "x", "mode": "sparse", "image": png_b64()}, 422, "cannot use an image"),
    ({"image": png_b64(), "mode": "sparse"}, 422, "needs a query text"),
    ({"query": "x", "image": "not an image"}, 422, ""),
    ({"query": "x" * 5001}, 422, "limit"),
    ({"query": "x", "extra": 1}, 422, "extra"),
])
def test_bad_search_requests_are_4xx_with_a_message(client, body, status, needle):
    r = client.post("/v1/search", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "message", "request_id"} and needle in err["message"]


def test_rerank_without_a_trained_reranker_is_a_clear_404(client, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPSENSE_HOME", str(tmp_path))
    r = client.post("/v1/search", json={"query": "cable", "rerank": True})
    assert r.status_code == 404, r.text
    assert "reranker" in r.json()["message"]


def test_sentiment_carries_similar_reviews(client, indexed):
    _, reviews = indexed
    target = reviews[20]
    r = client.post("/v1/sentiment", json={"text": target.text})
    assert r.status_code == 200, r.text
    similar = r.json()["similar"]
    assert len(similar) == 3 and similar[0]["id"] == target.id
    assert set(similar[0]) == {"id", "text", "label", "score"}
    assert similar[0]["label"] == target.label
    r = client.post("/v1/sentiment", json={"text": target.text, "similar_k": 0})
    assert r.json()["similar"] == []
    r = client.post("/v1/sentiment", json={"text": target.text, "similar_k": 7})
    assert len(r.json()["similar"]) == 7
    r = client.post("/v1/sentiment", json={"text": "x", "similar_k": 51})
    assert r.status_code == 422
    r = client.post("/v1/sentiment/batch", json={"items": [{"text": reviews[0].text},
                                                           {"image": png_b64()}]})
    assert r.status_code == 200
    first, photo = r.json()["items"]
    assert first["similar"][0]["id"] == reviews[0].id
    assert isinstance(photo["similar"], list)  # image-only: the image vectors (none here)


def test_similar_k_setting_and_retrieval_off(torch_backend, indexed):
    r, _ = indexed
    c = TestClient(build_api(LocalClassifierService(torch_backend), _settings(similar_k=1),
                             LocalSearchService(r)))
    assert len(c.post("/v1/sentiment", json={"text": "good dvd"}).json()["similar"]) == 1
    off = TestClient(build_api(LocalClassifierService(torch_backend), _settings()))
    p = off.post("/v1/sentiment", json={"text": "good dvd"})
    assert p.status_code == 200 and p.json()["similar"] == []
    s = off.post("/v1/search", json={"query": "good dvd"})
    assert s.status_code == 503 and s.json()["error"] == "ServiceUnavailable"


class _Broken:
    async def search(self, *a, **kw):
        raise ConnectionError("qdrant went away")


def test_a_retrieval_failure_keeps_the_prediction(torch_backend, caplog):
    c = TestClient(build_api(LocalClassifierService(torch_backend), _settings(), _Broken()))
    p = c.post("/v1/sentiment", json={"text": "good dvd"})
    assert p.status_code == 200 and p.json()["similar"] == []
    with caplog.at_level("INFO", logger="shopsense.api"):
        s = c.post("/v1/search", json={"query": "good dvd"})
    # the upstream's words stay in the log, under the request id; the answer names neither
    body = s.json()
    assert s.status_code == 502 and body["error"] == "UpstreamError"
    assert "qdrant" not in body["message"] and body["request_id"] in body["message"]
    logged = [r.getMessage() for r in caplog.records if body["request_id"] in r.getMessage()]
    assert any("qdrant went away" in m for m in logged)
    metrics = c.get("/metrics").text
    assert 'shopsense_retrieval_failures_total{error="ConnectionError",operation="similar"} 1.0' \
        in metrics
