"""The two seams of retrieval: what a dense index and a sparse index must do, and the one factory
of each that picks a backend from :class:`RetrievalSettings`.

* :class:`DenseIndex` (vectors + payload: Qdrant in ``dense.py``, local mode or a server through
  the same qdrant-client calls) and :func:`open_dense`;
* :class:`SparseIndex` (BM25: tantivy or OpenSearch in ``sparse.py``) and :func:`open_sparse`.

``HybridRetriever`` reads only these protocols, so a new backend is one new module with a class
that satisfies the protocol, plus its branch in the factory here. Both kinds of index store the
same :class:`~services.retrieval.schema.Doc` payload, which is what lets the retriever repair one
index from the other (``retriever.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from services.retrieval.schema import BackendHit, Doc, Filters, Snapshot
from services.retrieval.settings import RetrievalSettings

# Snapshot is defined in schema.py (the backends import it from there) and re-exported here
__all__ = ["DenseIndex", "Snapshot", "SparseIndex", "open_dense", "open_sparse"]


@runtime_checkable
class DenseIndex(Protocol):
    """Text (and image) vectors of reviews with their payload; the retriever's source of truth."""

    where: str  # for messages: "qdrant local /path", "qdrant http://…"

    def upsert(self, docs: Sequence[Doc], text_vectors: np.ndarray,
               image_vectors: Sequence[np.ndarray | None] | None = None) -> None: ...

    def delete(self, ids: Iterable[str]) -> None: ...

    def snapshot(self, ids: Sequence[str]) -> Snapshot: ...

    def restore(self, snap: Snapshot, ids: Sequence[str] | None = None) -> None: ...

    def search(self, vector: np.ndarray, *, using: str = "text", k: int = 10,
               filters: Filters | None = None) -> list[BackendHit]: ...

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def count(self) -> int: ...

    def drop(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class SparseIndex(Protocol):
    """BM25 over ``Doc.content`` with the same filters; ``upsert``/``delete`` return
    ``{id: reason}`` for rejected items; ``transactional`` says whether a call is all or
    nothing."""

    where: str
    transactional: bool

    def upsert(self, docs: Sequence[Doc]) -> dict[str, str]: ...

    def delete(self, ids: Sequence[str]) -> dict[str, str]: ...

    def search(self, query: str, *, k: int = 10,
               filters: Filters | None = None) -> list[BackendHit]: ...

    def count(self) -> int: ...

    def drop(self) -> None: ...

    def close(self) -> None: ...


def open_dense(settings: RetrievalSettings, index_dir: Path | None = None, *,
               collection: str | None = None) -> DenseIndex:
    """Qdrant: a server when ``settings.qdrant_url`` is set, else local mode under
    ``index_dir/qdrant`` (one client API for both)."""
    from services.retrieval.dense import QdrantDenseIndex

    return QdrantDenseIndex.open(settings, index_dir, collection=collection)


def open_sparse(settings: RetrievalSettings, index_dir: Path | None = None, *,
                name: str | None = None) -> SparseIndex:
    """OpenSearch when ``settings.opensearch_url`` is set, else tantivy under
    ``index_dir/tantivy/<name>``."""
    from services.retrieval.sparse import OpenSearchSparseIndex, TantivySparseIndex

    name = name or settings.collection
    if settings.opensearch_url:
        return OpenSearchSparseIndex.open(settings, index=name)
    base = Path(index_dir if index_dir is not None else settings.index_dir())
    return TantivySparseIndex(base / "tantivy" / name)
