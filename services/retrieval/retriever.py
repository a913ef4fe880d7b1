"""Hybrid retrieval of similar reviews: a dense index (Qdrant) and a sparse one (BM25), fused.

``HybridRetriever.open()`` picks the backends from :class:`RetrievalSettings` (Qdrant local mode
or server; tantivy or OpenSearch) and is otherwise the same object in every deployment.

Search (``search(query, image=None, k, filters, mode)``)
    Each retriever returns its top ``candidates`` (default 100, at least ``k``) under the same
    filters: ``dense`` (MiniLM query vector against the ``text`` vectors), ``sparse`` (BM25)
    and, when a query image is given, ``image`` (EfficientNet vector against the ``image``
    vectors). ``mode=hybrid`` uses every list the input allows (text → dense + sparse, image →
    image, both → three lists); ``dense`` uses the vector lists only; ``sparse`` BM25 only.
    Two or more lists are fused (``rrf`` or ``weighted``, from settings); a single list keeps its
    own scores. Every hit carries each retriever's raw score and rank (``None`` where it was not
    in that list) and the fused score.

    ``rerank=True`` (default ``SHOPSENSE_RETRIEVAL__RERANK``, off) re-scores the fused top
    ``rerank_depth`` (30) with the project's trained cross-encoder (``rerank.py``; trained by
    ``shopsense retrieval train-reranker``): such hits get the reranker's combined score as
    ``score`` and its raw logit as ``scores["rerank"]``. It needs a query text; asking for it
    without a trained reranker raises ``RerankerNotTrained`` (a ``ModelNotFound``).

Writes, and what a failure leaves behind
    Reviews are written in batches (``batch_size``). For each batch, embeddings are computed
    first (no side effects); then the batch's current dense points are snapshotted, its ids are
    written to a small journal file (``<index dir>/<collection>.pending.json``), the dense index
    is upserted, then the sparse index; the journal is cleared when both succeeded.

    * dense write fails → the dense points are restored from the snapshot (the sparse index
      was not touched) → :class:`IndexingFailed` (``rolled_back`` = the batch).
    * sparse write fails as a whole → dense restored from the snapshot, and the sparse documents
      rebuilt from the same snapshot (the payload holds every sparse field) → ``rolled_back``.
    * OpenSearch rejects some items of a bulk request → those ids are rolled back in both, the
      others stay written; ``IndexingFailed`` says which are which.
    * the rollback itself fails, or the process dies mid-batch → the journal stays; its ids
      are reported as possibly ``inconsistent``. The next ``index``/``delete`` repairs them first
      by making the sparse index agree with the dense one (dense = source of truth: its payload
      is re-written to, or its absence deleted from, the sparse index), and logs what it did.

    Earlier batches stay written (in both indexes): re-running the same ``index`` is an upsert.
    Deletes follow the same steps (snapshot, dense, sparse, restore on failure).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.retrieval.errors import IndexingFailed
from services.retrieval.fusion import fuse
from services.retrieval.indexes import DenseIndex, Snapshot, SparseIndex, open_dense, open_sparse
from services.retrieval.request import MAX_K, check_search
from services.retrieval.schema import BackendHit, Doc, Filters, Hit
from services.retrieval.settings import RetrievalSettings
from shopsense.errors import InvalidInput
from shopsense.schemas import ImageRef, Review

log = logging.getLogger(__name__)

__all__ = ["MAX_K", "DeleteReport", "Embeddings", "HybridRetriever", "IndexReport"]


@dataclass
class Embeddings:
    """Precomputed vectors for ``HybridRetriever.index``: ``text`` (n, 384) in review order and
    optionally one image vector (1280,) or ``None`` per review."""

    text: np.ndarray
    image: Sequence[np.ndarray | None] | None = None


@dataclass
class IndexReport:
    indexed: int = 0
    with_image: int = 0
    batches: int = 0
    image_errors: dict[str, str] = field(default_factory=dict)
    repaired: int = 0
    seconds: float = 0.0
    dense: str = ""
    sparse: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("indexed", "with_image", "batches", "image_errors",
                                              "repaired", "seconds", "dense", "sparse")}


@dataclass
class DeleteReport:
    requested: int = 0
    deleted: int = 0
    not_found: list[str] = field(default_factory=list)
    repaired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "deleted": self.deleted,
                "not_found": self.not_found, "repaired": self.repaired}


def _as_doc(item: Review | Doc | dict) -> Doc:
    if isinstance(item, Doc):
        return item
    if isinstance(item, Review):
        return Doc.from_review(item)
    if isinstance(item, dict):
        from pydantic import ValidationError

        try:
            return Doc.from_review(Review.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "review"
            raise InvalidInput(f"invalid review: {where}: {first.get('msg')}") from exc
    raise InvalidInput(f"cannot index a {type(item).__name__}; give Review objects")


def _batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class HybridRetriever:
    """Dense + sparse indexes of reviews behind one index/delete/search interface."""

    def __init__(
        self,
        dense: DenseIndex,
        sparse: SparseIndex,
        settings: RetrievalSettings | None = None,
        *,
        journal: Path | None = None,
        text_embedder: Any = None,
        image_embedder: Any = None,
        reranker: Any = None,
    ) -> None:
        self.dense = dense
        self.sparse = sparse
        self.settings = settings or RetrievalSettings()
        self.journal = journal
        self._text_embedder = text_embedder
        self._image_embedder = image_embedder
        self._reranker = reranker
        if journal is not None and journal.exists():
            log.warning("an earlier index/delete run was interrupted (%s); the next write "
                        "repairs the reviews it names", journal)

    @classmethod
    def open(
        cls,
        settings: RetrievalSettings | None = None,
        *,
        home: Path | None = None,
        index_dir: Path | None = None,
        collection: str | None = None,
        text_embedder: Any = None,
        image_embedder: Any = None,
    ) -> HybridRetriever:
        """The retriever the settings describe (``indexes.open_dense`` / ``open_sparse``: local
        folders under ``index_dir`` or ``<home>/retrieval``, or the servers of the settings)."""
        settings = settings or RetrievalSettings()
        base = Path(index_dir) if index_dir is not None else settings.index_dir(home)
        base.mkdir(parents=True, exist_ok=True)
        name = collection or settings.collection
        dense = open_dense(settings, base, collection=name)
        try:
            sparse = open_sparse(settings, base, name=name)
        except BaseException:
            dense.close()
            raise
        retriever = cls(dense, sparse, settings, journal=base / f"{name}.pending.json",
                        text_embedder=text_embedder, image_embedder=image_embedder)
        try:  # a write killed mid-batch: make both indexes agree before anything reads them
            retriever.repair()
        except Exception as exc:  # noqa: BLE001 - the next write retries; the journal stays
            log.warning("could not repair the interrupted write yet: %s", exc)
        return retriever

    def close(self) -> None:
        self.dense.close()
        self.sparse.close()

    def __enter__(self) -> HybridRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- embedders -----------------------------------------------------------------------
    @property
    def text_embedder(self):
        if self._text_embedder is None:
            from shopsense.embed import text_embedder

            self._text_embedder = text_embedder(self.settings.text_max_length,
                                                self.settings.embed_batch_size)
        return self._text_embedder

    @property
    def reranker(self):
        """The trained reranker (loaded on first use from ``settings.reranker_dir``)."""
        if self._reranker is None:
            from services.retrieval.rerank import Reranker

            self._reranker = Reranker.load(self.settings.resolved_reranker_dir(),
                                           max_length=self.settings.rerank_max_length,
                                           batch_size=self.settings.rerank_batch_size)
        return self._reranker

    @property
    def image_embedder(self):
        if self._image_embedder is None:
            from shopsense.embed import image_embedder

            self._image_embedder = image_embedder()
        return self._image_embedder

    # -- journal -------------------------------------------------------------------------
    def _pending(self) -> list[str]:
        if self.journal is None or not self.journal.exists():
            return []
        try:
            return [str(i) for i in json.loads(self.journal.read_text())["ids"]]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("unreadable journal %s: ignoring it", self.journal)
            return []

    def _journal_set(self, ids: Sequence[str]) -> None:
        if self.journal is None:
            return
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        tmp.write_text(json.dumps({"ids": list(ids), "at": time.time()}))
        os.replace(tmp, self.journal)

    def _journal_clear(self) -> None:
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)

    def repair(self) -> int:
        """Make the sparse index agree with the dense one for the ids of an interrupted write;
        returns how many ids were repaired."""
        ids = self._pending()
        if not ids:
            self._journal_clear()
            return 0
        present = self.dense.get(ids)
        failed = self.sparse.upsert([Doc.from_payload(p) for p in present.values()])
        failed.update(self.sparse.delete([i for i in ids if i not in present]))
        if failed:
            raise IndexingFailed("repairing an interrupted write failed in the sparse index "
                                 f"({next(iter(failed.values()))})", inconsistent=list(failed))
        self._journal_clear()
        log.warning("repaired %d reviews left by an interrupted write: the sparse index now "
                    "agrees with the dense index for them", len(ids))
        return len(ids)

    # -- writes --------------------------------------------------------------------------
    def _restore_sparse(self, snap: Snapshot, ids: Sequence[str]) -> dict[str, str]:
        back = [Doc.from_payload(snap.payloads[i]) for i in ids if i in snap.payloads]
        failed = self.sparse.upsert(back)
        failed.update(self.sparse.delete([i for i in ids if i not in snap.payloads]))
        return failed

    def _rollback(self, snap: Snapshot, ids: Sequence[str], *, stage: str, cause: str,
                  written: Sequence[str], sparse_touched: bool) -> IndexingFailed:
        problems = []
        try:
            self.dense.restore(snap, ids)
        except Exception as exc:
            problems.append(f"dense: {exc}")
        if sparse_touched:
            try:
                failed = self._restore_sparse(snap, ids)
                if failed:
                    problems.append(f"sparse: {next(iter(failed.values()))}")
            except Exception as exc:
                problems.append(f"sparse: {exc}")
        if problems:
            self._journal_set(ids)
            return IndexingFailed(f"{stage} failed ({cause}); the rollback failed too "
                                  f"({'; '.join(problems)})", written=written, inconsistent=ids)
        return IndexingFailed(f"{stage} failed ({cause})", written=written, rolled_back=ids)

    def _write(self, docs: list[Doc], tvecs: np.ndarray | None,
               ivecs: Sequence[np.ndarray | None] | None, written: list[str], *,
               delete: bool) -> list[str]:
        """Write one batch to both indexes (see the module docstring); returns the ids written."""
        ids = [d.id for d in docs]
        snap = self.dense.snapshot(ids)
        self._journal_set(ids)
        try:
            if delete:
                self.dense.delete(ids)
            else:
                self.dense.upsert(docs, tvecs, ivecs)
        except Exception as exc:
            err = self._rollback(snap, ids, stage="the dense index", cause=str(exc),
                                 written=written, sparse_touched=False)
            self._clear_if_rolled_back(err)
            raise err from exc
        try:
            failed = self.sparse.delete(ids) if delete else self.sparse.upsert(docs)
        except Exception as exc:
            err = self._rollback(snap, ids, stage="the sparse index", cause=str(exc),
                                 written=written, sparse_touched=True)
            self._clear_if_rolled_back(err)
            raise err from exc
        if failed:
            bad = [i for i in ids if i in failed]
            ok = [i for i in ids if i not in failed]
            cause = f"{len(bad)} rejected, e.g. {bad[0]}: {failed[bad[0]]}"
            err = self._rollback(snap, bad, stage="the sparse index", cause=cause,
                                 written=[*written, *ok], sparse_touched=True)
            self._clear_if_rolled_back(err)
            raise err
        self._journal_clear()
        return ids

    def _clear_if_rolled_back(self, err: IndexingFailed) -> None:
        if not err.inconsistent:
            self._journal_clear()

    def _image_vectors(self, docs: Sequence[Doc],
                       loader: Callable[[ImageRef], bytes] | None,
                       errors: dict[str, str]) -> list[np.ndarray | None]:
        """One vector per doc with an image (its first image), ``None`` otherwise. An image that
        cannot be loaded is logged and recorded in ``errors``; the review is indexed by text."""
        from shopsense.errors import ShopsenseError
        from shopsense.images import decode_image
        from shopsense.settings import get_settings

        limits = get_settings().images
        images, where = [], []
        for pos, doc in enumerate(docs):
            if not doc.images:
                continue
            if loader is None:
                errors[doc.id] = "no image loader for its reference"
                continue
            try:
                raw = loader(doc.images[0])
                images.append(decode_image(raw, max_bytes=limits.max_bytes,
                                           max_pixels=limits.max_pixels))
                where.append(pos)
            except (ShopsenseError, OSError, ValueError) as exc:
                errors[doc.id] = f"{doc.images[0].uri}: {exc}"
                log.warning("review %s: image %s not indexed: %s", doc.id, doc.images[0].uri, exc)
        out: list[np.ndarray | None] = [None] * len(docs)
        if images:
            for pos, vec in zip(where, self.image_embedder.embed(images), strict=True):
                out[pos] = vec
        return out

    def index(
        self,
        reviews: Iterable[Review | Doc],
        embeddings: Embeddings | np.ndarray | None = None,
        *,
        image_loader: Callable[[ImageRef], bytes] | None = None,
        progress: bool = False,
        total: int | None = None,
        description: str = "index",
    ) -> IndexReport:
        """Upsert reviews (by id) into both indexes. Without ``embeddings``, text vectors come
        from MiniLM and image vectors (first image of a review) from EfficientNet-Lite0, with
        images fetched by ``image_loader``. See the module docstring for failure handling."""
        t0 = time.monotonic()
        report = IndexReport(dense=self.dense.where, sparse=self.sparse.where)
        if isinstance(embeddings, np.ndarray):
            embeddings = Embeddings(text=embeddings)
        if embeddings is not None:
            reviews = list(reviews)
            if len(embeddings.text) != len(reviews):
                raise InvalidInput(f"{len(embeddings.text)} text embeddings for "
                                   f"{len(reviews)} reviews")
            if embeddings.image is not None and len(embeddings.image) != len(reviews):
                raise InvalidInput(f"{len(embeddings.image)} image embeddings for "
                                   f"{len(reviews)} reviews")
            total = len(reviews)
        report.repaired = self.repair()
        size = self.settings.batch_size
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=description, unit="review", leave=False, disable=None)
        written: list[str] = []
        offset = 0
        try:
            for batch in _batches(reviews, size):
                docs = [_as_doc(r) for r in batch]
                if embeddings is not None:
                    tvecs = np.asarray(embeddings.text[offset : offset + len(docs)])
                    ivecs = (list(embeddings.image[offset : offset + len(docs)])
                             if embeddings.image is not None else None)
                else:
                    tvecs = self.text_embedder.embed([d.content for d in docs])
                    ivecs = self._image_vectors(docs, image_loader, report.image_errors)
                offset += len(docs)
                written += self._write(docs, tvecs, ivecs, written, delete=False)
                report.batches += 1
                report.with_image += sum(v is not None for v in ivecs or ())
                if bar is not None:
                    bar.update(len(docs))
        finally:
            if bar is not None:
                bar.close()
        report.indexed = len(set(written))
        report.seconds = round(time.monotonic() - t0, 3)
        return report

    def delete(self, ids: Iterable[str]) -> DeleteReport:
        """Remove reviews from both indexes (ids not indexed are reported, not an error)."""
        ids = list(dict.fromkeys(str(i) for i in ids))
        report = DeleteReport(requested=len(ids))
        report.repaired = self.repair()
        written: list[str] = []
        for batch in _batches(ids, self.settings.batch_size):
            present = self.dense.get(batch)
            report.not_found += [i for i in batch if i not in present]
            written += self._write([Doc(id=i, text="") for i in batch], None, None, written,
                                   delete=True)
            report.deleted += len(present)
        return report

    # -- reads ---------------------------------------------------------------------------
    def _query_image_vector(self, image: Any) -> np.ndarray:
        from PIL import Image

        if isinstance(image, np.ndarray) and image.ndim == 1:
            return image.astype(np.float32)
        if isinstance(image, (bytes, bytearray)):
            from shopsense.images import decode_image
            from shopsense.settings import get_settings

            limits = get_settings().images
            image = decode_image(bytes(image), max_bytes=limits.max_bytes,
                                 max_pixels=limits.max_pixels)
        if not isinstance(image, Image.Image):
            raise InvalidInput(f"query image must be image bytes or a PIL image, "
                               f"got {type(image).__name__}")
        return self.image_embedder.embed_one(image)

    def rankings(
        self,
        query: str | None = None,
        image: Any = None,
        *,
        depth: int = 100,
        filters: Filters | None = None,
        mode: str = "hybrid",
        text_vector: np.ndarray | None = None,
    ) -> dict[str, list[BackendHit]]:
        """The ranked list of each retriever the mode and input call for (unfused)."""
        query = (query or "").strip() or None
        lists: dict[str, list[BackendHit]] = {}
        if query and mode in ("hybrid", "dense"):
            vec = text_vector if text_vector is not None else self.text_embedder.embed_one(query)
            lists["dense"] = self.dense.search(vec, using="text", k=depth, filters=filters)
        if query and mode in ("hybrid", "sparse"):
            lists["sparse"] = self.sparse.search(query, k=depth, filters=filters)
        if image is not None and mode in ("hybrid", "dense"):
            lists["image"] = self.dense.search(self._query_image_vector(image), using="image",
                                               k=depth, filters=filters)
        return lists

    def fuse(self, lists: dict[str, list[BackendHit]], k: int, *, method: str | None = None,
             rrf_k: int | None = None, weights: dict[str, float] | None = None) -> list[Hit]:
        """Fuse ranked lists into ``k`` hits (a single list keeps its own scores)."""
        by_id: dict[str, dict[str, Any]] = {}
        scores: dict[str, dict[str, float]] = {}
        ranks: dict[str, dict[str, int]] = {}
        for name, hits in lists.items():
            for rank, hit in enumerate(hits, start=1):
                by_id.setdefault(hit.id, hit.payload)
                if name not in ranks.setdefault(hit.id, {}):
                    ranks[hit.id][name] = rank
                    scores.setdefault(hit.id, {})[name] = hit.score
        if len(lists) > 1:
            fused = fuse({n: [(h.id, h.score) for h in hs] for n, hs in lists.items()},
                         method or self.settings.fusion,
                         rrf_k=rrf_k or self.settings.rrf_k,
                         weights=weights or self.settings.weights())
        else:
            fused = [(h.id, h.score) for h in next(iter(lists.values()), [])]
        out = []
        for doc_id, score in fused[:k]:
            p = by_id[doc_id]
            out.append(Hit(
                id=doc_id, score=float(score),
                scores={n: scores[doc_id].get(n) for n in lists},
                ranks={n: ranks[doc_id].get(n) for n in lists},
                text=p.get("text") or "", title=p.get("title"), label=p.get("label"),
                rating=p.get("rating"), product=p.get("product"), category=p.get("category"),
            ))
        return out

    def search(
        self,
        query: str | None = None,
        image: Any = None,
        *,
        k: int = 10,
        filters: Filters | dict | None = None,
        mode: str = "hybrid",
        fusion: str | None = None,
        rerank: bool | None = None,
        image_features: tuple[str, np.ndarray] | None = None,
    ) -> list[Hit]:
        """Ranked reviews similar to ``query`` (text) and/or ``image`` (bytes or PIL image);
        ``rerank`` (``None`` = the setting) re-scores the fused head (module docstring).
        ``image_features`` = ``(encoder id, unit vector)`` of ``image`` computed elsewhere (the
        classifier's image branch): used instead of encoding the photo again when the id is
        this index's image encoder (``ImageEmbedder.encoder_id``), else ignored."""
        args = check_search(query, has_image=image is not None, mode=mode, k=k, fusion=fusion,
                            rerank=rerank, filters=filters)
        text, filters = args.query or "", args.filters
        if (image is not None and image_features is not None
                and image_features[0] is not None
                and image_features[0] == getattr(self.image_embedder, "encoder_id", None)):
            image = np.asarray(image_features[1], dtype=np.float32).reshape(-1)
        do_rerank = (self.settings.rerank if rerank is None else rerank) and bool(text)
        reranker = self.reranker if do_rerank else None  # fails before searching if untrained
        depth = max(k, self.settings.candidates)
        lists = self.rankings(text, image, depth=depth, filters=filters, mode=mode)
        if reranker is None:
            return self.fuse(lists, k, method=fusion)
        hits = self.fuse(lists, max(k, self.settings.rerank_depth), method=fusion)
        by_id = {h.id: h for h in hits}
        cands = [(h.id, Doc(id=h.id, text=h.text, title=h.title).content, h.score) for h in hits]
        out = []
        for doc_id, score, logit in reranker.rerank(text, cands, self.settings.rerank_depth)[:k]:
            h = by_id[doc_id]
            out.append(h.model_copy(update={"score": score,
                                            "scores": {**h.scores, "rerank": logit}}))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "dense": {"where": self.dense.where, "count": self.dense.count()},
            "sparse": {"where": self.sparse.where, "count": self.sparse.count()},
            "pending": self._pending(),
            "fusion": self.settings.fusion,
            "rerank": {"on": self.settings.rerank, "depth": self.settings.rerank_depth,
                       "reranker": str(self.settings.resolved_reranker_dir())},
        }
