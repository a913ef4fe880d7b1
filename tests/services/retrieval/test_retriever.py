"""HybridRetriever: failure handling between the two indexes (no model: given embeddings), then
hybrid search on 100 real reviews and image search on rendered photos (real encoders)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from services.retrieval.dense import QdrantDenseIndex
from services.retrieval.errors import IndexingFailed, StoreUnavailable
from services.retrieval.retriever import Embeddings, HybridRetriever
from services.retrieval.schema import Doc, Filters
from services.retrieval.indexes import open_sparse
from shopsense.errors import InvalidInput
from tests.services.retrieval.conftest import random_vectors, settings


class Flaky:
    """A sparse index that fails its next N upserts / deletes (then delegates)."""

    def __init__(self, inner, *, upserts=0, deletes=0, exc=None):
        self.inner, self.upserts, self.deletes = inner, upserts, deletes
        self.exc = exc or StoreUnavailable("sparse down")
        self.where, self.transactional = inner.where, inner.transactional

    def upsert(self, docs):
        if self.upserts:
            self.upserts -= 1
            raise self.exc
        return self.inner.upsert(docs)

    def delete(self, ids):
        if self.deletes:
            self.deletes -= 1
            raise self.exc
        return self.inner.delete(ids)

    def __getattr__(self, name):
        return getattr(self.inner, name)


_OPEN: list[HybridRetriever] = []


@pytest.fixture(autouse=True)
def _close_retrievers():
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(tmp_path, sparse_settings=None, **flaky):
    dense = QdrantDenseIndex.open(settings(), tmp_path)
    inner = open_sparse(sparse_settings or settings(), tmp_path)
    sparse = Flaky(inner, **flaky)
    r = HybridRetriever(dense, sparse, settings(batch_size=2), journal=tmp_path / "j.json")
    _OPEN.append(r)
    return r, sparse


def state(r, ids):
    """(dense texts, sparse texts) of ids."""
    dense = {i: p["text"] for i, p in r.dense.get(ids).items()}
    sparse_all = r.sparse.search("v1 v2 v3", k=100)
    sparse = {h.id: h.payload["text"] for h in sparse_all if h.id in ids}
    return dense, sparse


V1 = [Doc(id="A", text="v1 alpha"), Doc(id="X", text="v1 xray")]
V2 = [Doc(id="A", text="v2 alpha"), Doc(id="B", text="v2 bravo")]


def vecs(n, seed=0):
    return Embeddings(text=random_vectors(n, 384, seed))


def test_sparse_failure_rolls_both_indexes_back(tmp_path):
    r, flaky = make(tmp_path)
    r.index(V1, vecs(2))
    flaky.upserts = 1
    with pytest.raises(IndexingFailed) as err:
        r.index(V2, vecs(2, 1))
    e = err.value
    assert e.rolled_back == ["A", "B"] and e.inconsistent == [] and e.written == []
    assert "the sparse index failed (sparse down)" in str(e) and "\n" not in str(e)
    assert state(r, ["A", "B", "X"]) == ({"A": "v1 alpha", "X": "v1 xray"},
                                         {"A": "v1 alpha", "X": "v1 xray"})
    assert not (tmp_path / "j.json").exists()


def test_earlier_batches_stay_written_and_are_reported(tmp_path):
    r, flaky = make(tmp_path)
    docs = [Doc(id=f"d{i}", text=f"v1 doc {i}") for i in range(5)]  # batches of 2: 2, 2, 1
    orig = flaky.upsert
    calls = {"n": 0}

    def third_fails(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("sparse down")
        return orig(batch)

    flaky.upsert = third_fails
    with pytest.raises(IndexingFailed) as err:
        r.index(docs, vecs(5))
    assert err.value.written == ["d0", "d1"] and err.value.rolled_back == ["d2", "d3"]
    assert r.dense.count() == r.sparse.count() == 2


def test_failed_rollback_is_journaled_and_repaired_by_the_next_write(tmp_path):
    r, flaky = make(tmp_path)
    r.index(V1, vecs(2))
    flaky.upserts = 2  # the write and its rollback both fail
    with pytest.raises(IndexingFailed) as err:
        r.index(V2, vecs(2, 1))
    assert err.value.inconsistent == ["A", "B"] and "rollback failed too" in str(err.value)
    assert r.status()["pending"] == ["A", "B"]
    # dense was restored; the sparse index could not be touched at all
    assert state(r, ["A", "B"]) == ({"A": "v1 alpha"}, {"A": "v1 alpha"})
    report = r.index([Doc(id="C", text="v3 charlie")], vecs(1, 2))
    assert report.repaired == 2 and r.status()["pending"] == []
    assert r.dense.count() == r.sparse.count() == 3


def test_interrupted_write_is_repaired_on_next_open(tmp_path):
    r, flaky = make(tmp_path, upserts=0)
    r.index(V1, vecs(2))
    flaky.upserts, flaky.exc = 1, KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):  # no rollback on Ctrl-C: the journal stays
        r.index(V2, vecs(2, 1))
    assert state(r, ["A", "B"]) == ({"A": "v2 alpha", "B": "v2 bravo"}, {"A": "v1 alpha"})
    _OPEN.remove(r)
    r.close()
    r2 = HybridRetriever.open(settings(), index_dir=tmp_path, collection="shopsense-reviews")
    r2.journal = tmp_path / "j.json"  # the journal of the retriever above
    assert r2.status()["pending"] == ["A", "B"]
    assert r2.delete(["X"]).repaired == 2
    # the sparse index now agrees with the dense one (the source of truth)
    assert state(r2, ["A", "B", "X"]) == ({"A": "v2 alpha", "B": "v2 bravo"},
                                          {"A": "v2 alpha", "B": "v2 bravo"})
    r2.close()


def test_dense_failure_leaves_sparse_untouched(tmp_path):
    r, _ = make(tmp_path)
    r.index(V1, vecs(2))

    def broken(*a, **k):
        raise StoreUnavailable("qdrant down")

    r.dense.upsert = broken
    with pytest.raises(IndexingFailed, match="the dense index failed .qdrant down.") as err:
        r.index(V2, vecs(2, 1))
    assert err.value.rolled_back == ["A", "B"]
    del r.dense.upsert
    assert state(r, ["A", "B"]) == ({"A": "v1 alpha"}, {"A": "v1 alpha"})


def test_opensearch_rejected_items_are_rolled_back_the_rest_written(tmp_path, fake_os):
    r, _ = make(tmp_path, sparse_settings=settings(opensearch_url=fake_os.url))
    r.index(V1, vecs(2))
    fake_os.reject_ids = {"B"}
    with pytest.raises(IndexingFailed) as err:
        r.index(V2, vecs(2, 1))
    assert err.value.written == ["A"] and err.value.rolled_back == ["B"]
    assert "1 rejected, e.g. B: mapper_parsing_exception" in str(err.value)
    assert set(r.dense.get(["A", "B"])) == {"A"}
    assert set(fake_os.indices["shopsense-reviews"]["docs"]) == {"A", "X"}
    assert r.dense.get(["A"])["A"]["text"] == "v2 alpha"


def test_delete_failure_restores_the_dense_points(tmp_path):
    r, flaky = make(tmp_path)
    r.index(V1, vecs(2))
    flaky.deletes = 1
    with pytest.raises(IndexingFailed):
        r.delete(["A"])
    assert state(r, ["A"]) == ({"A": "v1 alpha"}, {"A": "v1 alpha"})
    rep = r.delete(["A", "nope"])
    assert (rep.deleted, rep.not_found) == (1, ["nope"])
    assert r.dense.count() == r.sparse.count() == 1


def test_bad_inputs_are_invalid_input(tmp_path):
    r, _ = make(tmp_path)
    with pytest.raises(InvalidInput, match="2 text embeddings for 1 reviews"):
        r.index([Doc(id="a", text="x")], random_vectors(2, 384))
    with pytest.raises(InvalidInput, match="invalid review"):
        r.index([{"id": "x"}], random_vectors(1, 384))
    for kwargs, match in [({"query": "  "}, "give a query text"),
                          ({"query": "x", "mode": "bm25"}, "unknown mode"),
                          ({"query": "x", "k": 0}, "k must be"),
                          ({"query": "x", "fusion": "max"}, "unknown fusion"),
                          ({"query": "x", "filters": {"label": "great"}}, "invalid filter label"),
                          ({"query": "x", "filters": {"rating_gte": 5, "rating_lte": 1}},
                           "rating_gte"),
                          ({"query": "x", "mode": "sparse", "image": b"..."},
                           "cannot use an image"),
                          ({"image": b"...", "mode": "sparse"}, "needs a query text")]:
        with pytest.raises(InvalidInput, match=match):
            r.search(**kwargs)


# ------------------------------------------------------------------------- 100 real reviews


@pytest.fixture(scope="module")
def real(data_dir, embedder, tmp_path_factory):
    from shopsense.data.loaders import load_set

    dvd = load_set("blitzer-dvd", data_dir)
    el = load_set("blitzer-electronics", data_dir)
    reviews = dvd[:25] + dvd[-25:] + el[:25] + el[-25:]  # both labels in both categories
    r = HybridRetriever.open(settings(batch_size=64), index_dir=tmp_path_factory.mktemp("real"),
                             text_embedder=embedder)
    report = r.index(reviews)
    yield r, reviews, report
    r.close()


def test_index_report_and_counts(real):
    r, _, report = real
    assert report.indexed == 100 and report.batches == 2 and report.with_image == 0
    assert r.status()["dense"]["count"] == r.status()["sparse"]["count"] == 100


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_a_review_finds_itself_first(real, mode):
    r, reviews, _ = real
    for review in (reviews[3], reviews[60]):
        query = f"{review.title}. {review.text}" if review.title else review.text
        hits = r.search(query, k=5, mode=mode)
        assert hits[0].id == review.id, mode
        assert hits[0].label == review.label and hits[0].product == review.product.id
        assert hits[0].category == review.product.category and hits[0].rating == review.rating


def test_hybrid_hits_carry_every_score(real):
    r, _, _ = real
    hits = r.search("battery stopped charging after a month", k=10, fusion="rrf")
    assert len(hits) == 10
    assert all(set(h.scores) == {"dense", "sparse"} == set(h.ranks) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:  # RRF with k=60: each list adds at most 1/61
        listed = [n for n in h.scores if h.ranks[n] is not None]
        assert listed and h.score == pytest.approx(sum(1 / (60 + h.ranks[n]) for n in listed))
        assert all((h.scores[n] is None) == (h.ranks[n] is None) for n in h.scores)
    single = r.search("battery stopped charging after a month", k=3, mode="dense")
    assert set(single[0].scores) == {"dense"} and single[0].score == single[0].scores["dense"]


def test_weighted_fusion_scores_in_unit_range(real):
    r, _, _ = real
    hits = r.search("terrible sound quality", k=10, fusion="weighted")
    assert all(0 <= h.score <= 1 for h in hits) and hits[0].score > hits[-1].score


def test_filters_on_real_reviews(real):
    r, reviews, _ = real
    for mode in ("hybrid", "dense", "sparse"):
        hits = r.search("great movie", k=20, mode=mode, filters={"category": "electronics"})
        assert hits and all(h.category == "electronics" for h in hits)
        hits = r.search("great movie", k=20, mode=mode,
                        filters=Filters(label="negative", rating_gte=2, rating_lte=2))
        assert hits and all(h.label == "negative" and h.rating == 2 for h in hits)
    product = reviews[0].product.id
    want = {x.id for x in reviews if x.product.id == product}
    hits = r.search("movie", k=50, filters={"product": product})
    assert {h.id for h in hits} <= want and hits


def test_reindex_is_an_upsert_and_delete_removes_from_both(real):
    r, reviews, _ = real
    r.index(reviews[:10])  # same ids again
    assert r.dense.count() == r.sparse.count() == 100
    gone = [x.id for x in reviews[:3]]
    rep = r.delete(gone)
    assert (rep.deleted, rep.not_found) == (3, [])
    assert r.dense.count() == r.sparse.count() == 97
    hits = r.search(reviews[0].text, k=50)
    assert not {h.id for h in hits} & set(gone)
    assert r.delete(gone).not_found == gone
    r.index(reviews[:3])
    assert r.dense.count() == 100


# ---------------------------------------------------------------------------- images


def test_image_search_and_three_list_fusion(tmp_path, embedder):
    from services.retrieval.sources import open_source
    from shopsense.data.dataset import write_dataset
    from shopsense.images import PhotoSpec, encode_jpeg, image_sha256, render_photo
    from shopsense.schemas import ImageRef, Product, Review, Source
    from shopsense.store import LocalStore

    specs = [PhotoSpec(category="phone", damage="cracked"), PhotoSpec(category="mug"),
             PhotoSpec(category="shoe", colour="red"), PhotoSpec(category="box", packaging="torn")]
    texts = ["screen arrived cracked", "lovely mug, keeps coffee hot", "comfortable red shoes",
             "the box was torn open"]
    images, reviews = {}, []
    for i, (spec, text) in enumerate(zip(specs, texts)):
        data = encode_jpeg(render_photo(spec, seed=i, size=(160, 160)))
        sha = image_sha256(data)
        images[sha] = data
        reviews.append(Review.make(source=Source(kind="synthetic", name="t", source_id=str(i)),
                                   text=text, images=[ImageRef(uri=f"images/{sha}.jpg")],
                                   product=Product(id=f"p{i}", category="home")))
    reviews.append(Review.make(source=Source(kind="synthetic", name="t", source_id="broken"),
                               text="photo missing", images=[ImageRef(uri="file:///nonexistent.jpg")]))
    write_dataset(LocalStore(tmp_path / "store"), "photos", reviews, name="photos", images=images)

    src = open_source(str(tmp_path / "store" / "photos"))
    assert src.total == 5
    with HybridRetriever.open(settings(), index_dir=tmp_path / "idx", text_embedder=embedder) as r:
        rep = r.index(src.reviews, image_loader=src.image_loader)
        assert rep.indexed == 5 and rep.with_image == 4
        assert list(rep.image_errors) == [reviews[4].id]
        query_image = list(images.values())[2]
        hits = r.search(image=query_image, k=3)  # an image alone: the image list, raw scores
        assert hits[0].id == reviews[2].id and set(hits[0].scores) == {"image"}
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(r.search(image=query_image, k=10)) == 4  # only reviews with an image
        hits = r.search("red shoes", image=query_image, k=3, fusion="rrf")
        assert hits[0].id == reviews[2].id
        assert set(hits[0].scores) == {"dense", "sparse", "image"}
        assert hits[0].score == pytest.approx(3 / 61)  # first in all three lists
        hits = r.search("red shoes", image=query_image, k=3, mode="dense")
        assert set(hits[0].scores) == {"dense", "image"}
        from PIL import Image

        pil = Image.open(io.BytesIO(query_image))
        assert r.search(image=pil, k=1)[0].id == reviews[2].id
        with pytest.raises(InvalidInput):
            r.search(image=b"not an image", k=1)
        assert np.isclose(np.linalg.norm(r.image_embedder.embed_one(pil)), 1.0)
