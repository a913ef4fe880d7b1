"""What makes one machine serve near its limit, on the real API, backend and retriever: the
response cache (in-process and a real redis-server, including one that goes away), similar
reviews skipped under load (and saying so), a photo encoded once per request, and the ``local``
engine (the same API and batcher in one process)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.inference.api import LocalClassifierService, build_api
from services.inference.cache import CacheSettings, LocalLRU, RedisCache, build_cache
from services.retrieval.deployment import LocalSearchService
from shopsense.settings import ImageSettings, ServeSettings, Settings

from .conftest import png_b64


def _settings(**serve) -> Settings:
    return Settings(serve=ServeSettings(max_text_chars=5000, **serve),
                    images=ImageSettings(max_bytes=200_000, allow_hosts=[]))


def _sample(client: TestClient, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.split()[-1])
    return 0.0


class CountingBackend:
    """The real torch backend, counting the items it computes (to see what the cache saved)."""

    def __init__(self, inner, identity: str | None = None) -> None:
        self.inner = inner
        self.items = 0
        self._identity = identity or inner.identity

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def identity(self) -> str:
        return self._identity

    def predict_batch(self, items):
        self.items += len(items)
        return self.inner.predict_batch(items)


# -- the response cache ---------------------------------------------------------------------


def test_a_repeated_review_is_answered_from_the_cache(torch_backend):
    backend = CountingBackend(torch_backend)
    cache = build_cache(CacheSettings(max_entries=100))
    assert isinstance(cache, LocalLRU)
    c = TestClient(build_api(LocalClassifierService(backend), _settings(), cache=cache))
    first = c.post("/v1/sentiment", json={"text": "Great phone, the battery lasts."}).json()
    # the same text as the model sees it (spacing, Unicode composition): the same answer
    again = c.post("/v1/sentiment", json={"text": "  Great phone,\tthe battery  lasts. "}).json()
    assert first["cached"] is False and again["cached"] is True
    assert {k: again[k] for k in ("label", "scores", "modalities", "similar", "model")} == \
        {k: first[k] for k in ("label", "scores", "modalities", "similar", "model")}
    assert backend.items == 1
    other = c.post("/v1/sentiment", json={"text": "Great phone, the battery lasts!"}).json()
    assert other["cached"] is False and backend.items == 2
    photo = png_b64()
    a = c.post("/v1/sentiment", json={"text": "ok", "image": photo}).json()
    b = c.post("/v1/sentiment", json={"text": "ok", "image": photo}).json()
    d = c.post("/v1/sentiment", json={"text": "ok", "image": png_b64((0, 90, 200))}).json()
    assert (a["cached"], b["cached"], d["cached"]) == (False, True, False)
    assert _sample(c, "shopsense_cache_hits_total", backend="memory") == 2
    assert _sample(c, "shopsense_cache_misses_total", backend="memory") == 4
    batch = c.post("/v1/sentiment/batch", json={"items": [
        {"text": "Great phone, the battery lasts."}, {"text": "a new one"}]}).json()["items"]
    assert [i["cached"] for i in batch] == [True, False]


def test_a_new_model_never_serves_the_old_answers(torch_backend):
    cache = build_cache(CacheSettings(max_entries=100))
    old = CountingBackend(torch_backend, identity="shopsense-sentiment/1/aaaa/torch")
    new = CountingBackend(torch_backend, identity="shopsense-sentiment/2/bbbb/torch")
    body = {"text": "It stopped working after a week."}
    c1 = TestClient(build_api(LocalClassifierService(old), _settings(), cache=cache))
    assert c1.post("/v1/sentiment", json=body).json()["cached"] is False
    assert c1.post("/v1/sentiment", json=body).json()["cached"] is True
    c2 = TestClient(build_api(LocalClassifierService(new), _settings(), cache=cache))
    assert c2.post("/v1/sentiment", json=body).json()["cached"] is False
    assert new.items == 1


def test_the_torch_backend_identity_names_weights_and_engine(torch_backend):
    name, version, digest, engine = torch_backend.identity.split("/")
    assert name == torch_backend.model.name and engine == "torch" and len(digest) == 16




def test_redis_cache_through_the_api_and_a_redis_that_goes_away(torch_backend, redis_url,
                                                                 monkeypatch):
    url, proc = redis_url
    monkeypatch.setenv("SHOPSENSE_CACHE_URL", url)
    cache = build_cache(CacheSettings(timeout_s=0.5, retry_s=60))
    assert isinstance(cache, RedisCache)
    backend = CountingBackend(torch_backend)
    with TestClient(build_api(LocalClassifierService(backend), _settings(), cache=cache)) as c:
        body = {"text": "Screen cracked on day two."}
        assert c.post("/v1/sentiment", json=body).json()["cached"] is False
        hit = c.post("/v1/sentiment", json=body)
        assert hit.status_code == 200 and hit.json()["cached"] is True
        assert backend.items == 1
        proc.terminate()
        proc.wait(10)
        for _ in range(3):  # down: computed, answered, never an error
            r = c.post("/v1/sentiment", json=body)
            assert r.status_code == 200 and r.json()["cached"] is False
        assert backend.items == 4
        assert _sample(c, "shopsense_cache_errors_total", backend="redis") == 1  # then left alone
        assert _sample(c, "shopsense_cache_hits_total", backend="redis") == 1


# -- similar reviews --------------------------------------------------------------------------


def test_similar_reviews_are_skipped_under_load_and_the_answer_says_so(torch_backend, indexed):
    r, reviews = indexed
    busy = TestClient(build_api(LocalClassifierService(torch_backend),
                                _settings(similar_max_concurrent=0), LocalSearchService(r)))
    p = busy.post("/v1/sentiment", json={"text": reviews[0].text}).json()
    assert p["similar"] == [] and p["similar_skipped"] == "load"
    assert _sample(busy, "shopsense_similar_skipped_total", reason="load") == 1
    # not asked for: nothing skipped
    p = busy.post("/v1/sentiment", json={"text": reviews[0].text, "similar_k": 0}).json()
    assert p["similar_skipped"] is None
    free = TestClient(build_api(LocalClassifierService(torch_backend),
                                _settings(similar_deadline_s=120), LocalSearchService(r)))
    p = free.post("/v1/sentiment", json={"text": reviews[0].text}).json()
    assert p["similar"][0]["id"] == reviews[0].id and p["similar_skipped"] is None


def test_a_partial_answer_is_not_cached(torch_backend, indexed):
    r, reviews = indexed
    cache = build_cache(CacheSettings(max_entries=10))
    busy = TestClient(build_api(LocalClassifierService(torch_backend),
                                _settings(similar_max_concurrent=0), LocalSearchService(r),
                                cache=cache))
    for _ in range(2):
        p = busy.post("/v1/sentiment", json={"text": reviews[1].text}).json()
        assert p["similar_skipped"] == "load" and p["cached"] is False


def test_a_photo_is_encoded_once_per_request(torch_backend, indexed):
    r, reviews = indexed
    embedder = r.image_embedder
    calls = {"n": 0}
    original = embedder.embed

    def counted(images):
        calls["n"] += 1
        return original(images)

    embedder.embed = counted
    try:
        c = TestClient(build_api(LocalClassifierService(torch_backend),
                                 _settings(similar_deadline_s=120), LocalSearchService(r)))
        p = c.post("/v1/sentiment", json={"text": reviews[2].text, "image": png_b64()})
        assert p.status_code == 200 and p.json()["modalities"] == ["text", "image"]
        assert torch_backend.image_encoder_id == embedder.encoder_id
        assert calls["n"] == 0  # the retriever used the classifier's features
        # the same lists as when the retriever encodes the photo itself
        import base64
        import io

        from PIL import Image

        photo = Image.open(io.BytesIO(base64.b64decode(png_b64()))).convert("RGB")
        own = r.search(reviews[2].text, photo, k=3)
        assert calls["n"] == 1
        shared = [s["id"] for s in p.json()["similar"]]
        assert shared == [h.id for h in own]
    finally:
        embedder.embed = original


def test_features_of_another_encoder_are_ignored(indexed):
    import numpy as np

    r, reviews = indexed
    hits = r.search(reviews[3].text, np.zeros(1280, dtype=np.float32), k=2,
                    image_features=("another-encoder", np.ones(1280, dtype=np.float32)))
    assert len(hits) == 2


# -- the local engine -------------------------------------------------------------------------


def test_the_local_engine_serves_the_same_api_in_one_process(tiny_train_result, home,
                                                             monkeypatch):
    from services.inference.batching import BatchedClassifierService
    from services.inference.local import build_local_app

    monkeypatch.delenv("SHOPSENSE_CACHE_URL", raising=False)
    s = _settings(model_uri=str(tiny_train_result.bundle_dir), retrieval=False, engine="local")
    app = build_local_app(s)
    assert isinstance(app.state.service, BatchedClassifierService)
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        r = c.post("/v1/sentiment/batch", json={"items": [{"text": f"nice {i}"}
                                                          for i in range(5)]})
        assert r.status_code == 200 and len(r.json()["items"]) == 5
        again = c.post("/v1/sentiment", json={"text": "nice 1"}).json()
        assert again["cached"] is True  # the in-process LRU by default
        bad = c.post("/v1/sentiment", json={"text": ""})
        assert bad.status_code == 422 and bad.json()["error"] == "InvalidInput"
        assert _sample(c, "shopsense_cache_hits_total", backend="memory") == 1


def test_a_serve_setting_outside_its_choices_is_refused():
    from pydantic import ValidationError

    for field, bad in (("engine", "threads"), ("backend", "onnx"), ("similar_mode", "fuzzy"),
                       ("text_engine", "tensorrt")):
        with pytest.raises(ValidationError):
            ServeSettings(**{field: bad})
