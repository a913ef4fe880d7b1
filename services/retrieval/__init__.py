"""Similar-review retrieval: a dense index (Qdrant: text and image vectors) and a sparse one
(BM25: tantivy embedded, OpenSearch on a server), fused by reciprocal rank or weighted scores.

Public interface (the inference service and the CLI use only these):

* :class:`~services.retrieval.retriever.HybridRetriever` — ``open(settings)``, ``index(reviews,
  embeddings=None)``, ``delete(ids)``, ``search(query, image=None, k, filters, mode)``,
  ``status()``.
* :class:`~services.retrieval.schema.Filters`, :class:`~services.retrieval.schema.Hit`.
* :class:`~services.retrieval.settings.RetrievalSettings` (``SHOPSENSE_RETRIEVAL__*``,
  ``SHOPSENSE_QDRANT_URL``, ``SHOPSENSE_OPENSEARCH_URL``).
* :mod:`~services.retrieval.fusion` (``rrf``, ``weighted``) and :mod:`~services.retrieval.beir`
  (``load_beir``, metrics, ``evaluate_beir``).
* :mod:`~services.retrieval.deployment`: ``Retriever`` (the Ray Serve deployment the inference
  application binds) and its clients ``HandleSearchService`` / ``LocalSearchService``.
* :mod:`~services.retrieval.rerank` (the project-trained cross-encoder; off by default).

Importing this package is cheap: torch, qdrant-client, tantivy and opensearch-py load on use.
"""

from services.retrieval.schema import Filters, Hit
from services.retrieval.settings import RetrievalSettings

__all__ = ["Filters", "Hit", "HybridRetriever", "RetrievalSettings"]


def __getattr__(name: str):
    if name == "HybridRetriever":
        from services.retrieval.retriever import HybridRetriever

        return HybridRetriever
    raise AttributeError(name)
