"""Local mode's fast dense search (``QdrantDenseIndex._local_search``) returns what qdrant-client's
``query_points`` returns: same ids, order and scores, under filters, deletes, partial image
vectors, and on collections made with COSINE by earlier versions."""

from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.dense import VECTORS, QdrantDenseIndex, _filter
from services.retrieval.schema import Doc, Filters
from tests.services.retrieval.conftest import settings


def _docs(n: int) -> list[Doc]:
    cats = ("books", "dvd", "electronics")
    return [Doc(id=f"r{i}", text=f"review {i}", category=cats[i % 3], product=f"P{i % 7}",
                label="positive" if i % 2 else "negative", rating=1 + i % 5) for i in range(n)]


def _reference(dense: QdrantDenseIndex, vec, using, k, filters):
    """query_points, as the search did before the fast path."""
    res = dense.client.query_points(dense.collection, query=(vec / np.linalg.norm(vec)).tolist(),
                                    using=using, query_filter=_filter(filters), limit=k,
                                    with_payload=True)
    return [(p.payload["review_id"], p.score, p.payload) for p in res.points]


def _check(dense, vec, using="text", k=10, filters=None):
    assert dense._local_collection() is not None
    fast = dense.search(vec, using=using, k=k, filters=filters)
    ref = _reference(dense, np.asarray(vec, dtype=np.float64), using, k, filters)
    assert [h.id for h in fast] == [r[0] for r in ref]
    np.testing.assert_allclose([h.score for h in fast], [r[1] for r in ref], rtol=1e-5, atol=1e-6)
    assert [h.payload for h in fast] == [r[2] for r in ref]
    return fast


@pytest.fixture
def dense(tmp_path):
    d = QdrantDenseIndex.open(settings(), tmp_path)
    yield d
    d.close()


def test_fast_path_matches_query_points(dense):
    rng = np.random.default_rng(3)
    docs = _docs(300)
    tvecs = rng.standard_normal((300, VECTORS["text"])).astype(np.float32) * 3  # not unit
    images = [rng.standard_normal(VECTORS["image"]) if i % 4 == 0 else None for i in range(300)]
    dense.upsert(docs, tvecs, images)
    dense.delete([f"r{i}" for i in range(0, 300, 9)])
    for q in rng.standard_normal((5, VECTORS["text"])):
        _check(dense, q, k=10)
        _check(dense, q, k=1000)  # more than there are points
        _check(dense, q, k=10, filters=Filters(category="dvd", rating_gte=3))
        _check(dense, q, k=5, filters=Filters(product="P3", label="positive"))
        assert dense.search(q, k=5, filters=Filters(product="nope")) == []
    for q in rng.standard_normal((3, VECTORS["image"])):
        hits = _check(dense, q, using="image", k=20)
        assert all(h.payload["has_image"] for h in hits)
    # the vector of a stored review finds it first, with score 1
    top = dense.search(tvecs[5], k=1)[0]
    assert top.id == "r5" and top.score == pytest.approx(1.0, abs=1e-5)
    # hits are copies: changing one does not change the index
    top.payload["text"] = "changed"
    assert dense.get(["r5"])["r5"]["text"] == "review 5"


def test_ties_are_deterministic_and_keep_k(dense):
    docs = _docs(40)
    same = np.tile(np.eye(1, VECTORS["text"], 0, dtype=np.float32), (40, 1))
    dense.upsert(docs, same)
    hits = dense.search(same[0], k=7)
    assert len(hits) == 7 and {round(h.score, 5) for h in hits} == {1.0}
    assert [h.id for h in hits] == [f"r{i}" for i in range(39, 32, -1)]  # later points first
    assert [h.id for h in dense.search(same[0], k=7)] == [h.id for h in hits]


def test_cosine_collection_of_earlier_versions_still_searches(tmp_path):
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("shopsense-reviews", vectors_config={
        name: m.VectorParams(size=size, distance=m.Distance.COSINE)
        for name, size in VECTORS.items()})
    client.close()
    dense = QdrantDenseIndex.open(settings(), tmp_path)
    try:
        rng = np.random.default_rng(5)
        dense.upsert(_docs(50), rng.standard_normal((50, VECTORS["text"])) * 2)
        for q in rng.standard_normal((3, VECTORS["text"])):
            _check(dense, q, k=10)
            _check(dense, q, k=10, filters=Filters(category="books"))
    finally:
        dense.close()


def test_new_local_collections_use_dot_on_unit_vectors_and_survive_reopen(tmp_path):
    dense = QdrantDenseIndex.open(settings(), tmp_path)
    info = dense.client.get_collection(dense.collection)
    assert {str(v.distance.value).lower() for v in info.config.params.vectors.values()} == {"dot"}
    rng = np.random.default_rng(9)
    vecs = rng.standard_normal((20, VECTORS["text"])) * 5
    dense.upsert(_docs(20), vecs)
    stored = dense.snapshot(["r3"]).state["r3"].vector["text"]
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5)
    before = [(h.id, h.score) for h in dense.search(vecs[3], k=5)]
    dense.close()
    again = QdrantDenseIndex.open(settings(), tmp_path)
    try:
        assert [(h.id, pytest.approx(h.score, abs=1e-6)) for h in again.search(vecs[3], k=5)] \
            == before
        _check(again, vecs[4], k=5)
    finally:
        again.close()


def test_falls_back_to_query_points_without_the_expected_internals(dense, monkeypatch):
    rng = np.random.default_rng(1)
    dense.upsert(_docs(30), rng.standard_normal((30, VECTORS["text"])))
    q = rng.standard_normal(VECTORS["text"])
    fast = [(h.id, h.score) for h in dense.search(q, k=5)]
    monkeypatch.setattr(QdrantDenseIndex, "_LOCAL_ATTRS", ("no_such_attribute",))
    assert dense._local_collection() is None
    slow = [(h.id, h.score) for h in dense.search(q, k=5)]
    assert [i for i, _ in slow] == [i for i, _ in fast]
    np.testing.assert_allclose([s for _, s in slow], [s for _, s in fast], rtol=1e-5)
