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

Local mode speed (``benchmarks/retrieval_speed.py``): qdrant-client's local mode searches by brute
force, and with ``Distance.COSINE`` it re-normalises every stored vector on every query (an
O(points x dim) pass plus a temporary of that size: most of a dense query at 100k points). Local
collections are therefore created with ``Distance.DOT`` and this class stores and queries unit
vectors (cosine = dot product of unit vectors: same scores and ranking); collections made with
``COSINE`` by earlier versions still open and work. Searches in local mode read the collection's
arrays directly (:meth:`QdrantDenseIndex._local_search`: ``query_points`` makes the query
float64, which upcasts every stored vector on each search, and sorts every score); they fall back
to ``query_points`` if a qdrant-client version lays its collection out differently. A collection
loaded from disk gets float64 matrices from qdrant-client (fresh ones are float32): they are
converted back to float32 on open (half the memory). Its sqlite file is written point by point,
one transaction each; it is switched to WAL with ``synchronous=NORMAL`` (no fsync per point; a
power cut can lose the last writes but not corrupt the file, and a killed process loses nothing).
A server keeps ``COSINE`` (it normalises once, on upsert).

Threads: opening a local-mode index limits numpy's BLAS (OpenBLAS) to one thread for the
process. A local search is one matrix-vector product (memory-bound: one thread is as fast), and
OpenBLAS threads left spinning after it fight torch's OpenMP threads in the next query
embedding: with two of each on 2 cores a dense text query took 20 ms at the median and ~120 ms
at p99 (benchmarks/retrieval_speed.py), with one BLAS thread 9 ms and 17 ms.
"""

from __future__ import annotations

import logging
import sqlite3
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.retrieval.errors import IndexLocked, IndexMismatch, StoreUnavailable
from services.retrieval.schema import BackendHit, Doc, Filters, Snapshot, point_id
from services.retrieval.settings import RetrievalSettings
from shopsense.errors import InvalidInput

# = shopsense.model.encoders.TEXT_DIM / IMAGE_DIM (not imported: that module loads torch, which
# a BM25-only search never needs; a test checks they agree)
TEXT_DIM = 384
IMAGE_DIM = 1280

log = logging.getLogger(__name__)

__all__ = ["VECTORS", "QdrantDenseIndex"]

#: named vectors and their sizes
VECTORS: dict[str, int] = {"text": TEXT_DIM, "image": IMAGE_DIM}
_KEYWORD_FIELDS = ("review_id", "category", "label", "product")


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


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
    """Text and image vectors of reviews, with their payload, in one Qdrant collection (a
    :class:`~services.retrieval.indexes.DenseIndex`)."""

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
        """Run a client call; transport and server errors become one-line StoreUnavailable."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            raise StoreUnavailable(f"{self.where}: {what} failed: {_one_line(exc)}") from exc

    def _distance(self):
        """DOT on unit vectors in local mode (see the module docstring), COSINE on a server."""
        from qdrant_client import models as m

        return m.Distance.DOT if self.local else m.Distance.COSINE

    def ensure_collection(self) -> None:
        from qdrant_client import models as m

        if self._call("collection check", self.client.collection_exists, self.collection):
            self._check_layout()
            self._tune_local()
            return
        self._call("create collection", self.client.create_collection, self.collection,
                   vectors_config={name: m.VectorParams(size=size, distance=self._distance())
                                   for name, size in VECTORS.items()})
        self._tune_local()
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
        # local collections: dot on unit vectors (new) or cosine (made by earlier versions)
        ok = [want, {k: (size, "dot") for k, size in VECTORS.items()}] if self.local else [want]
        if have not in ok:
            raise IndexMismatch(
                f"{self.where}: collection {self.collection!r} has vectors {have or vectors}, "
                f"expected {want}; drop it or choose another SHOPSENSE_RETRIEVAL__COLLECTION")

    def _tune_local(self) -> None:
        if self.local:
            _single_thread_blas()
        self._tune_local_storage()

    def _tune_local_storage(self) -> None:
        """Local mode, best effort (qdrant-client internals):

        * WAL + ``synchronous=NORMAL`` on the collection's sqlite file (it commits once per
          point; with the default rollback journal every commit is several fsyncs, most of the
          indexing time);
        * float32 vector matrices: a collection loaded from disk gets float64 ones (built from
          the stored lists of Python floats), twice the memory of a fresh collection's."""
        if not self.local:
            return
        try:
            coll = self.client._client.collections[self.collection]
        except (AttributeError, KeyError, TypeError):
            return
        vectors = getattr(coll, "vectors", None)
        if isinstance(vectors, dict):
            for name, arr in list(vectors.items()):
                if isinstance(arr, np.ndarray) and arr.dtype == np.float64:
                    vectors[name] = arr.astype(np.float32)
        conn = getattr(getattr(coll, "storage", None), "storage", None)
        if not isinstance(conn, sqlite3.Connection):
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:  # pragma: no cover - still correct, only slower
            log.debug("%s: could not tune sqlite: %s", self.where, exc)

    # -- writes --------------------------------------------------------------------------
    def upsert(self, docs: Sequence[Doc], text_vectors: np.ndarray,
               image_vectors: Sequence[np.ndarray | None] | None = None) -> None:
        from qdrant_client import models as m

        text_vectors = np.asarray(text_vectors, dtype=np.float32)
        if text_vectors.shape != (len(docs), VECTORS["text"]):
            raise InvalidInput(f"text vectors must have shape ({len(docs)}, {VECTORS['text']}), "
                               f"got {text_vectors.shape}")
        text_vectors = _unit(text_vectors)
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
                vector["image"] = _unit(ivec).tolist()
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
        state = {r.payload["review_id"]: r for r in records}
        return Snapshot(list(ids), {i: r.payload for i, r in state.items()}, state)

    def restore(self, snap: Snapshot, ids: Sequence[str] | None = None) -> None:
        """Put ``ids`` (default: all of the snapshot) back as they were: re-upsert the points
        that existed, delete the ones that did not."""
        from qdrant_client import models as m

        ids = snap.ids if ids is None else list(ids)
        state = snap.state or {}
        back = [m.PointStruct(id=state[i].id, vector=state[i].vector, payload=state[i].payload)
                for i in ids if i in state]
        gone = [i for i in ids if i not in state]
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
        vector = _unit(vector)
        coll = self._local_collection()
        if coll is not None:
            return self._local_search(coll, vector, using=using, k=k, filters=filters)
        res = self._call("search", self.client.query_points, self.collection,
                         query=vector.tolist(), using=using,
                         query_filter=_filter(filters), limit=k, with_payload=True,
                         with_vectors=False)
        # model_construct: the fields are already typed (str, float, dict); validating 100
        # candidates per list costs more than the rest of a small search
        return [BackendHit.model_construct(id=str(p.payload["review_id"]), score=float(p.score),
                                           payload=p.payload)
                for p in res.points]

    # local mode's search, without its float64 upcast and full sort
    _LOCAL_ATTRS = ("vectors", "payload", "deleted", "deleted_per_vector",
                    "_payload_and_non_deleted_mask")

    def _local_collection(self) -> Any:
        """qdrant-client's in-memory collection in local mode, when it has the attributes
        :meth:`_local_search` reads (else ``None``: the search goes through ``query_points``)."""
        if not self.local:
            return None
        try:
            coll = self.client._client.collections[self.collection]
        except (AttributeError, KeyError, TypeError):
            return None
        if not all(hasattr(coll, a) for a in self._LOCAL_ATTRS):
            return None
        vectors = getattr(coll, "vectors", None)
        if not isinstance(vectors, dict) or not all(
                isinstance(vectors.get(name), np.ndarray) and vectors[name].dtype == np.float32
                for name in VECTORS):
            return None
        return coll

    def _local_search(self, coll: Any, vector: np.ndarray, *, using: str, k: int,
                      filters: Filters | None) -> list[BackendHit]:
        """What ``query_points`` computes in local mode (exact search over every point, the
        same filter and deleted-point mask), done in float32 with a partial sort.

        ``query_points`` turns the query into a list of Python floats, so numpy multiplies the
        float32 (points x dim) matrix by a float64 vector: it copies the whole matrix to float64
        on every search (about x14 slower than the float32 product at 100k points), then sorts
        every score. Local collections hold unit vectors (DOT on unit vectors here, or COSINE,
        which normalises on upsert), so the score is the float32 dot product either way. Ties
        go to the later-inserted point, as in qdrant's ``argsort()[::-1]``."""
        n = len(coll.payload)
        if n == 0 or k < 1:
            return []
        mask = coll._payload_and_non_deleted_mask(_filter(filters), vector_name=using)
        cand = np.flatnonzero(mask[:n])
        if cand.size == 0:
            return []
        scores = coll.vectors[using][:n][cand] @ vector if cand.size < n // 2 else \
            (coll.vectors[using][:n] @ vector)[cand]
        if cand.size > k:
            kth = np.partition(scores, cand.size - k)[cand.size - k]  # the k-th largest
            above = np.flatnonzero(scores > kth)
            ties = np.flatnonzero(scores == kth)
            sel = np.concatenate([above, ties[len(ties) - (k - above.size):]])
        else:
            sel = np.arange(cand.size)
        sel = sel[np.lexsort((-cand[sel], -scores[sel]))]
        hits = []
        for pos in sel:
            payload = dict(coll.payload[cand[pos]])  # a copy, as query_points returns
            hits.append(BackendHit.model_construct(id=str(payload["review_id"]),
                                                   score=float(scores[pos]), payload=payload))
        return hits

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


_BLAS_LIMIT: list[Any] = []


def _single_thread_blas() -> None:
    """One BLAS thread for this process, once (see the module docstring, "Threads")."""
    if _BLAS_LIMIT:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, leave BLAS alone
        return
    _BLAS_LIMIT.append(threadpool_limits(limits=1, user_api="blas"))
