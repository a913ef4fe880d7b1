"""Similar-review retrieval: a dense index (Qdrant: text and image vectors) and a sparse one
(BM25: tantivy embedded, OpenSearch on a server), fused by reciprocal rank or weighted scores.

Public interface (the inference service and the CLI use only these):

* :class:`~services.retrieval.retriever.HybridRetriever` — ``open(settings)``, ``index(reviews,
  embeddings=None)``, ``delete(ids)``, ``search(query, image=None, k, filters, mode)``,
  ``status()``.
* :func:`~services.retrieval.request.check_search`: the checks of a search request, which every
  entry point (API, CLI, retriever) applies before doing any work.
* :class:`~services.retrieval.schema.Filters`, :class:`~services.retrieval.schema.Hit`.
* :class:`~services.retrieval.settings.RetrievalSettings` (``SHOPSENSE_RETRIEVAL__*``,
  ``SHOPSENSE_QDRANT_URL``, ``SHOPSENSE_OPENSEARCH_URL``).
* :mod:`~services.retrieval.indexes`: the ``DenseIndex`` / ``SparseIndex`` protocols and their
  ``open_dense`` / ``open_sparse`` factories (one new backend = one module + its branch there).
* :mod:`~services.retrieval.deployment`: ``Retriever`` (the Ray Serve deployment the inference
  application binds) and its clients ``HandleSearchService`` / ``LocalSearchService``.
* :mod:`~services.retrieval.rerank` (the project-trained cross-encoder, serving side).

What evaluates and trains (BEIR evaluation, review sets, LLM-written training queries, reranker
training) is in :mod:`services.retrieval.offline`, which nothing that serves imports.

Importing this package is cheap: torch, qdrant-client, tantivy and opensearch-py load on use.
"""

from services.retrieval.errors import StoreUnavailable
from services.retrieval.request import MAX_K, SearchArgs, check_search
from services.retrieval.schema import Filters, Hit
from services.retrieval.settings import RetrievalSettings

__all__ = ["MAX_K", "Filters", "Hit", "HybridRetriever", "RetrievalSettings", "SearchArgs",
           "StoreUnavailable", "check_search"]


def __getattr__(name: str):
    if name == "HybridRetriever":
        from services.retrieval.retriever import HybridRetriever

        return HybridRetriever
    raise AttributeError(name)
