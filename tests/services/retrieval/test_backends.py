"""Every backend on the same cases: filter semantics (tantivy, OpenSearch, Qdrant), upsert and
delete (both sparse backends), and OpenSearch's request bodies and response parsing.

OpenSearch cannot run here: the real opensearch-py client talks HTTP to a recording stand-in
on 127.0.0.1 (``fake_opensearch.py``) that answers with documented response shapes and rejects
query DSL outside the documented subset."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from services.retrieval.dense import QdrantDenseIndex
from services.retrieval.errors import IndexLocked, IndexMismatch, StoreUnavailable
from services.retrieval.indexes import SparseIndex, open_sparse
from services.retrieval.schema import Doc, Filters
from services.retrieval.sparse import (
    OPENSEARCH_BODY,
    OpenSearchSparseIndex,
    TantivySparseIndex,
)
from shopsense.errors import InvalidInput
from tests.services.retrieval.conftest import FILTER_CASES, FILTER_DOCS, random_vectors, settings


@pytest.fixture(params=["tantivy", "opensearch"])
def sparse(request, tmp_path):
    if request.param == "tantivy":
        yield open_sparse(settings(), tmp_path)
        return
    fake = request.getfixturevalue("fake_os")
    index = open_sparse(settings(opensearch_url=fake.url), tmp_path)
    assert isinstance(index, OpenSearchSparseIndex)
    index.fake = fake
    yield index
    index.close()


@pytest.fixture(params=["tantivy", "opensearch", "qdrant"])
def any_backend(request, tmp_path):
    """(search(filters) -> ids) over FILTER_DOCS for each backend."""
    if request.param == "qdrant":
        dense = QdrantDenseIndex.open(settings(), tmp_path)
        vecs = random_vectors(len(FILTER_DOCS), 384)
        dense.upsert(FILTER_DOCS, vecs)
        yield lambda f: {h.id for h in dense.search(vecs[0], k=100, filters=f)}
        dense.close()
        return
    if request.param == "tantivy":
        sp = open_sparse(settings(), tmp_path)
        assert isinstance(sp, TantivySparseIndex)
    else:
        sp = open_sparse(settings(opensearch_url=request.getfixturevalue("fake_os").url), tmp_path)
        assert isinstance(sp, OpenSearchSparseIndex)
    assert sp.upsert(FILTER_DOCS) == {}
    yield lambda f: {h.id for h in sp.search("sound", k=100, filters=f)}
    sp.close()


@pytest.mark.parametrize("filters, expected", FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
def test_filter_semantics_identical_in_every_backend(any_backend, filters, expected):
    f = Filters(**filters)
    assert expected == {d.id for d in FILTER_DOCS if f.matches(d.payload())}  # the reference
    assert any_backend(f) == expected


def test_sparse_backends_implement_the_protocol(sparse):
    assert isinstance(sparse, SparseIndex)


def test_sparse_upsert_replaces_and_delete_removes(sparse):
    assert sparse.upsert(FILTER_DOCS) == {}
    assert sparse.count() == len(FILTER_DOCS)
    # a new version of "a" (and a duplicate within one call: the last wins)
    new_a = Doc(id="a", text="broken hinge", category="headphones", label="negative", rating=1)
    assert sparse.upsert([Doc(id="a", text="interim"), new_a]) == {}
    assert sparse.count() == len(FILTER_DOCS)
    hits = sparse.search("hinge", k=5)
    assert [h.id for h in hits] == ["a"]
    assert hits[0].payload["label"] == "negative" and hits[0].payload["text"] == "broken hinge"
    assert "a" not in {h.id for h in sparse.search("sound", k=100)}
    assert sparse.delete(["a", "b", "never-indexed"]) == {}
    assert sparse.count() == len(FILTER_DOCS) - 2
    assert {h.id for h in sparse.search("sound", k=100)} == set("cdefg")


def test_sparse_query_analysis(sparse):
    sparse.upsert([Doc(id="1", text="The battery died", title="Bad"),
                   Doc(id="2", text="Battery lasts all day", title="Good"),
                   Doc(id="3", text="screen is bright")])
    assert {h.id for h in sparse.search("BATTERY", k=10)} == {"1", "2"}  # case-insensitive
    assert sparse.search("the is", k=10) == []  # only stop words: nothing to match
    assert [h.id for h in sparse.search("bad", k=10)] == ["1"]  # the title is searched too
    hits = sparse.search("battery died", k=10)
    assert hits[0].id == "1" and hits[0].score > hits[1].score > 0
    assert hits[0].payload["title"] == "Bad" and hits[0].payload["review_id"] == "1"


def test_tantivy_stems_like_english(tmp_path):
    sp = TantivySparseIndex(tmp_path / "t")
    sp.upsert([Doc(id="1", text="the batteries were running hot")])
    assert sp.analyze("The Batteries are running") == ["batteri", "run"]
    assert [h.id for h in sp.search("battery run", k=3)] == ["1"]
    assert sp.get(["1", "zz"])["1"]["text"] == "the batteries were running hot"


def test_tantivy_writer_lock_is_a_clear_error(tmp_path):
    sp = TantivySparseIndex(tmp_path / "t")
    held = sp.index.writer(heap_size=15_000_000, num_threads=1)
    try:
        with pytest.raises(IndexLocked, match="another process is writing"):
            sp.upsert([Doc(id="1", text="x")])
    finally:
        held.rollback()
        del held


# ------------------------------------------------------------------ OpenSearch request bodies


def test_opensearch_index_creation_and_mapping(fake_os):
    index = OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="reviews-x")
    create = [r for r in fake_os.requests if r.method == "PUT"]
    assert [r.path for r in create] == ["/reviews-x"]
    body = create[0].body
    assert body == OPENSEARCH_BODY
    props = body["mappings"]["properties"]
    # the analyzer both backends share (analysis.py), defined in the index settings
    assert props["content"] == {"type": "text", "analyzer": "shopsense_english"}
    analysis = body["settings"]["index"]["analysis"]
    assert analysis["analyzer"]["shopsense_english"]["type"] == "custom"
    assert analysis["filter"]["shopsense_stem"] == {"type": "stemmer", "language": "porter2"}
    assert "not" not in analysis["filter"]["shopsense_stop"]["stopwords"]
    assert {props[f]["type"] for f in ("category", "label", "product")} == {"keyword"}
    assert props["rating"]["type"] == "float" and body["mappings"]["dynamic"] == "strict"
    assert body["settings"]["index"]["number_of_shards"] == 1
    # opening again checks the mapping instead of creating the index
    fake_os.requests.clear()
    OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="reviews-x")
    assert [(r.method, r.path) for r in fake_os.requests] == [
        ("HEAD", "/reviews-x"), ("GET", "/reviews-x/_mapping")]
    index.close()


def test_opensearch_refuses_an_index_with_another_mapping(fake_os):
    fake_os.indices["other"] = {"body": {"mappings": {"properties": {"content": {
        "type": "keyword"}}}}, "docs": {}}
    with pytest.raises(IndexMismatch, match="exists with another mapping"):
        OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="other")
    # an index made by an earlier version (the built-in english analyzer drops "not")
    fake_os.indices["older"] = {"body": {"mappings": {"properties": {
        "content": {"type": "text", "analyzer": "english"},
        "category": {"type": "keyword"}}}}, "docs": {}}
    with pytest.raises(IndexMismatch, match="expected 'shopsense_english'"):
        OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="older")


def test_opensearch_bulk_actions(fake_os):
    index = OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="r")
    fake_os.requests.clear()
    index.upsert([FILTER_DOCS[0], Doc(id="z", text="plain", title="T")])
    (req,) = fake_os.requests
    assert (req.method, req.path, req.params) == ("POST", "/_bulk", {"refresh": "wait_for"})
    assert req.body == [
        {"index": {"_index": "r", "_id": "a"}},
        {"review_id": "a", "text": "great sound, comfortable", "category": "headphones",
         "label": "positive", "product": "P1", "rating": 5.0,
         "content": "great sound, comfortable"},
        {"index": {"_index": "r", "_id": "z"}},
        {"review_id": "z", "text": "plain", "title": "T", "content": "T. plain"},
    ]
    fake_os.requests.clear()
    index.delete(["a", "a", "q"])
    assert fake_os.requests[0].body == [{"delete": {"_index": "r", "_id": "a"}},
                                        {"delete": {"_index": "r", "_id": "q"}}]


def test_opensearch_search_body(fake_os):
    index = OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="r")
    fake_os.requests.clear()
    index.search("great sound", k=7, filters=Filters(category="speakers", label="positive",
                                                      product="P3", rating_gte=2, rating_lte=4))
    (req,) = fake_os.requests
    assert (req.method, req.path) == ("POST", "/r/_search")
    assert req.body == {
        "size": 7,
        "query": {"bool": {
            "must": [{"match": {"content": {"query": "great sound"}}}],
            "filter": [{"term": {"category": {"value": "speakers"}}},
                       {"term": {"label": {"value": "positive"}}},
                       {"term": {"product": {"value": "P3"}}},
                       {"range": {"rating": {"gte": 2.0, "lte": 4.0}}}],
        }},
        "_source": {"excludes": ["content"]},
        "track_total_hits": False,
    }
    fake_os.requests.clear()
    index.search("x", k=3, filters=Filters(rating_lte=2))
    assert fake_os.requests[0].body["query"]["bool"]["filter"] == [
        {"range": {"rating": {"lte": 2.0}}}]
    fake_os.requests.clear()
    index.search("x", k=3)
    assert "filter" not in fake_os.requests[0].body["query"]["bool"]


def test_opensearch_parses_documented_responses(fake_os):
    index = OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="r")
    index.upsert(FILTER_DOCS)
    hits = index.search("sound", k=2)
    # BM25 (Lucene's, as the stand-in now scores): the two shortest documents with "sound"
    assert [h.id for h in hits] == ["a", "c"] and all(h.score > 0 for h in hits)
    assert "content" not in hits[0].payload and hits[0].payload["product"] == "P1"
    assert index.count() == len(FILTER_DOCS)
    # per-item failures come back as {id: reason}; the other items are written
    fake_os.reject_ids = {"b"}
    failed = index.upsert([Doc(id="b", text="again"), Doc(id="new", text="fresh sound")])
    assert failed == {"b": "mapper_parsing_exception: rejected by the test"}
    assert "new" in fake_os.indices["r"]["docs"]
    fake_os.reject_delete_ids = {"b"}
    assert index.delete(["b"]) == {"b": "version_conflict_engine_exception: by the test"}
    fake_os.reject_ids = fake_os.reject_delete_ids = set()
    # deleting what is not there is fine (404 not_found items)
    assert index.delete(["nope"]) == {}


def test_opensearch_http_errors_are_one_line(fake_os):
    index = OpenSearchSparseIndex.open(settings(opensearch_url=fake_os.url), index="r")
    fake_os.fail_next = [(400, "parsing_exception")]
    with pytest.raises(StoreUnavailable) as err:
        index.search("x", k=3)
    msg = str(err.value)
    assert msg.startswith("opensearch http://127.0.0.1:") and "search failed: HTTP 400" in msg
    assert "parsing_exception: injected failure" in msg and "\n" not in msg
    fake_os.fail_next = [(500, "internal_server_error")]
    with pytest.raises(StoreUnavailable, match="bulk index failed: HTTP 500"):
        index.upsert([Doc(id="1", text="x")])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_servers_are_one_line_errors(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StoreUnavailable) as err:
        OpenSearchSparseIndex.open(settings(opensearch_url=url, opensearch_max_retries=0))
    assert "index check failed" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(StoreUnavailable) as err:
        QdrantDenseIndex.open(settings(qdrant_url=url, timeout_s=2))
    assert str(err.value).startswith(f"qdrant {url}: collection check failed")
    assert "\n" not in str(err.value)


def test_opensearch_url_credentials_are_not_printed(fake_os):
    host = fake_os.url.removeprefix("http://")
    index = OpenSearchSparseIndex.open(settings(opensearch_url=f"http://user:secret@{host}"))
    assert "secret" not in index.where and index.where == f"opensearch http://{host}"


# ----------------------------------------------------------------------------- Qdrant local


def test_qdrant_upsert_replace_delete_and_image_vectors(tmp_path):
    dense = QdrantDenseIndex.open(settings(), tmp_path)
    vecs = random_vectors(3, 384, seed=1)
    imgs = random_vectors(2, 1280, seed=2)
    docs = [Doc(id="r1", text="one", label="positive"), Doc(id="r2", text="two"),
            Doc(id="r3", text="three")]
    dense.upsert(docs, vecs, [imgs[0], None, imgs[1]])
    assert dense.count() == 3
    hits = dense.search(vecs[1], k=3)
    assert hits[0].id == "r2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload == {"review_id": "r2", "text": "two", "has_image": False}
    # only reviews with an image are in the image list
    assert [h.id for h in dense.search(imgs[1], using="image", k=5)] == ["r3", "r1"]
    # upsert by review id: the new version replaces the point, image vector included
    dense.upsert([Doc(id="r1", text="one v2", label="negative")], vecs[:1])
    assert dense.count() == 3
    assert dense.get(["r1"])["r1"]["label"] == "negative"
    assert [h.id for h in dense.search(imgs[0], using="image", k=5)] == ["r3"]
    snap = dense.snapshot(["r1", "r4"])
    dense.upsert([Doc(id="r1", text="v3"), Doc(id="r4", text="four")], vecs[:2])
    dense.restore(snap)
    assert dense.get(["r1", "r4"]) == {"r1": snap.payloads["r1"]}
    dense.delete(["r2", "nope"])
    assert dense.count() == 2 and "r2" not in dense.get(["r2"])
    with pytest.raises(InvalidInput):
        dense.search(np.zeros(10), k=1)
    with pytest.raises(InvalidInput):
        dense.upsert(docs[:1], np.zeros((1, 5)))
    dense.close()


def test_qdrant_local_lock_and_layout(tmp_path):
    dense = QdrantDenseIndex.open(settings(), tmp_path)
    with pytest.raises(IndexLocked, match="open in another process"):
        QdrantDenseIndex.open(settings(), tmp_path)
    from qdrant_client import models as m

    dense.client.create_collection("small", vectors_config={
        "text": m.VectorParams(size=8, distance=m.Distance.COSINE)})
    dense.close()
    with pytest.raises(IndexMismatch, match="expected"):
        QdrantDenseIndex.open(settings(collection="small"), tmp_path)


def test_point_ids_are_stable_uuids():
    from services.retrieval.schema import point_id

    assert point_id("abc") == point_id("abc") != point_id("abd")
    import uuid

    assert uuid.UUID(point_id("any id / with spaces")).version == 5
