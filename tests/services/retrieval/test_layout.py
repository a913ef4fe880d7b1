"""Retrieval's layering: what serves never imports what evaluates and trains, the search checks
have one owner, and each error name has one status."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shopsense.errors import InvalidInput


def test_serving_modules_do_not_import_offline():
    code = ("import sys; import services.retrieval.retriever, services.retrieval.deployment, "
            "services.retrieval.rerank, services.retrieval.indexes; "
            "print(sorted(m for m in sys.modules if m.startswith('services.retrieval.offline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_backends_satisfy_the_protocols(tmp_path):
    from services.retrieval.indexes import DenseIndex, SparseIndex, open_dense, open_sparse
    from tests.services.retrieval.conftest import settings

    dense = open_dense(settings(), tmp_path)
    sparse = open_sparse(settings(), tmp_path)
    try:
        assert isinstance(dense, DenseIndex) and isinstance(sparse, SparseIndex)
    finally:
        dense.close()
        sparse.close()


@pytest.mark.parametrize("kwargs, cli, message", [
    ({"query": "x", "mode": "bm25"}, False, "unknown mode 'bm25': choose hybrid, dense, sparse"),
    ({"query": "x", "mode": "bm25"}, True, "--mode 'bm25': choose hybrid, dense, sparse"),
    ({"query": "x", "k": 0}, True, "--k must be between 1 and 1000, got 0"),
    ({"query": "  "}, False, "query is empty: give a query text, a query image or both"),
    ({"query": None}, True, "give a QUERY text, an --image or both"),
    ({"query": "x", "filters": {"rating_gte": 5, "rating_lte": 1}}, True,
     "--rating-gte 5 is above --rating-lte 1"),
    ({"query": "x", "filters": {"label": "great"}}, True, "--label: Input should be"),
    ({"query": "x", "filters": {"label": "great"}}, False, "invalid filter label: Input"),
    ({"query": "x" * 11, "max_chars": 10}, False, "query has 11 characters; the limit is 10"),
    ({"query": None, "has_image": True, "mode": "sparse"}, False,
     "sparse (BM25) search needs a query text"),
    ({"query": "x", "has_image": True, "mode": "sparse"}, True,
     "--mode sparse (BM25) search cannot use --image"),
    ({"query": None, "has_image": True, "rerank": True}, False, "reranking needs a query text"),
])
def test_check_search_messages(kwargs, cli, message):
    from services.retrieval import check_search

    with pytest.raises(InvalidInput) as err:
        check_search(**kwargs, cli=cli)
    assert str(err.value).startswith(message), str(err.value)


def test_check_search_normalises():
    from services.retrieval import Filters, check_search

    args = check_search("  cable  ", filters={"label": "negative"}, k=5)
    assert args.query == "cable" and args.filters == Filters(label="negative") and args.k == 5


def test_each_error_name_has_one_status():
    """Retrieval's store error and the inference service's model-server error are different
    conditions: different names, and the API answers 502 and 503 for them."""
    from services.inference.backends.vllm import BackendUnavailable
    from services.inference.errors import classify
    from services.retrieval import StoreUnavailable

    def status(exc: Exception) -> int:
        return classify(exc)[0]

    assert StoreUnavailable.__name__ != BackendUnavailable.__name__
    assert status(StoreUnavailable("qdrant down")) == 502
    assert status(BackendUnavailable("vllm loading")) == 503
