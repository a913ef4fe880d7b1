"""The dense index: Qdrant through qdrant-client, embedded or as a server, with the same calls.

* ``QdrantClient(path=<index dir>/qdrant)`` (local mode) unless ``SHOPSENSE_QDRANT_URL`` is set,
  then ``QdrantClient(url=...)``. Everything below is the same code for both.
* One collection (``RetrievalSettings.collection``) with two named vectors: ``text`` (384,
  cosine; every point) and ``image`` (1280, cosine; only points whose review has an image).
* Point id = ``uuid5(namespace, review id)`` (:func:`~services.retrieval.schema.point_id`);
  the review id is kept in the payload as ``review_id``. Upserting a review replaces its point
  whole (a new version without an image loses its old image vector).
* Payload indexes on the filter fields (keyword: category, label, product, review_id; float:
  rating). Local mode ignores payload indexes (it scans); the call is still made, so a server
  gets them.

Local mode holds a file lock on its folder: one process at a time (use a server for more).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.retrieval.errors import BackendUnavailable, IndexLocked, IndexMismatch
from services.retrieval.schema import BackendHit, Doc, Filters, point_id
from services.retrieval.settings import RetrievalSettings
from shopsense.errors import InvalidInput

# = shopsense.model.encoders.TEXT_DIM / IMAGE_DIM (not imported: that module loads torch, which
# a BM25-only search never needs; a test checks they agree)
TEXT_DIM = 384
IMAGE_DIM = 1280

log = logging.getLogger(__name__)

__all__ = ["VECTORS", "QdrantDenseIndex", "Snapshot"]

#: named vectors and their sizes
VECTORS: dict[str, int] = {"text": TEXT_DIM, "image": IMAGE_DIM}
_KEYWORD_FIELDS = ("review_id", "category", "label", "product")


class Snapshot:
    """The stored state of some points before a write, to restore on failure."""

    def __init__(self, records: dict[str, Any], ids: Sequence[str]) -> None:
        self.records = records  # review id -> qdrant Record (vectors + payload)
        self.ids = list(ids)

    @property
    def existing(self) -> list[str]:
        return [i for i in self.ids if i in self.records]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _filter(filters: Filters | None):
    from qdrant_client import models as m

    if filters is None or filters.is_empty():
        return None
    must: list[Any] = [
        m.FieldCondition(key=key, match=m.MatchValue(value=value))
        for key, value in filters.terms().items()
    ]
    if filters.rating_gte is not None or filters.rating_lte is not None:
        must.append(m.FieldCondition(key="rating",
                                     range=m.Range(gte=filters.rating_gte, lte=filters.rating_lte)))
    return m.Filter(must=must)


class QdrantDenseIndex:
    """Text and image vectors of reviews, with their payload, in one Qdrant collection."""

    def __init__(self, client: Any, collection: str, *, where: str) -> None:
        self.client = client
        self.collection = collection
        self.where = where  # for messages: "qdrant local /path" or "qdrant http://…"
        self.local = where.startswith("qdrant local")

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: RetrievalSettings, index_dir: Path | None = None, *,
             collection: str | None = None) -> QdrantDenseIndex:
        """Local mode under ``index_dir/qdrant`` unless ``settings.qdrant_url`` is set."""
        from qdrant_client import QdrantClient

        name = collection or settings.collection
        if settings.qdrant_url:
            # check_compatibility off: it runs in a background thread and only warns (on
            # stderr, mid-output); an unreachable server fails the next call in one line instead
            client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key,
                                  timeout=int(max(1, settings.timeout_s)),
                                  check_compatibility=False)
            where = f"qdrant {settings.qdrant_url}"
        else:
            path = Path(index_dir if index_dir is not None else settings.index_dir()) / "qdrant"
            path.mkdir(parents=True, exist_ok=True)
            try:
                client = QdrantClient(path=str(path))
            except RuntimeError as exc:  # portalocker: folder held by another client
                raise IndexLocked(
                    f"the local Qdrant index {path} is open in another process (stop it, or set "
                    "SHOPSENSE_QDRANT_URL to share a Qdrant server)") from exc
            where = f"qdrant local {path}"
        index = cls(client, name, where=where)
        try:
            index.ensure_collection()
        except BaseException:
            index.close()
            raise
        return index

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a client call; transport and server errors become one-line BackendUnavailable."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            raise BackendUnavailable(f"{self.where}: {what} failed: {_one_line(exc)}") from exc

    def ensure_collection(self) -> None:
        from qdrant_client import models as m

        if self._call("collection check", self.client.collection_exists, self.collection):
            self._check_layout()
            return
        self._call("create collection", self.client.create_collection, self.collection,
                   vectors_config={name: m.VectorParams(size=size, distance=m.Distance.COSINE)
                                   for name, size in VECTORS.items()})
        schemas = {**{f: m.PayloadSchemaType.KEYWORD for f in _KEYWORD_FIELDS},
                   "rating": m.PayloadSchemaType.FLOAT}
        with warnings.catch_warnings():
            # local mode warns that payload indexes have no effect there: expected
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in schemas.items():
                self._call("create payload index", self.client.create_payload_index,
                           self.collection, field, field_schema=schema)

    def _check_layout(self) -> None:
        info = self._call("collection info", self.client.get_collection, self.collection)
        vectors = info.config.params.vectors
        have = ({k: (v.size, str(getattr(v.distance, "value", v.distance)).lower())
                 for k, v in vectors.items()} if isinstance(vectors, dict) else {})
        want = {k: (size, "cosine") for k, size in VECTORS.items()}
        if have != want:
            raise IndexMismatch(
                f"{self.where}: collection {self.collection!r} has vectors {have or vectors}, "
                f"expected {want}; drop it or choose another SHOPSENSE_RETRIEVAL__COLLECTION")

    # -- writes --------------------------------------------------------------------------
    def upsert(self, docs: Sequence[Doc], text_vectors: np.ndarray,
               image_vectors: Sequence[np.ndarray | None] | None = None) -> None:
        from qdrant_client import models as m

        text_vectors = np.asarray(text_vectors, dtype=np.float32)
        if text_vectors.shape != (len(docs), VECTORS["text"]):
            raise InvalidInput(f"text vectors must have shape ({len(docs)}, {VECTORS['text']}), "
                               f"got {text_vectors.shape}")
        images = list(image_vectors) if image_vectors is not None else [None] * len(docs)
        if len(images) != len(docs):
            raise InvalidInput(f"{len(images)} image vectors for {len(docs)} reviews")
        points = []
        for doc, tvec, ivec in zip(docs, text_vectors, images, strict=True):
            vector = {"text": tvec.tolist()}
            if ivec is not None:
                ivec = np.asarray(ivec, dtype=np.float32)
                if ivec.shape != (VECTORS["image"],):
                    raise InvalidInput(f"image vector of {doc.id} has shape {ivec.shape}")
                vector["image"] = ivec.tolist()
            payload = {**doc.payload(), "has_image": ivec is not None}
            points.append(m.PointStruct(id=point_id(doc.id), vector=vector, payload=payload))
        if points:
            self._call("upsert", self.client.upsert, self.collection, points, wait=True)

    def delete(self, ids: Iterable[str]) -> None:
        from qdrant_client import models as m

        pids = [point_id(i) for i in ids]
        if pids:
            self._call("delete", self.client.delete, self.collection,
                       points_selector=m.PointIdsList(points=pids), wait=True)

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        """Current points (vectors and payload) of ``ids``, for :meth:`restore`."""
        records = self._call("retrieve", self.client.retrieve, self.collection,
                             [point_id(i) for i in ids], with_payload=True, with_vectors=True)
        return Snapshot({r.payload["review_id"]: r for r in records}, ids)

    def restore(self, snap: Snapshot, ids: Sequence[str] | None = None) -> None:
        """Put ``ids`` (default: all of the snapshot) back as they were: re-upsert the points
        that existed, delete the ones that did not."""
        from qdrant_client import models as m

        ids = snap.ids if ids is None else list(ids)
        back = [m.PointStruct(id=snap.records[i].id, vector=snap.records[i].vector,
                              payload=snap.records[i].payload) for i in ids if i in snap.records]
        gone = [i for i in ids if i not in snap.records]
        if back:
            self._call("restore", self.client.upsert, self.collection, back, wait=True)
        self.delete(gone)

    def drop(self) -> None:
        self._call("delete collection", self.client.delete_collection, self.collection)

    # -- reads ---------------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, using: str = "text", k: int = 10,
               filters: Filters | None = None) -> list[BackendHit]:
        if using not in VECTORS:
            raise InvalidInput(f"unknown vector {using!r}; choose text or image")
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (VECTORS[using],):
            raise InvalidInput(f"{using} query vector must have {VECTORS[using]} values, "
                               f"got {vector.shape[0]}")
        res = self._call("search", self.client.query_points, self.collection,
                         query=vector.tolist(), using=using, query_filter=_filter(filters),
                         limit=k, with_payload=True, with_vectors=False)
        return [BackendHit(id=p.payload["review_id"], score=float(p.score), payload=p.payload)
                for p in res.points]

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the ``ids`` that are indexed."""
        records = self._call("retrieve", self.client.retrieve, self.collection,
                             [point_id(i) for i in ids], with_payload=True, with_vectors=False)
        return {r.payload["review_id"]: r.payload for r in records}

    def count(self) -> int:
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as exc:  # pragma: no cover - best effort
            log.debug("closing %s: %s", self.where, exc)


def _is_transport_error(exc: BaseException) -> bool:
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover
        return False
    import httpx

    if isinstance(exc, (UnexpectedResponse, ResponseHandlingException, httpx.HTTPError,
                        ConnectionError, TimeoutError)):
        return True
    try:
        import grpc

        return isinstance(exc, grpc.RpcError)
    except ImportError:  # pragma: no cover
        return False
